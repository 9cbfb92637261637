"""The self-test (observer.core.selftest) behind every program's --self-test: the incident's second
failure (httpx, a dependency of python-telegram-bot, missing while preflight said all ok) in a real
throwaway venv; the dependency closure read from real metadata; the one list of lazy imports kept
complete by scanning lib; a broken import of our own never answered with "install the package"."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from observer.core import selftest
from tests.support.progenv import PY, REPO, Env, checks, make_venv, report

LIB = REPO / "lib" / "observer"


def _function_level_imports() -> dict[str, set[str]]:
    """Third-party modules imported inside a function anywhere in lib/observer -> the files."""
    found: dict[str, set[str]] = {}
    for path in LIB.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("observer", "__future__"):
                        found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_lazy_third_party_import_in_lib_is_in_the_list():
    found = _function_level_imports()
    assert found, "the scan found no function-level imports at all: is it still looking at lib/observer?"
    missing = {m: sorted(f) for m, f in found.items() if m not in selftest.LAZY_IMPORTS}
    assert not missing, f"imported inside a function but not in observer.core.selftest.LAZY_IMPORTS: {missing}"
    stale = set(selftest.LAZY_IMPORTS) - set(found)
    assert not stale, f"LAZY_IMPORTS lists modules nothing imports lazily any more: {sorted(stale)}"


def _dist_info(site: Path, name: str, version: str, requires: list[str]) -> None:
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                + "".join(f"Requires-Dist: {r}\n" for r in requires))


def test_closure_follows_markers_extras_and_versions_like_pip(tmp_path, monkeypatch):
    """Real .dist-info directories on sys.path: only requirements whose markers hold count, extras
    asked for pull in their own requirements, versions are compared, the chain is named."""
    site = tmp_path / "site"
    _dist_info(site, "st-root", "1.0", [
        "st-mid[fast]>=2",
        "st-never; python_version < '3'",                 # marker false: not needed
        "st-win-only; sys_platform == 'win32'",          # marker false here
        "st-dev-tool; extra == 'dev'",                   # only with the dev extra, not asked
        f"st-old>=5; python_version >= '{sys.version_info.major}'",  # marker true, version too old
    ])
    _dist_info(site, "st-mid", "2.1", [
        "st-leaf",
        "st-speedups>=1; extra == 'fast'",               # asked for through st-root's [fast]
        "st-socks; extra == 'socks'",                    # extra nobody asked for
    ])
    _dist_info(site, "st-old", "4.9", [])
    monkeypatch.syspath_prepend(str(site))
    lines = selftest.dependency_failures("st-root")
    assert lines == sorted(lines)
    text = "\n".join(lines)
    assert len(lines) == 3, text
    assert ("missing dependency st-leaf: not installed (required by st-mid 2.1 as 'st-leaf'; "
            "via st-root -> st-mid -> st-leaf)") in lines
    assert any(ln.startswith("missing dependency st-speedups: not installed (required by st-mid 2.1") for ln in lines)
    assert any(ln.startswith("version conflict st-old 4.9: st-root 1.0 requires 'st-old>=5") for ln in lines)
    for absent in ("st-never", "st-win-only", "st-dev-tool", "st-socks"):
        assert absent not in text
    assert selftest.fix_for(lines) == selftest.FIX_INSTALL


def test_the_development_install_passes_its_own_self_test():
    r = subprocess.run([PY, str(REPO / "bin" / "observer-verify"), "--self-test"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "self-test: observer-verify: ok"


# --- the incident, for real: a venv installed from this checkout, then `pip uninstall httpx` ---


@pytest.fixture(scope="module")
def venv_without_httpx(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("selftest-venv")
    src = tmp / "src"  # a copy: building in the checkout would leave build/ behind
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "lib", src / "lib", ignore=skip)
    shutil.copytree(REPO / "bin", src / "bin", ignore=skip)
    venv = tmp / "venv"
    subprocess.run([PY, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    py = venv / "bin" / "python"
    # a real, non-editable install with every dependency, as install.sh makes on a VM (pip's cache
    # and wheel sources keep it to seconds)
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    before = subprocess.run([str(venv / "bin" / "observer-track-b"), "--self-test"], capture_output=True, text=True,
                            timeout=120)
    assert before.returncode == 0, f"the fresh install must pass first:\n{before.stderr}"
    r = subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "httpx"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Successfully uninstalled httpx" in r.stdout, r.stdout + r.stderr
    return venv


def test_self_test_names_the_missing_dependency_of_a_dependency_like_pip_check(venv_without_httpx):
    venv = venv_without_httpx
    r = subprocess.run([str(venv / "bin" / "observer-track-b"), "--self-test"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 3, r.stderr
    lines = [ln[len("self-test: "):] for ln in r.stderr.splitlines() if ln.startswith("self-test: ")]
    assert lines[-1] == "observer-track-b: FAILED"
    # the closure line comes first: it names the package to install and who needs it
    assert re.match(r"missing dependency httpx: not installed \(required by python-telegram-bot \S+ as 'httpx",
                    lines[0]), lines
    assert "via stock-trading-observer -> python-telegram-bot -> httpx" in lines[0]
    # and the lazily imported module that would have failed at the first alert
    assert "import telegram (imported lazily by observer): ModuleNotFoundError: No module named 'httpx'" in lines
    # every (package, missing requirement) pip check sees, the self-test sees too
    pc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "check"], capture_output=True, text=True,
                        timeout=120)
    pairs = re.findall(r"^(\S+) \S+ requires (\S+), which is not installed", pc.stdout, re.M)
    assert ("python-telegram-bot", "httpx") in pairs, pc.stdout
    for pkg, dep in pairs:
        assert any(ln.startswith(f"missing dependency {dep}: not installed (required by {pkg} ") for ln in lines), (
            pkg, dep, lines)


def test_preflight_fails_naming_httpx_and_the_package_that_needs_it(venv_without_httpx, env: Env):
    env.cfg["preflight"]["python"] = str(venv_without_httpx / "bin" / "python")
    env.write_config()
    r = env.preflight("--only", "self-test")
    c = checks(report(r))
    assert r.returncode == 3, r.stdout
    for prog in ("observer-track-b", "observer-track-a", "observer-verify"):
        t = c[f"self-test {prog}"]
        assert t["verdict"] == "fail", t
        assert "httpx" in t["reason"] and "python-telegram-bot" in t["reason"], t
        assert t["fix"] == selftest.FIX_INSTALL
    assert env.events("preflight")[0]["verdict"] == "fail"


def test_a_missing_module_of_our_own_is_not_answered_with_install_a_package(env: Env, tmp_path):
    pkg = tmp_path / "broken" / "observer"
    shutil.copytree(LIB, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    # a module of ours imports one that the release does not have (renamed, not shipped)
    (pkg / "collect" / "late_start.py").write_text("import observer.recover.expected_slots  # noqa: F401\n")
    env.cfg["preflight"]["python"] = str(make_venv(tmp_path / "venv", broken_package=pkg))
    env.write_config()
    r = env.preflight("--only", "self-test")
    c = checks(report(r))
    assert r.returncode == 3, r.stdout
    t = c["self-test observer-verify"]
    assert t["verdict"] == "fail"
    assert t["reason"].startswith("our code observer.collect.late_start: ModuleNotFoundError: "
                                  "No module named 'observer.recover.expected_slots'"), t
    assert t["fix"] == selftest.FIX_OUR_CODE and "not a missing package" in t["fix"]


def test_fix_for_a_traceback_line_tells_our_code_from_a_package():
    assert selftest.fix_for(["ModuleNotFoundError: No module named 'observer.recover.slots'"]) == selftest.FIX_OUR_CODE
    assert selftest.fix_for(["ModuleNotFoundError: No module named 'yaml'"]) == selftest.FIX_UNDECLARED
    assert selftest.fix_for(["SyntaxError: invalid syntax"]) == selftest.FIX_OUR_CODE
