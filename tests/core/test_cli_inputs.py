"""The files every program reads at start (the secrets file, the config): a hostile or mistaken file is refused
with a reason, never followed, never waited on."""

from __future__ import annotations

import os
import threading

import pytest

from observer.core.config import ConfigError, load_config
from observer.core.secrets import MAX_BYTES, SecretsError, load_secrets

pytestmark = pytest.mark.hostile

KEYS = "KIS_APP_KEY=PStestappkey000001\nKIS_APP_SECRET=testsecret-0000000001\n"


def _secrets(tmp_path, text=KEYS, mode=0o600):
    p = tmp_path / "real.env"
    p.write_text(text)
    os.chmod(p, mode)
    return p


def _bounded(fn, timeout=10):
    """Run fn in a thread; fail (instead of hanging the suite) when it does not return in time."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} still blocked after {timeout} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_regular_0600_secrets_file_is_read(tmp_path):
    s = load_secrets(path=_secrets(tmp_path))
    assert s["KIS_APP_KEY"] == "PStestappkey000001"


def test_secrets_symlink_is_refused_even_to_a_0600_file(tmp_path):
    link = tmp_path / "secrets.env"
    link.symlink_to(_secrets(tmp_path))
    with pytest.raises(SecretsError, match="secrets.env is a symlink"):
        load_secrets({"secrets_file": str(link)})


def test_dangling_secrets_symlink_is_refused_not_taken_as_absent(tmp_path):
    link = tmp_path / "secrets.env"
    link.symlink_to(tmp_path / "nowhere.env")
    with pytest.raises(SecretsError, match="is a symlink"):
        load_secrets({"secrets_file": str(link)})


def test_absent_secrets_file_is_still_absent(tmp_path):
    s = load_secrets({"secrets_file": str(tmp_path / "none.env")})
    assert len(s) == 0 and s.source.endswith("(absent)")


def test_secrets_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "secrets.env"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(SecretsError, match="not a regular file"):
        _bounded(lambda: load_secrets({"secrets_file": str(fifo)}))


def test_secrets_directory_is_refused(tmp_path):
    d = tmp_path / "secrets.env"
    d.mkdir(mode=0o700)
    with pytest.raises(SecretsError, match="not a regular file"):
        load_secrets({"secrets_file": str(d)})


def test_group_readable_secrets_still_refused(tmp_path):
    p = _secrets(tmp_path, mode=0o640)
    with pytest.raises(SecretsError, match="mode 0640 lets group/others read it"):
        load_secrets(path=p)


def test_huge_or_binary_secrets_file_is_refused_without_showing_it(tmp_path):
    p = _secrets(tmp_path, text="A=" + "x" * MAX_BYTES)
    with pytest.raises(SecretsError, match="larger than"):
        load_secrets(path=p)
    p.write_bytes(b"KIS_APP_SECRET=\xff\xfe-not-utf8\n")
    with pytest.raises(SecretsError) as e:
        load_secrets(path=p)
    assert "not UTF-8" in str(e.value) and "not-utf8" not in str(e.value)


def test_symlinked_systemd_credential_is_refused(tmp_path, monkeypatch):
    cred = tmp_path / "creds"
    cred.mkdir()
    (cred / "secrets.env").symlink_to(_secrets(tmp_path))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred))
    with pytest.raises(SecretsError, match="is a symlink"):
        load_secrets({})


def test_config_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "observer.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        _bounded(lambda: load_config(fifo))


@pytest.mark.parametrize("make,why", [
    (lambda p: p.mkdir(), "Is a directory"),
    (lambda p: p.write_bytes(b"data_dir = '\xff'\n"), "not UTF-8"),
    (lambda p: p.write_text("# " + "x" * (1 << 20) + "\n"), "larger than"),
])
def test_config_that_cannot_be_read_says_why(tmp_path, make, why):
    p = tmp_path / "observer.toml"
    make(p)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert why in str(e.value)


def test_config_path_through_a_file_says_why(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ConfigError, match="Not a directory"):
        load_config(f / "observer.toml")
