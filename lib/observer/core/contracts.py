"""Record contracts: JSON Schemas in observer/schemas/records (one per record kind) and
observer/schemas/events (one per event kind).

Writers call check() on the hot path (compiled by fastcheck, ~2 µs a record); readers and
observer-verify call explain() for a full, readable list of problems (jsonschema).
A record that fails its contract is never silently dropped: the caller emits `record_rejected`.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from importlib import resources

import fastjsonschema
import jsonschema

from observer.core.fastcheck import CheckFailed, Unsupported, compile_checker

RECORD_KINDS = ("trade", "book", "snapshot", "bar", "raw", "event", "overflow", "alert", "metric")


class ContractError(ValueError):
    pass


def _load_dir(name: str) -> dict[str, dict]:
    base = resources.files("observer") / "schemas" / name
    return {f.name[:-5]: json.loads(f.read_text()) for f in base.iterdir() if f.name.endswith(".json")}


@lru_cache(maxsize=1)
def record_schemas() -> dict[str, dict]:
    return _load_dir("records")


@lru_cache(maxsize=1)
def event_schemas() -> dict[str, dict]:
    return _load_dir("events")


@cache
def _compiled(group: str, name: str):
    schema = (record_schemas() if group == "records" else event_schemas())[name]
    try:
        return compile_checker(schema, f"{group}/{name}")
    except Unsupported:
        return fastjsonschema.compile(schema)


def check(record: dict, partition: str | None = None) -> None:
    """Raise ContractError (message names the field) unless `record` satisfies its kind's contract."""
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind not in RECORD_KINDS:
        raise ContractError(f"unknown record kind {kind!r}; known: {', '.join(RECORD_KINDS)}")
    try:
        _compiled("records", kind)(record)
        if partition == "recovered":
            _compiled("records", "recovered")(record)
        if kind == "event":
            ev = record["event"]
            if ev not in event_schemas():
                raise ContractError(f"unknown event kind {ev!r}: add observer/schemas/events/{ev}.json")
            _compiled("events", ev)(record)
    except CheckFailed as e:
        raise ContractError(f"{kind}: {e}") from None
    except fastjsonschema.JsonSchemaValueException as e:
        raise ContractError(f"{kind}: {e.message}") from None


def explain(record, partition: str | None = None) -> list[str]:
    """Every problem with `record`, each naming the field (for readers and observer-verify)."""
    if not isinstance(record, dict):
        return [f"not a JSON object but {type(record).__name__}"]
    kind = record.get("kind")
    if kind not in RECORD_KINDS:
        return [f"unknown record kind {kind!r}"]
    schemas = [record_schemas()[kind]]
    if partition == "recovered":
        schemas.append(record_schemas()["recovered"])
    if kind == "event":
        ev = record.get("event")
        if ev in event_schemas():
            schemas.append(event_schemas()[ev])
        else:
            return [f"unknown event kind {ev!r}"]
    out = []
    for s in schemas:
        for err in jsonschema.Draft202012Validator(s).iter_errors(record):
            where = ".".join(str(p) for p in err.absolute_path) or "(record)"
            out.append(f"{where}: {err.message}")
    return out
