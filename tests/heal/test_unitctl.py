"""The watchdog's client of the restart broker: one empty file per request in state/unitctl/, only names
the broker (deploy/unitctl.sh) would carry out."""

import os
import stat

import pytest

from observer.heal.unitctl import UnitctlError, request
from observer.store import paths


def test_request_is_an_empty_file_in_the_request_directory(tmp_path):
    p = request("restart", "observer-track-b@kis.service", tmp_path)
    assert p == paths.unitctl_dir(tmp_path) / "restart:observer-track-b@kis.service"
    assert p.parent == tmp_path / "state" / "unitctl"
    st = os.stat(p)
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert request("restart", "observer-track-b@kis.service", tmp_path) == p  # asking twice: one request
    assert os.listdir(p.parent) == [p.name]


@pytest.mark.parametrize("verb, unit", [
    ("stop", "observer-track-a.service"),             # not a verb the broker runs
    ("restart", "observer-watchdog.service"),         # not on the list
    ("restart", "observer-track-b@KIS.service"),      # provider names are lower case
    ("restart", "observer-track-b@../x.service"),     # never a path
    ("start", "observer-track-a.service"),
])
def test_refused_names_write_nothing(tmp_path, verb, unit):
    with pytest.raises(UnitctlError, match="not a request the restart broker carries out"):
        request(verb, unit, tmp_path)
    assert not paths.unitctl_dir(tmp_path).exists()
