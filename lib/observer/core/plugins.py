"""Find the package behind a provider or market name: `observer.<family>.<name>`, checked first.

A name usually comes from config or a command line, so it is untrusted: it must look like a module
name (`^[a-z][a-z0-9_]*$`, no dots, no path) and name a package installed under the family's
package before anything is imported. Importing the package lets it register itself; the registries
(observer.providers.base, observer.markets) hold no table of names.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def installed(family: str, *, containing: str | None = None) -> list[str]:
    """Names of the modules under observer.<family>, sorted, found without importing them. containing: only
    sub-packages that hold a module of that name (a provider package has `provider.py`), so a family's
    shared helper modules and unfinished packages are not taken for members."""
    pkg = importlib.import_module(f"observer.{family}")
    out = []
    for m in pkgutil.iter_modules(pkg.__path__):
        if not NAME.match(m.name):
            continue
        if containing is not None:
            sub = [s.name for s in pkgutil.iter_modules([f"{p}/{m.name}" for p in pkg.__path__])] if m.ispkg else []
            if containing not in sub:
                continue
        out.append(m.name)
    return sorted(out)


def load(family: str, name: object, what: str, *, containing: str | None = None) -> None:
    """Import observer.<family>.<name> so it registers itself. ValueError naming `what` (e.g. "provider")
    when the name is malformed or no such package is installed."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"bad {what} name {name!r}: want lower-case letters, digits and _ (^[a-z][a-z0-9_]*$)")
    known = installed(family, containing=containing)
    if name not in known:
        raise ValueError(f"unknown {what} {name!r}; installed: {', '.join(known) or 'none'}")
    importlib.import_module(f"observer.{family}.{name}")


__all__ = ["NAME", "installed", "load"]
