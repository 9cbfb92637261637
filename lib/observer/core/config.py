"""observer.toml: load, fill defaults, validate against the JSON Schema, report every error at once.

The schema is assembled from fragments in observer/schemas/config/: `_root.json` holds top-level
scalars, `<section>.json` a table `[section]`, `provider_<name>.json` the table `[providers.<name>]`.
Each program's section lives in its own file so adding a program never edits a shared schema.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import stat
import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = "/etc/observer/observer.toml"
CONFIG_ENV = "OBSERVER_CONFIG"


class ConfigError(Exception):
    """Every problem found in a config file, each naming the key path, the bad value and what is allowed."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


@lru_cache(maxsize=1)
def config_schema() -> dict:
    base = resources.files("observer") / "schemas" / "config"
    root = json.loads((base / "_root.json").read_text())
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": dict(root["properties"]),
    }
    providers: dict[str, Any] = {}
    for f in sorted(base.iterdir(), key=lambda p: p.name):
        name = f.name
        if not name.endswith(".json") or name.startswith("_"):
            continue
        frag = _inline_refs(json.loads(f.read_text()))
        key = name[:-5]
        if key.startswith("provider_"):
            providers[key[len("provider_"):]] = frag
        else:
            schema["properties"][key] = frag
    schema["properties"]["providers"] = {
        "type": "object",
        "additionalProperties": False,
        "description": "one table per broker: [providers.<name>] (observer/providers/<name>/)",
        "properties": providers,
    }
    return schema


def _inline_refs(frag: dict) -> dict:
    """Replace a fragment's local {"$ref": "#/$defs/x"} by the definition, so fragments combine freely."""
    defs = frag.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                merged = dict(defs[node["$ref"].rsplit("/", 1)[-1]])
                merged.update({k: v for k, v in node.items() if k != "$ref"})
                return walk(merged)
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(frag)


def _apply_defaults(schema: dict, value: Any, root: dict) -> Any:
    # tables inside arrays too ([[calendar.late_open]], [[providers.kis.accounts]]): their keys'
    # defaults are the schema's as well, so no reader restates them
    if schema.get("type") == "array" and isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_apply_defaults(schema["items"], v, root) for v in value]
    if schema.get("type") == "object" and isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in value:
                if "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                elif sub.get("type") == "object" and "properties" in sub:
                    value[key] = {}
                else:
                    continue
            value[key] = _apply_defaults(sub, value[key], root)
    return value


def _describe_allowed(schema: dict) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(json.dumps(v) for v in schema["enum"]))
    if "type" in schema:
        parts.append(f"type {schema['type']}")
    if "minimum" in schema:
        parts.append(f">= {schema['minimum']}")
    if "maximum" in schema:
        parts.append(f"<= {schema['maximum']}")
    if "pattern" in schema:
        parts.append(f"matching {schema['pattern']}")
    if "description" in schema:
        parts.append(f"({schema['description']})")
    return ", ".join(parts) or "see docs/configuration.md"


def _format_error(err) -> str:  # a jsonschema.ValidationError
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        where = (path + ".") if path else ""
        return (f"unknown key(s) {', '.join(repr(where + e) for e in extra)}; "
                f"allowed here: {', '.join(allowed) or '(none)'}")
    if err.validator == "required":
        return f"missing key {repr((path + '.' if path else '') + err.message.split(chr(39))[1])}"
    return (f"key {path or '(top level)'!r}: bad value {json.dumps(err.instance, default=str)}: {err.message}; "
            f"allowed: {_describe_allowed(err.schema)}")


def validate_config(cfg: dict, source: str = "<config>") -> dict:
    """Fill defaults and validate; raise ConfigError listing every problem."""
    schema = config_schema()
    cfg = _apply_defaults(schema, copy.deepcopy(cfg), schema)
    problems: list[str] = []
    import jsonschema  # imported when a config is loaded, not by every program's start-up

    v = jsonschema.Draft202012Validator(schema)
    for err in sorted(v.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path))):
        problems.append(_format_error(err))
    if problems:
        raise ConfigError(source, problems)
    return cfg


