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


def installed(family: str, *, packages_only: bool = False) -> list[str]:
    """Names of the modules under observer.<family>, sorted (packages_only: sub-packages alone, so a
    family's shared helper modules are not taken for members)."""
    pkg = importlib.import_module(f"observer.{family}")
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                  if NAME.match(m.name) and (m.ispkg or not packages_only))


def load(family: str, name: object, what: str, *, packages_only: bool = False) -> None:
    """Import observer.<family>.<name> so it registers itself. ValueError naming `what` (e.g. "provider")
    when the name is malformed or no such package is installed."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"bad {what} name {name!r}: want lower-case letters, digits and _ (^[a-z][a-z0-9_]*$)")
    known = installed(family, packages_only=packages_only)
    if name not in known:
        raise ValueError(f"unknown {what} {name!r}; installed: {', '.join(known) or 'none'}")
    importlib.import_module(f"observer.{family}.{name}")


__all__ = ["NAME", "installed", "load"]
