"""Every installed program against every class of bad input (issue 12): the documented exit code, one
plain line on stderr that names the problem, never a traceback, and no tree created where none was.

Each row runs the real `.venv/bin/observer-*` as a subprocess. The rows run in parallel from one
module fixture (a few hundred ms of Python start-up each), then each test asserts its row.
Read-only trees are a read-only tmpfs mounted over data_dir in a private mount namespace (root writes
through chmod); the unreadable config is read by root with every capability dropped (setpriv)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.hostile

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
PROGRAMS = [Path(s).name for s in
            tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["script-files"]]
DEFAULT_TREE = "/var/lib/observer"  # data_dir's default (schemas/config/_root.json)
TIMEOUT_S = 40  # a row that hangs (a program that went on with bad input) fails instead of blocking the run

# what each program needs on its command line to get past argparse to the input under test
BASE = {
    "observer-decode": ["--provider", "kis"],
    "observer-replay": ["{data}", "--date", "20260316"],
    # only checks that need no network; --all: the same on a day the market is closed
    "observer-preflight": ["--all", "--only", "config,disk,disk_write,secrets"],
}
DATE_PROGRAMS = ["observer-audit", "observer-backup", "observer-backup-pull", "observer-decode", "observer-demo",
                 "observer-gap-filler", "observer-replay", "observer-sim", "observer-verify"]
# how each program that uses the tree is told where it is; and what it may do there
TREE_BY = {"observer-verify": "positional", "observer-replay": "positional", "observer-audit": "--data-dir",
           "observer-backup": "--data-dir", "observer-retention": "--data-dir", "observer-gap-filler": "config",
           "observer-watchdog": "config", "observer-track-a": "config", "observer-track-b": "config",
           "observer-preflight": "config"}
WRITERS = ["observer-audit", "observer-backup", "observer-retention", "observer-gap-filler", "observer-watchdog",
           "observer-track-a", "observer-track-b", "observer-preflight"]
OWNERS = ["observer-track-a", "observer-track-b"]  # the collectors may create data_dir (its parent must exist)
# programs that cannot run without the broker's keys; the watchdog keeps watching without them
SECRETS_PROGRAMS = ["observer-track-a", "observer-track-b", "observer-gap-filler", "observer-preflight"]

# row id -> (value, what the line must say)
BAD_DATES = {"year-9999": ("99991231", "outside the trading calendar"),
             "full-width": ("\uff12\uff10\uff12\uff16\uff10\uff13\uff11\uff16", "ASCII"),
             "empty": ("", "want YYYYMMDD"), "month-13": ("2026-13-01", "want YYYYMMDD")}


@dataclass
class Row:
    id: str
    program: str
    args: list[str]                      # "{data}", "{config}", "{dir}" are filled in per row
    code: int
    words: list[str]                     # the one line must contain each
    setup: str = "ok"                    # which files the row's directory gets (see _setup)
    wrap: str = ""                       # "ro": data_dir read-only; "nocaps": root without capabilities
    must_not_exist: list[str] = field(default_factory=list)  # paths (relative to the row dir) never created


def _rows() -> list[Row]:
    rows = []
    for prog in PROGRAMS:
        base = BASE.get(prog, [])
        rows.append(Row(f"{prog}-unknown-flag", prog, [*base, "--config", "{config}", "--no-such-flag"], 2,
                        ["--no-such-flag"]))
        rows.append(Row(f"{prog}-log-level-TRACE", prog, [*base, "--config", "{config}", "--log-level", "TRACE"], 2,
                        ["--log-level", "TRACE"]))
        rows.append(Row(f"{prog}-config-missing", prog, [*base, "--config", "{dir}/absent.toml"], 2,
                        ["absent.toml", "file not found"]))
        rows.append(Row(f"{prog}-config-invalid", prog, [*base, "--config", "{config}"], 2,
                        ["bogus_key"], setup="invalid"))
        rows.append(Row(f"{prog}-config-unreadable", prog, [*base, "--config", "{config}"], 2,
                        ["observer.toml", "Permission denied"], setup="unreadable", wrap="nocaps"))
    for prog in DATE_PROGRAMS:
        base = [a for a in BASE.get(prog, []) if a not in ("--date", "20260316")]
        for name, (value, word) in BAD_DATES.items():
            rows.append(Row(f"{prog}-date-{name}", prog, [*base, "--config", "{config}", "--date", value], 2,
                            ["--date", repr(value), word]))
    for prog, by in TREE_BY.items():
        for case in ("missing", "file", "readonly"):
            if case == "readonly" and prog not in WRITERS:
                continue  # readers read a read-only tree fine
            setup, wrap, gone = "ok", "", []
            if case == "missing":  # a mistyped path: never created, except by a collector at the configured path
                target, code = "{dir}/typo", 2
                words = ["typo", "does not exist"]
                if by == "config":
                    setup = "tree-typo"
                if prog in OWNERS:  # they may create data_dir, but not a missing parent
                    setup, words = "tree-typo-parent", ["nope/data", "parent directory does not exist"]
                gone = ["typo", "nope"]
            elif case == "file":
                target, code, setup, words = "{data}", 2, "tree-file", ["data", "is not a directory"]
            else:
                target, wrap = "{data}", "ro"
                code, words = 3, ["data", "not writable", "read-only file system"]
                if prog == "observer-preflight":  # the tree is one of its checks: that check fails, named
                    words = ["FAIL", "disk_write", "Read-only file system"]
            args = list(BASE.get(prog, []))
            if by == "positional":
                args = [target if a == "{data}" else a for a in args] or [target]
            elif by == "--data-dir":
                args += ["--data-dir", target]
            rows.append(Row(f"{prog}-data-dir-{case}", prog, [*args, "--config", "{config}"], code, words,
                            setup=setup, wrap=wrap, must_not_exist=gone))
    for prog in SECRETS_PROGRAMS:
        rows.append(Row(f"{prog}-secrets-symlink", prog, [*BASE.get(prog, []), "--config", "{config}"], 2,
                        ["secrets.env", "symlink"], setup="secrets-symlink"))
    return rows


ROWS = _rows()


def _config(data: str, secrets: Path) -> str:
    return (f'data_dir = "{data}"\nsecrets_file = "{secrets}"\n'
            '[preflight]\nservice_user = "root"\n')


def _setup(row: Row, d: Path) -> Path:
    """Write the row's files into d; return its config path."""
    d.mkdir(parents=True)
    secrets = d / "secrets.env"
    real = d / "real.env"
    real.write_text("KIS_APP_KEY=PStestappkey000001\nKIS_APP_SECRET=testsecret-0000000001\n")
    os.chmod(real, 0o600)
    if row.setup == "secrets-symlink":
        secrets.symlink_to(real)  # a 0600 file: only the link itself is wrong
    else:
        real.rename(secrets)
    data = d / "data"
    if row.setup == "tree-file":
        data.write_text("not a tree\n")
    else:
        data.mkdir()
    cfg = d / "observer.toml"
    tree = {"tree-typo": d / "typo", "tree-typo-parent": d / "nope" / "data"}.get(row.setup, data)
    cfg.write_text("bogus_key = 1\n" if row.setup == "invalid" else _config(str(tree), secrets))
    if row.setup == "unreadable":
        os.chmod(cfg, 0)
    return cfg


