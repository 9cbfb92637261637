"""The exposure-score table in docs/deployment.md is what lib/observer/deploy/security_table.sh produces
from the repo's units today (no namespace needed: it lays the units out in a temp root)."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.systemd_ns import REPO

pytestmark = pytest.mark.system


def test_docs_table_is_the_scripts_output_and_every_service_is_ok():
    r = subprocess.run([str(REPO / "lib/observer/deploy/security_table.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr  # exit 1 when any service scores above 2.0
    rows = [line for line in r.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == len(list((REPO / "systemd").glob("*.service")))
    docs = (REPO / "docs/deployment.md").read_text()
    assert r.stdout in docs, "docs/deployment.md's exposure table is stale: rerun security_table.sh"
