import os
import stat

import pytest

from observer.core.config import ConfigError, load_config, validate_config
from observer.core.secrets import SecretsError, load_secrets


def write(tmp_path, text, name="observer.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_sample_config_is_valid_and_equals_defaults(repo):
    cfg = load_config(repo / "config" / "observer.toml")
    defaults = validate_config({})
    cfg.pop("_source")
    # the sample documents the defaults: if one drifts, this says which
    for key in ("data_dir", "log", "store", "windows", "calendar", "universe", "track_a", "track_b",
                "alerts"):
        assert cfg[key] == defaults[key], key
    assert cfg["providers"]["kis"]["accounts"] == defaults["providers"]["kis"]["accounts"]


def test_all_errors_at_once_each_naming_key_value_and_allowed(tmp_path):
    p = write(tmp_path, """
data_dir = 5
[store]
fsync_interval_ms = "fast"
fsync_intervall_ms = 10
[windows]
track_a = { start = "25:00" }
[nonsense]
x = 1
""")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msgs = ei.value.problems
    text = str(ei.value)
    assert len(msgs) == 6, msgs
    assert str(p) in text
    assert any("'data_dir'" in m and "5" in m and "string" in m for m in msgs)
    assert any("'store.fsync_interval_ms'" in m and '"fast"' in m and "integer" in m for m in msgs)
    assert any("unknown key" in m and "store.fsync_intervall_ms" in m and "fsync_interval_ms" in m for m in msgs)
    assert any("missing key 'windows.track_a.end'" in m for m in msgs)
    assert any("'windows.track_a.start'" in m and "25:00" in m for m in msgs)
    assert any("unknown key" in m and "'nonsense'" in m for m in msgs)


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "data_dir = ["))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_env_var_names_the_config(tmp_path, monkeypatch):
    p = write(tmp_path, 'data_dir = "/srv/obs"\n')
    monkeypatch.setenv("OBSERVER_CONFIG", str(p))
    assert load_config()["data_dir"] == "/srv/obs"


def test_check_config_cli(tmp_path, repo):
    import subprocess
    import sys

    bad = write(tmp_path, "[store]\nfsync_interval_ms = 0\n")
    r = subprocess.run([sys.executable, str(repo / "bin" / "observer-verify"), "--config", str(bad), "--check-config"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "store.fsync_interval_ms" in r.stderr and ">= 1" in r.stderr
    r = subprocess.run([sys.executable, str(repo / "bin" / "observer-verify"), "--config",
                        str(repo / "config" / "observer.toml"), "--check-config"], capture_output=True, text=True)
    assert r.returncode == 0 and "is valid" in r.stdout


def test_secrets_file_mode_is_enforced(tmp_path):
    p = tmp_path / "secrets.env"
    p.write_text("KIS_APP_KEY=PSabcdefgh123456\n# comment\nKIS_APP_SECRET='s3cr3t-value-xyz'\n")
    p.chmod(0o644)
    with pytest.raises(SecretsError, match="chmod 600") as ei:
        load_secrets({"secrets_file": str(p)})
    assert "PSabcdefgh" not in str(ei.value)
    p.chmod(0o600)
    s = load_secrets({"secrets_file": str(p)})
    assert s["KIS_APP_SECRET"] == "s3cr3t-value-xyz"
    assert "s3cr3t" not in repr(s)
    with pytest.raises(SecretsError, match="TELEGRAM_BOT_TOKEN"):
        s.require("KIS_APP_KEY", "TELEGRAM_BOT_TOKEN")


def test_secrets_from_systemd_credentials(tmp_path, monkeypatch):
    cred = tmp_path / "creds"
    cred.mkdir()
    (cred / "secrets.env").write_text("KIS_APP_KEY=from-credential-1\n")
    (cred / "secrets.env").chmod(stat.S_IRUSR)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred))
    s = load_secrets({"secrets_file": str(tmp_path / "absent.env")})
    assert s["KIS_APP_KEY"] == "from-credential-1" and "credential" in s.source


def test_bad_secrets_line_does_not_echo_content(tmp_path):
    p = tmp_path / "secrets.env"
    p.write_text("this-line-is-a-leaked-secret-without-equals\n")
    os.chmod(p, 0o600)
    with pytest.raises(SecretsError) as ei:
        load_secrets({"secrets_file": str(p)})
    assert ":1:" in str(ei.value) and "leaked" not in str(ei.value)


def test_configuration_reference_is_up_to_date(repo):
    from observer.core.config import reference_markdown

    doc = (repo / "docs" / "configuration.md").read_text()
    assert doc.strip() == reference_markdown().strip(), \
        "docs/configuration.md is stale: run .venv/bin/python -m observer.core.config > docs/configuration.md"
