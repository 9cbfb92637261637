"""tests/support: the one wait_for does what its callers rely on, and stays the only one."""

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import WaitTimeout, wait_for

TESTS = Path(__file__).resolve().parent
# names the copies had before they were folded into tests/support
POLLERS = {"wait_for", "_wait", "wait_until", "arrived", "_arrived"}


def test_wait_for_returns_the_first_truthy_value():
    seen = iter([0, None, "", {"n": 3}])
    assert wait_for(lambda: next(seen), 5, "the fourth value", interval=0.001) == {"n": 3}


def test_a_timeout_names_what_was_awaited_as_it_is_at_the_timeout():
    state = {"n": 0}

    def cond():
        state["n"] += 1
        return False

    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 0.2 s waiting for n=\d+") as e:
        wait_for(cond, 0.2, lambda: f"n={state['n']}", interval=0.01)
    assert 0.2 <= time.monotonic() - t0 < 2
    assert int(str(e.value).rsplit("=", 1)[1]) == state["n"] > 1   # the message was made at the end
    assert isinstance(e.value, AssertionError) and isinstance(e.value, TimeoutError)


def test_a_process_that_exits_first_fails_at_once_with_its_stderr():
    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(4)"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match=r"process exited \(4\) before: never\nboom"):
        wait_for(lambda: False, 30, "never", proc=p)
    assert time.monotonic() - t0 < 10
    p.stdout.close()
    p.stderr.close()


def test_no_test_module_defines_its_own_poller():
    own = []
    for f in sorted(TESTS.rglob("*.py")):
        if "support" in f.relative_to(TESTS).parts:
            continue
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.FunctionDef) and node.name in POLLERS:
                own.append(f"{f.relative_to(TESTS)}:{node.lineno} {node.name}")
    assert not own, f"use tests.support's wait_for/arrived instead of: {own}"
