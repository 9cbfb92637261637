"""Secrets: systemd credentials first, else a 0600 KEY=VALUE file. Values are registered for redaction.

Under systemd the unit says `LoadCredential=secrets.env:/etc/observer/secrets.env`; the service then
reads $CREDENTIALS_DIRECTORY/secrets.env (a private, unswappable copy) and never needs read access
to /etc/observer. Outside systemd, `secrets_file` from the config is read and refused when group-
or world-readable, so a mistaken chmod is caught before a key leaks.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from observer.core.redact import register_secret

CREDENTIAL_NAME = "secrets.env"


class SecretsError(Exception):
    pass


class Secrets(Mapping[str, str]):
    def __init__(self, values: dict[str, str], source: str):
        self._values = values
        self.source = source

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def require(self, *keys: str) -> None:
        missing = [k for k in keys if not self._values.get(k)]
        if missing:
            raise SecretsError(f"{self.source}: missing secret(s) {', '.join(missing)} (names only; values never logged)")

    def __repr__(self) -> str:  # never print values
        return f"Secrets({self.source}, keys={sorted(self._values)})"


def parse_env_file(text: str, source: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise SecretsError(f"{source}:{n}: expected KEY=VALUE (the line's content is not shown)")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def check_file_mode(path: Path) -> None:
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(
            f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets group/others read it; "
            f"run: chmod 600 {path}")


def load_secrets(cfg: Mapping | None = None, path: str | os.PathLike | None = None) -> Secrets:
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if path is None and cred_dir and (Path(cred_dir) / CREDENTIAL_NAME).is_file():
        p = Path(cred_dir) / CREDENTIAL_NAME
        source = f"credential {CREDENTIAL_NAME}"
    else:
        p = Path(path or (cfg or {}).get("secrets_file") or "/etc/observer/secrets.env")
        source = str(p)
        if not p.exists():
            return Secrets({}, source + " (absent)")
        check_file_mode(p)
    try:
        values = parse_env_file(p.read_text(encoding="utf-8"), source)
    except OSError as e:
        raise SecretsError(f"{source}: cannot read: {e.strerror}") from None
    for v in values.values():
        register_secret(v)
    return Secrets(values, source)
