"""Secrets: systemd credentials first, else a 0600 KEY=VALUE file. Values are registered for redaction.

Under systemd the unit says `LoadCredential=secrets.env:/etc/observer/secrets.env`; the service then
reads $CREDENTIALS_DIRECTORY/secrets.env (a private, unswappable copy) and never needs read access
to /etc/observer. Outside systemd, `secrets_file` from the config is read and refused when group-
or world-readable, or when it is not a regular file (a symlink's target is never read), so a
mistaken chmod or a planted link is caught before a key leaks.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from observer.core.config import section
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


MAX_BYTES = 1 << 20  # a secrets file is a few lines; anything bigger is not one


def check_file_mode(path: Path, st: os.stat_result | None = None) -> None:
    st = st or os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        # a symlink (or FIFO, directory) could point anywhere: the checked mode would be some other file's
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise SecretsError(f"{path} is {what}; it must be a regular file (mode 0600) at that path")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(
            f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets group/others read it; "
            f"run: chmod 600 {path}")


def _read_regular(p: Path, source: str, *, check_mode: bool) -> str:
    """Read a regular file without following a symlink at its name; the checks apply to what was opened."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW on a symlink
            raise SecretsError(f"{source} is a symlink; it must be a regular file (mode 0600) at that path") from None
        raise SecretsError(f"{source}: cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if check_mode:
            check_file_mode(p, st)
        elif not stat.S_ISREG(st.st_mode):
            raise SecretsError(f"{source} is not a regular file")
        try:
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = f.read(MAX_BYTES + 1)
        except OSError as e:
            raise SecretsError(f"{source}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise SecretsError(f"{source}: larger than {MAX_BYTES} bytes, not a secrets file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretsError(f"{source}: not UTF-8 text (the content is not shown)") from None


def load_secrets(cfg: Mapping | None = None, path: str | os.PathLike | None = None) -> Secrets:
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if path is None and cred_dir and (Path(cred_dir) / CREDENTIAL_NAME).is_file():
        # systemd's private copy (its mode is systemd's business, not the operator's)
        p = Path(cred_dir) / CREDENTIAL_NAME
        source = f"credential {CREDENTIAL_NAME}"
        text = _read_regular(p, source, check_mode=False)
    else:
        p = Path(path or section(dict(cfg or {}))["secrets_file"])  # the default lives in the schema
        source = str(p)
        if not os.path.lexists(p):  # lexists: a dangling symlink is refused below, not taken as "absent"
            return Secrets({}, source + " (absent)")
        text = _read_regular(p, source, check_mode=True)
    values = parse_env_file(text, source)
    for v in values.values():
        register_secret(v)
    return Secrets(values, source)