def _command(row: Row, d: Path, cfg: Path) -> list[str]:
    fill = {"{config}": str(cfg), "{data}": str(d / "data"), "{dir}": str(d)}
    args = []
    for a in row.args:
        for k, v in fill.items():
            a = a.replace(k, v)
        args.append(a)
    cmd = [str(BIN / row.program), *args]
    if row.wrap == "nocaps":
        # uid 0 without CAP_DAC_OVERRIDE/READ_SEARCH is held to the file's mode like anyone else
        cmd = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", *cmd]
    mounts = []  # in a private mount namespace, so nothing outside the row changes
    if row.wrap == "ro":
        mounts.append(f"mount -t tmpfs -o ro,size=1m tmpfs {d / 'data'}")  # EROFS even for root
    if row.program == "observer-preflight":
        # with a broken config preflight records the failure in the default tree when one is there
        # (that is the host's real tree); keep this machine's out of the test
        mounts.append(f"if [ -d {DEFAULT_TREE} ]; then mount -t tmpfs -o size=4m tmpfs {DEFAULT_TREE}; fi")
    if mounts:
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-ec", " && ".join(mounts) + ' && exec "$@"',
               "sh", *cmd]
    return cmd


def _run(row: Row, d: Path) -> dict:
    cfg = _setup(row, d)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OBSERVER_CONFIG", "OBSERVER_CLOCK", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "INVOCATION_ID")}
    # its own process group: a program that wrongly went on (a demo starting a simulator and collectors)
    # is killed with everything it started when the row times out
    proc = subprocess.Popen(_command(row, d, cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=d, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
        return {"code": proc.returncode, "stderr": err, "stdout": out}
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader is not reaped yet: the group is still ours
        out, err = proc.communicate()
        return {"code": None, "stderr": f"{err}\n(still running after {TIMEOUT_S} s: killed)", "stdout": out}


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> dict[str, dict]:
    assert BIN.joinpath("observer-verify").exists(), f"no installed programs in {BIN} (run ./install.sh --dev)"
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (util-linux) is needed")
    if os.geteuid() != 0:
        pytest.skip("the read-only and unreadable rows need root (mount namespace, dropped capabilities)")
    wanted = {it.callspec.params["row"].id for it in request.session.items
              if getattr(it, "callspec", None) and isinstance(it.callspec.params.get("row"), Row)}
    rows = [r for r in ROWS if r.id in wanted] or ROWS
    root = tmp_path_factory.mktemp("cli-table")
    # Python start-up is CPU-bound; a few more workers than cores hide the waits for the children
    with ThreadPoolExecutor(max_workers=max(2, min(6, 2 * (os.cpu_count() or 2)))) as ex:
        futs = {r.id: ex.submit(_run, r, root / f"row{i:03d}") for i, r in enumerate(rows)}
        out = {k: f.result() for k, f in futs.items()}
    for i, r in enumerate(rows):
        out[r.id]["dir"] = root / f"row{i:03d}"
    return out


def plain_lines(stderr: str) -> list[str]:
    """stderr without the structured log (JSON lines): what a person reads."""
    out = []
    for ln in stderr.splitlines():
        if not ln.strip():
            continue
        try:
            if isinstance(json.loads(ln), dict):
                continue
        except ValueError:
            pass
        out.append(ln)
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, results):
    got = results[row.id]
    err = got["stderr"]
    assert "Traceback" not in err, f"a traceback reached the user:\n{err[-3000:]}"
    assert got["code"] == row.code, f"exit {got['code']}, want {row.code}; stderr:\n{err[-3000:]}"
    lines = plain_lines(err)
    assert len(lines) == 1, f"want one line naming the problem, got {len(lines)}:\n" + "\n".join(lines)[-3000:]
    line = lines[0]
    assert line.startswith(row.program), line  # says who is talking (track-b: observer-track-b@kis)
    for w in row.words:
        assert w in line, f"{w!r} not in {line!r}"
    for rel in row.must_not_exist:
        assert not (got["dir"] / rel).exists(), f"{rel} was created in {got['dir']}"