def section(cfg: dict, *path: str) -> dict:
    """A copy of the table at `path` (e.g. "windows", "track_a") with every schema default filled in.

    On a validated config that is the table as it is; a partial dict (a test's, a caller's) gets the
    schema's defaults too, so a default is written once, in the schema, never again in a reader.
    """
    value: Any = cfg
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return with_defaults(value, *path)


def with_defaults(table: dict | None, *path: str) -> dict:
    """A copy of `table`, the table the schema has at `path` (e.g. a provider's ws table), with the
    schema's defaults filled in; None gives the schema's default of that table."""
    schema = config_schema()
    node: dict = schema
    for key in path:
        node = node["properties"][key]  # a KeyError names a table the schema does not have
    if table is None:
        table = node.get("default", {})
    return _apply_defaults(node, copy.deepcopy(table), schema)


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> dict:
    """Read observer.toml (path, else $OBSERVER_CONFIG, else /etc/observer/observer.toml).

    A missing file at the default location gives the defaults (so `--check-config` on a fresh
    host still says something useful); a missing file that was named explicitly is an error.
    """
    explicit = path is not None or CONFIG_ENV in os.environ
    p = Path(path or os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_PATH))
    try:
        raw = tomllib.loads(_read_config_text(p))
    except FileNotFoundError:
        if explicit:
            raise ConfigError(str(p), ["file not found"]) from None
        raw = {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(p), [f"not valid TOML: {e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), [f"not UTF-8 text: {e}"]) from None
    except OSError as e:  # permission denied, a directory, a path through a file, ...
        raise ConfigError(str(p), [f"cannot read: {e.strerror or e}"]) from None
    if overrides:
        _deep_merge(raw, overrides)
    cfg = validate_config(raw, str(p))
    cfg["_source"] = str(p)
    return cfg


MAX_CONFIG_BYTES = 1 << 20


def _read_config_text(p: Path) -> str:
    """The file's text; a FIFO or device is refused instead of blocking, a huge file instead of read."""
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_CONFIG_BYTES} bytes")
    return data.decode("utf-8")


def _deep_merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = v


def data_dir(cfg: dict) -> Path:
    # a partial dict (a test's) has the schema's default, as a validated config would
    return Path(cfg["data_dir"] if "data_dir" in cfg else config_schema()["properties"]["data_dir"]["default"])


def host_id(cfg: dict) -> str:
    import socket

    return cfg.get("host_id") or socket.gethostname()


def reference_markdown() -> str:
    """docs/configuration.md, generated from the schema fragments (a test keeps the file in step)."""
    schema = config_schema()
    out = ["# Configuration reference", "",
           "Generated from `lib/observer/schemas/config/*.json` by "
           "`python -m observer.core.config > docs/configuration.md`; a test fails when it is out of date.",
           "Every key is optional; the default is shown. File: `/etc/observer/observer.toml` "
           "(or `--config PATH`, or `$OBSERVER_CONFIG`). Check it with any program's `--check-config`.", ""]

    def walk(node: dict, path: str):
        props = node.get("properties", {})
        rows = []
        for key, sub in props.items():
            full = f"{path}.{key}" if path else key
            if sub.get("type") == "object" and sub.get("properties") and full != "providers":
                walk(sub, full)
                continue
            if full == "providers":
                for pname, psub in sub.get("properties", {}).items():
                    walk(psub, f"providers.{pname}")
                continue
            typ = sub.get("type") or ("enum" if "enum" in sub else "")
            if "enum" in sub:
                typ = " \\| ".join(json.dumps(v) for v in sub["enum"])
            default = json.dumps(sub["default"], ensure_ascii=False) if "default" in sub else ""
            desc = (sub.get("description") or "").replace("|", "\\|").replace("\n", " ")
            rows.append(f"| `{key}` | {typ if isinstance(typ, str) else '/'.join(typ)} | `{default}` | {desc} |")
        if rows:
            out.append(f"## `[{path}]`" if path else "## top level")
            if node.get("description") and path:
                out.append("")
                out.append(node["description"])
            out.extend(["", "| key | type | default | meaning |", "|---|---|---|---|", *rows, ""])

    walk(schema, "")
    return "\n".join(out)


if __name__ == "__main__":
    print(reference_markdown())
