"""observer.cli: the --date/time argument types, the data-dir check, one-line usage errors, the top-level guard."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from observer import cli
from observer.markets import supported_years

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value,want", [("20260316", date(2026, 3, 16)), ("19480101", date(1948, 1, 1))])
def test_date_arg_takes_ascii_yyyymmdd(value, want):
    assert cli.date_arg(value) == want


@pytest.mark.parametrize("value,why", [
    ("\uff12\uff10\uff12\uff16\uff10\uff13\uff11\uff16", "ASCII"),   # full-width digits: str.isdigit() says yes
    ("\u0662\u0660\u0662\u0666\u0660\u0663\u0661\u0666", "ASCII"),   # Arabic-Indic digits
    ("", "want YYYYMMDD"),
    ("2026-03-16", "want YYYYMMDD"),
    ("20260316\n", "want YYYYMMDD"),
    (" 20260316", "want YYYYMMDD"),
    ("20261301", "month must be in 1..12"),
    ("20260230", "day is out of range"),
    ("99991231", "outside the trading calendar's years"),
    ("00010101", "outside the trading calendar's years"),
])
def test_date_arg_refuses_with_the_reason(value, why):
    with pytest.raises(argparse.ArgumentTypeError) as e:
        cli.date_arg(value)
    assert why in str(e.value) and repr(value) in str(e.value)


def test_date_arg_range_is_the_calendars():
    lo, hi = supported_years()
    assert cli.date_arg(f"{hi}1231") == date(hi, 12, 31)
    with pytest.raises(argparse.ArgumentTypeError):
        cli.date_arg(f"{hi + 1}0101")
    with pytest.raises(argparse.ArgumentTypeError):
        cli.date_arg(f"{lo - 1}1231")


@pytest.mark.parametrize("value", ["09:25", "00:00:00", "23:59:59"])
def test_time_arg_ok(value):
    assert cli.time_arg(value) == value


@pytest.mark.parametrize("value", ["24:00", "09:60", "09:25:60", "9:25", "0925", "", "\uff10\uff19:25", "09:25 "])
def test_time_arg_refuses(value):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.time_arg(value)


def test_usage_error_is_one_line_and_exit_2(capsys):
    p = cli.make_parser("observer-x", "test")
    p.add_argument("--date", type=cli.date_arg)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--date", "99991231"])
    assert e.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("observer-x: error: argument --date: bad date '99991231'")


def test_check_tree(tmp_path):
    ok = tmp_path / "tree"
    ok.mkdir()
    assert cli.check_tree(ok, cli.TREE_WRITE) is None
    assert cli.check_tree(ok, cli.TREE_READ) is None
    code, msg = cli.check_tree(tmp_path / "typo", cli.TREE_WRITE, flag="--data-dir")
    assert code == cli.EXIT_USAGE and msg.startswith(f"--data-dir {tmp_path / 'typo'} does not exist")
    assert not (tmp_path / "typo").exists()
    f = tmp_path / "file"
    f.write_text("x")
    for mode in (cli.TREE_READ, cli.TREE_WRITE, cli.TREE_OWN, cli.TREE_EXISTS):
        assert cli.check_tree(f, mode) == (cli.EXIT_USAGE, f"data_dir {f} is not a directory")


def test_only_an_owner_creates_the_tree_and_only_its_last_component(tmp_path):
    assert cli.check_tree(tmp_path / "data", cli.TREE_OWN) is None
    assert (tmp_path / "data").is_dir() and (tmp_path / "data").stat().st_mode & 0o777 == 0o750
    code, msg = cli.check_tree(tmp_path / "typo" / "data", cli.TREE_OWN)
    assert code == cli.EXIT_USAGE and "parent directory does not exist" in msg
    assert not (tmp_path / "typo").exists()
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "elsewhere")
    code, msg = cli.check_tree(dangling, cli.TREE_OWN)  # not created through a dangling link
    assert code == cli.EXIT_USAGE and "does not exist" in msg and not (tmp_path / "elsewhere").exists()


GUARDED = """
import sys
from observer import cli

def main(argv=None):
    {body}

sys.exit(cli.run(main))
"""


def _guarded(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "observer-guarded"
    script.write_text(GUARDED.format(body=body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)


def test_guard_turns_an_unexpected_exception_into_one_line_and_exit_3(tmp_path):
    r = _guarded(tmp_path, "raise KeyError('no such thing')")
    assert r.returncode == cli.EXIT_FAILED
    lines = r.stderr.splitlines()
    plain = [ln for ln in lines if not ln.startswith("{")]
    assert plain == ["observer-guarded: unexpected failure: KeyError: 'no such thing' "
                     "(traceback in the log above; exit 3)"]
    assert not any(ln.startswith("Traceback") for ln in lines)
    # the detail is not lost: the structured log has the whole traceback at ERROR
    logs = [json.loads(ln) for ln in lines if ln.startswith("{")]
    assert len(logs) == 1 and logs[0]["level"] == "ERROR" and logs[0]["program"] == "observer-guarded"
    assert logs[0]["exc"].startswith("Traceback (most recent call last):")
    assert "raise KeyError('no such thing')" in logs[0]["exc"]


def test_guard_passes_exit_codes_and_sys_exit_through(tmp_path):
    assert _guarded(tmp_path, "return 1").returncode == 1
    r = _guarded(tmp_path, "sys.exit(2)")
    assert r.returncode == 2 and r.stderr == ""
