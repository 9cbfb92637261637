"""Preflight's decisions in-process (the end-to-end runs are in test_preflight.py): the clock-skew estimate
and its row, the verdict and exit code of a set of checks, the driver (--only, a crashing check, the
checks each configured provider contributes), deploy_guard at given times, and the disk thresholds."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import pytest

from observer.core.checks import Check, CheckContext, estimate_skew, http_date_ns, skew_check
from observer.core.clock import KST, NS, ManualClock, to_ns
from observer.core.config import validate_config
from observer.core.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE
from observer.core.settings import PreflightConfig
from observer.heal.preflight.guard import deploy_guard
from observer.heal.preflight.host import disk_verdict
from observer.heal.preflight.runner import Preflight, Report, wanted
from observer.providers import base

MONDAY = datetime(2026, 3, 16, 8, 30, tzinfo=KST)  # a KRX trading day


# -- the clock-skew estimate ------------------------------------------------------------------------
def samples_for(offset_s: float, starts_s: list[float], rtt_s: float = 0.02) -> list[tuple[int, int, int]]:
    """What a server whose clock is `offset_s` ahead sends: its Date header truncated to the second."""
    t_base = to_ns(MONDAY)
    out = []
    for s in starts_s:
        t0 = t_base + int(s * NS)
        t1 = t0 + int(rtt_s * NS)
        server = (t0 + t1) // 2 + int(offset_s * NS)
        out.append((t0, t1, server // NS * NS))
    return out


@pytest.mark.parametrize("offset", [0.0, 0.37, -0.81, 2.0, 7.25, -6.5])
def test_skew_estimate_narrows_to_the_sample_spacing(offset):
    # six samples spread over one second, as the provider's clock check takes them
    est, half = estimate_skew(samples_for(offset, [i / 6 for i in range(6)]))
    assert abs(est - offset) <= half + 1e-9
    assert half <= 1 / 6 / 2 + 0.03  # about half the spacing (+ the round trip), not the header's whole second


def test_one_sample_knows_only_the_second():
    est, half = estimate_skew(samples_for(0.37, [0.0]))
    assert half == pytest.approx(0.5 + 0.01, abs=0.011) and abs(est - 0.37) <= half


def test_inconsistent_samples_give_the_median_midpoint():
    # the server's clock jumps 10 s between samples: no offset fits all; the median midpoint, ±0.5 s
    s = samples_for(0.0, [0.0, 0.3]) + samples_for(10.0, [0.6])
    est, half = estimate_skew(s)
    assert half == 0.5 and abs(est) < 1.0


def test_skew_estimate_needs_samples():
    with pytest.raises(ValueError):
        estimate_skew([])


@pytest.mark.parametrize("offset,verdict", [(0.3, "ok"), (-2.0, "warn"), (2.0, "warn"), (7.0, "fail"),
                                            (-7.0, "fail")])
def test_skew_row_thresholds(offset, verdict):
    c = skew_check("clock:x", samples_for(offset, [i / 6 for i in range(6)]), source="https://broker.test",
                   warn_s=1, fail_s=5)
    assert c.verdict == verdict, c
    assert abs(c.detail["skew_s"] - offset) < 0.2 and c.detail["samples"] == 6
    # positive offset: the server is ahead, so the local clock is behind
    assert ("behind" if offset > 0 else "ahead of") in c.reason


def test_skew_row_without_samples():
    c = skew_check("clock:x", [], source="https://broker.test", warn_s=1, fail_s=5)
    assert c.verdict == "skip" and "none sent" in c.reason
    c = skew_check("clock:x", [], source="https://broker.test", warn_s=1, fail_s=5, errors=["ConnectTimeout"])
    assert c.verdict == "warn" and "ConnectTimeout" in c.reason and "https://broker.test" in c.reason


def test_http_date_header():
    assert http_date_ns("Sun, 15 Mar 2026 23:30:00 GMT") == to_ns(MONDAY)
    with pytest.raises((ValueError, TypeError)):
        http_date_ns("yesterday")


# -- verdict and exit code ----------------------------------------------------------------------------
def rep(*rows: tuple[str, str], skipped: str | None = None) -> Report:
    return Report(MONDAY.date(), [Check(n, v, "why") for n, v in rows], skipped_day=skipped)


@pytest.mark.parametrize("rows,verdict,code", [
    ([], "ok", EXIT_OK),
    ([("disk", "ok"), ("cpu", "skip")], "ok", EXIT_OK),
    ([("disk", "ok"), ("memory", "warn")], "warn", EXIT_PROBLEMS),
    ([("disk", "fail"), ("memory", "warn")], "fail", EXIT_FAILED),
    ([("token:x", "fail"), ("rest:x", "skip")], "fail", EXIT_FAILED),
    ([("config", "fail")], "fail", EXIT_USAGE),
    # the secrets are wrong, and the token row fails because of it: the configuration is the cause
    ([("secrets", "fail"), ("token:x", "fail"), ("disk", "warn")], "fail", EXIT_USAGE),
    ([("secrets", "warn"), ("disk", "ok")], "warn", EXIT_PROBLEMS),
])
def test_verdict_and_exit_code(rows, verdict, code):
    r = rep(*rows)
    assert (r.verdict, r.exit_code) == (verdict, code)


def test_a_closed_day_exits_ok():
    r = rep(("config", "ok"), ("trading_day", "skip"), skipped="holiday: Children's Day")
    assert r.exit_code == EXIT_OK


def test_counts_failed_warned():
    r = rep(("a", "ok"), ("b", "warn"), ("c", "fail"), ("d", "skip"), ("e", "fail"))
    assert r.counts() == {"ok": 1, "warn": 1, "fail": 2, "skip": 1}
    assert [c.name for c in r.failed()] == ["c", "e"] and [c.name for c in r.warned()] == ["b"]


# -- the driver --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,only,want", [
    ("token:kis", None, True), ("token:kis", {"token"}, True), ("token:kis", {"token:kis"}, True),
    ("tokenizer", {"token"}, False), ("self-test observer-verify", {"self-test"}, True),
    ("disk_write", {"disk"}, False), ("disk", {"disk", "memory"}, True),
])
def test_only_picks_a_check_or_its_family(name, only, want):
    assert wanted(name, only) is want


class FakeProvider(base.Provider):
    """A provider with checks of its own: one passes, one crashes, one warns (a list of two rows)."""

    calls: list[str] = []

    def rest(self):
        raise NotImplementedError

    def stream(self, sink):
        raise NotImplementedError

    def decoder(self, *, trading_date=None):
        raise NotImplementedError

    def preflight_checks(self, ctx: CheckContext):
        assert ctx.day == MONDAY.date() and ctx.settings["test_symbol"] == "005930"

        def crash():
            raise RuntimeError("boom")

        def two():
            return [Check(f"ws:{self.name}", "ok", "fine"), Check(f"ws:{self.name}:2", "warn", "slow")]

        return [(f"token:{self.name}", lambda: self.calls.append("token") or Check(f"token:{self.name}", "ok", "x")),
                (f"rest:{self.name}", crash), (f"ws:{self.name}", two)]


class SilentProvider(FakeProvider):
    def preflight_checks(self, ctx):
        return []


@pytest.fixture
def fake_providers(monkeypatch):
    monkeypatch.setitem(base._REGISTRY, "fakeone", type("FakeOne", (FakeProvider,), {"name": "fakeone"}))
    monkeypatch.setitem(base._REGISTRY, "fakeother", type("FakeOther", (SilentProvider,), {"name": "fakeother"}))
    FakeProvider.calls = []


def run_preflight(tmp_path: Path, providers: list[str], only: set[str]) -> Report:
    cfg = validate_config({"data_dir": str(tmp_path), "preflight": {"providers": providers}})
    return Preflight(cfg, ManualClock(MONDAY), only=only, program_path=str(tmp_path / "bin" / "observer-x")).run()


def test_each_configured_provider_is_asked_for_its_checks(tmp_path, fake_providers):
    r = run_preflight(tmp_path, ["fakeone", "fakeother", "nosuch"], {"token", "rest", "ws", "provider"})
    rows = {c.name: c for c in r.checks}
    assert list(rows) == ["token:fakeone", "rest:fakeone", "ws:fakeone", "ws:fakeone:2", "provider:fakeother",
                          "provider:nosuch"]
    assert rows["token:fakeone"].verdict == "ok" and FakeProvider.calls == ["token"]
    # a crashing check is that check's fail, and the run goes on
    assert rows["rest:fakeone"].verdict == "fail" and "RuntimeError: boom" in rows["rest:fakeone"].reason
    assert rows["provider:fakeother"].verdict == "skip" and "no preflight checks" in rows["provider:fakeother"].reason
    assert rows["provider:nosuch"].verdict == "skip" and "unknown provider 'nosuch'" in rows["provider:nosuch"].reason
    assert r.exit_code == EXIT_FAILED


def test_only_runs_only_the_named_checks(tmp_path, fake_providers):
    r = run_preflight(tmp_path, ["fakeone"], {"ws"})
    assert [c.name for c in r.checks] == ["ws:fakeone", "ws:fakeone:2"]
    assert FakeProvider.calls == [] and r.verdict == "warn" and r.exit_code == EXIT_PROBLEMS


def test_a_closed_day_runs_nothing_else(tmp_path, fake_providers):
    cfg = validate_config({"data_dir": str(tmp_path), "preflight": {"providers": ["fakeone"]}})
    r = Preflight(cfg, ManualClock(datetime(2026, 5, 5, 8, 30, tzinfo=KST))).run()
    assert [c.name for c in r.checks] == ["config", "trading_day"] and r.skipped_day == "holiday: Children's Day"
    assert FakeProvider.calls == [] and r.exit_code == EXIT_OK


# -- the deploy guard --------------------------------------------------------------------------------
@pytest.mark.parametrize("when,locked,says", [
    ("2026-03-16T10:00:00+09:00", True, "inside KR market hours (08:00-16:00 KST"),   # Monday, session
    ("2026-03-16T07:59:00+09:00", False, "outside KR market hours"),
    ("2026-03-16T08:00:00+09:00", True, "inside KR market hours"),
    ("2026-03-16T15:59:59+09:00", True, "deploy after 16:00 KST or use --force"),
    ("2026-03-16T16:00:00+09:00", False, "deploying is allowed"),
    ("2026-03-14T10:00:00+09:00", False, "not a KRX trading day (weekend"),         # Saturday
    ("2026-05-05T10:00:00+09:00", False, "not a KRX trading day (holiday: Children's Day)"),
    ("2026-11-19T16:30:00+09:00", True, "end shifted by the"),                       # CSAT day: lock to 17:00
    ("2026-11-19T17:00:00+09:00", False, "outside KR market hours (08:00-17:00 KST"),
])
def test_deploy_guard_at(when, locked, says):
    cfg = validate_config({})
    got, msg = deploy_guard(cfg, ManualClock(datetime.fromisoformat(when)))
    assert got is locked, msg
    assert says in msg and msg.startswith("deploy guard: ")


def test_deploy_guard_configured_hours():
    cfg = validate_config({"preflight": {"deploy_guard": {"kr_start": "07:00", "kr_end": "18:00"}}})
    assert deploy_guard(cfg, ManualClock(datetime(2026, 3, 16, 7, 30, tzinfo=KST)))[0] is True
    assert deploy_guard(cfg, ManualClock(datetime(2026, 3, 16, 18, 0, tzinfo=KST)))[0] is False


@pytest.mark.parametrize("when,locked", [
    ("2026-03-16T23:00:00+09:00", True),    # 10:00 EDT on a NYSE trading day
    ("2026-03-16T18:00:00+09:00", False),   # 05:00 in New York
    ("2026-03-17T05:29:00+09:00", True),    # 16:29 in New York
    ("2026-03-17T05:30:00+09:00", False),   # 16:30: the US lock's end
    ("2026-04-03T23:00:00+09:00", False),   # Good Friday: NYSE closed
    ("2026-03-14T23:00:00+09:00", False),   # Saturday in New York
])
def test_deploy_guard_us_hours(when, locked):
    cfg = validate_config({"preflight": {"deploy_guard": {"us_market": True}}})
    got, msg = deploy_guard(cfg, ManualClock(datetime.fromisoformat(when)))
    assert got is locked, msg
    assert ("inside US market hours" in msg) is locked
    if not locked:
        assert "outside US market hours" in msg


def test_us_hours_are_not_locked_unless_configured():
    assert deploy_guard(validate_config({}), ManualClock(datetime.fromisoformat("2026-03-16T23:00:00+09:00")))[0] is False


# -- the disk thresholds -----------------------------------------------------------------------------
GiB = 2**30
DEFAULTS = PreflightConfig.from_config(validate_config({}))


@pytest.mark.parametrize("used_gib,free_gib,verdict", [
    (10, 90, "ok"),            # 10 %
    (79.9, 20.1, "ok"),
    (80, 20, "warn"),          # disk_warn_pct 80
    (94.9, 5.1, "warn"),
    (95, 5, "fail"),           # disk_fail_pct 95
    (1, 1.99, "fail"),         # 33 % used, but below disk_min_free_mb (2048 MiB)
    (1, 2.0, "ok"),
    (0, 0, "fail"),            # a file system that reports nothing: 100 %
])
def test_disk_thresholds(used_gib, free_gib, verdict):
    used, free = int(used_gib * GiB), int(free_gib * GiB)
    c = disk_verdict(Path("/data"), used, free, used + free, DEFAULTS)
    assert c.verdict == verdict, c
    assert c.reason.startswith("/data: ")
    if verdict == "fail":
        assert "fail at 95 % or below 2048 MiB free" in c.reason
    if verdict == "warn":
        assert "warn at 80 %" in c.reason


def test_disk_thresholds_from_the_config():
    s = dataclasses.replace(DEFAULTS, disk_warn_pct=50, disk_fail_pct=60, disk_min_free_mb=0)
    assert disk_verdict(Path("/d"), 49, 51, 100, s).verdict == "ok"
    assert disk_verdict(Path("/d"), 50, 50, 100, s).verdict == "warn"
    assert disk_verdict(Path("/d"), 60, 40, 100, s).verdict == "fail"


# -- the program's start ------------------------------------------------------------------------------
def test_a_broken_config_is_preflights_row_not_an_exit(tmp_path):
    from observer import cli

    bad = tmp_path / "o.toml"
    bad.write_text("bogus_key = 1\n")
    args = cli.make_parser("observer-x", "x").parse_args(["--config", str(bad)])
    # the tree is not checked: with the config unknown, so is data_dir
    ctx = cli.start("observer-x", args, config_as_check=True, tree=cli.TREE_EXISTS)
    assert "bogus_key" in ctx.config_error and ctx.root is None
    assert ctx.cfg["data_dir"] == validate_config({})["data_dir"]
    with pytest.raises(SystemExit) as e:  # every other program refuses to start
        cli.start("observer-x", args)
    assert e.value.code == EXIT_USAGE
    args = cli.make_parser("observer-x", "x").parse_args(["--config", str(bad), "--check-config"])
    with pytest.raises(SystemExit) as e:  # --check-config lists the problems and exits 2, preflight's too
        cli.start("observer-x", args, config_as_check=True)
    assert e.value.code == EXIT_USAGE
