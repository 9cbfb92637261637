"""The core names no broker and no exchange: only their definitions do.

Scanned: every .py under lib/observer except a provider's package (providers/<name>/), the simulator
(sim/, and its programs programs/sim.py and programs/demo.py, which run the simulated broker), and the
market definitions (markets/). Code and string literals are checked; comments and docstrings may name
a broker or exchange as an example ("KIS: 41 registrations"), since they explain and do not decide.
Config schemas (schemas/config/*.json) hold the deployment's defaults and are not scanned. Words are
matched case-insensitively (identifiers split at _ and camelCase: KrxCalendar, KIS_KEY), except the
lower-case identifier `nxt`, the common short name of a "next" variable.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from datetime import date
from pathlib import Path

import pytest

from observer.markets import get_market
from observer.providers.base import provider_class, provider_names

# the checkout's lib/observer, wherever in tests/ this file sits
LIB = next(p for p in Path(__file__).resolve().parents if (p / "lib" / "observer").is_dir()) / "lib" / "observer"
WORDS = ("kis", "kiwoom", "upbit", "krx", "nxt", "nasdaq", "nyse")
_WORD = re.compile(r"\b(" + "|".join(WORDS) + r")\b", re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_FSTRING = re.compile(r"^[rRbB]?[fF]")
_FIELD = re.compile(r"\{[^{}]*\}")

EXCLUDED_FILES = {"programs/sim.py", "programs/demo.py"}
# Known and narrow: the deploy guard's optional US-hours lock still asks the holiday library for the
# exchange by name; it moves to a market definition with the guard's config (preflight.deploy_guard).
KNOWN = {("heal/preflight/guard.py", "nyse")}


def _excluded(rel: str) -> bool:
    parts = rel.split("/")
    if parts[0] in ("sim", "markets") or rel in EXCLUDED_FILES:
        return True
    return parts[0] == "providers" and len(parts) > 2  # a provider's own package; providers/base.py is core


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def spelled(source: str) -> list[tuple[int, str]]:
    """(line, word) of every broker or exchange named in code or a non-docstring string of `source`."""
    docs = _docstring_lines(ast.parse(source))
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.NAME, tokenize.STRING) or tok.start[0] in docs:
            continue
        text = _CAMEL.sub(" ", tok.string).replace("_", " ")
        # code: the token itself, or an f-string's replacement fields
        code = [(0, len(text))] if tok.type == tokenize.NAME else (
            [m.span() for m in _FIELD.finditer(text)] if _FSTRING.match(tok.string) else [])
        out.extend((tok.start[0], m.group(1).lower()) for m in _WORD.finditer(text)
                   if not (m.group(0) == "nxt" and any(a <= m.start() < b for a, b in code)))
    return out


def test_the_scanner_sees_code_and_strings_but_not_comments_or_docstrings():
    src = ('"""KIS is named here as an example."""\n'
           'from x import KrxCalendar  # KRX in a comment\n'
           'LIMIT = {"kis": 41}\n'
           'KIWOOM_KEYS = f"{a} on NYSE"\n'
           'sikis = "kisses"\n'
           'nxt = "NXT"\n'
           'msg = f"next {nxt}, venue nxt"\n')
    assert spelled(src) == [(2, "krx"), (3, "kis"), (4, "kiwoom"), (4, "nyse"), (6, "nxt"), (7, "nxt")]


def test_no_broker_or_exchange_is_spelled_in_the_core():
    found, known_seen = [], set()
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(LIB).as_posix()
        if _excluded(rel):
            continue
        for line, word in spelled(path.read_text(encoding="utf-8")):
            if (rel, word) in KNOWN:
                known_seen.add((rel, word))
            else:
                found.append(f"lib/observer/{rel}:{line}: {word}")
    assert known_seen == KNOWN, f"KNOWN lists places that no longer spell a name: {sorted(KNOWN - known_seen)}"
    assert not found, "broker or exchange spelled outside providers/<name>/, markets/, sim/:\n" + "\n".join(found)


@pytest.mark.parametrize("name, error", [
    ("../kis", "bad provider name"), ("kis.provider", "bad provider name"), ("Kis", "bad provider name"),
    ("", "bad provider name"), (None, "bad provider name"),
    ("base", "unknown provider 'base'"),        # a module of the package, not a provider
    ("kiwoom", "unknown provider 'kiwoom'"),    # a package without provider.py registers nothing
    ("nosuch", "unknown provider 'nosuch'"),
])
def test_a_provider_name_from_config_is_checked_before_anything_is_imported(name, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        provider_class(name)


def test_providers_and_markets_register_themselves_and_declare_what_the_core_needs():
    assert "kis" in provider_names()
    cls = provider_class("kis")
    assert cls.name == "kis" and cls.market == cls.markets[0]
    market = get_market(cls.market)
    assert market.code == cls.market and market.calendar().is_trading_day(date(2026, 3, 16))
    assert not market.calendar().is_trading_day(date(2026, 3, 14))  # a Saturday
    assert cls.registration_limits.per_connection >= 1
    assert {"trade", "bar"} <= set(cls.recovery_sources)
    with pytest.raises(ValueError, match="bad market name"):
        get_market("krx/../x")
