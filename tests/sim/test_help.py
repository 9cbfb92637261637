"""observer-sim --help names every fault kind the simulator accepts (the list is written by hand)."""

import re
import subprocess
import sys
from pathlib import Path

from observer.sim.faults import KINDS

BIN = Path(__file__).resolve().parents[2] / "bin"


def test_help_lists_every_fault_kind():
    out = subprocess.run([sys.executable, str(BIN / "observer-sim"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    listed = set(re.findall(r"\b[a-z]+(?:_[a-z0-9]+)+\b", out.split("Fault kinds", 1)[1].split("Control endpoint")[0]))
    missing = set(KINDS) - listed
    assert not missing, f"observer-sim --help does not list: {sorted(missing)}"
