"""Fixtures for the real-systemd tests: a booted namespace (design §6) and install.sh run inside it.

Each test module gets its own namespace (module scope), ended by PID with its state dir removed,
whatever happens. Tests skip only when unshare itself is not permitted.
"""

from __future__ import annotations

import pytest

from tests.support.systemd_ns import SystemdNamespace, unshare_problem


@pytest.fixture(scope="module")
def systemd_ns():
    problem = unshare_problem()
    if problem:
        pytest.skip(f"real-systemd tests need unshare: {problem}")
    ns = SystemdNamespace.boot()
    try:
        yield ns
    finally:
        ns.close()

