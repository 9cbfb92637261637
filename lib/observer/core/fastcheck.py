"""A lean checker compiled from the record schemas, for the hot path (socket → disk).

It understands exactly the JSON Schema subset our record contracts use and refuses to compile
anything else (so a schema can't quietly use a keyword this checker would ignore); contracts.py
falls back to fastjsonschema for such schemas. On the happy path it does no allocation beyond
one key-set comparison, which makes it several times faster than a general validator.
"""

from __future__ import annotations

import re

SUPPORTED = {"$schema", "$id", "title", "description", "type", "const", "enum", "minimum", "maximum",
             "exclusiveMinimum", "pattern", "minLength", "maxLength", "required", "properties",
             "additionalProperties", "items", "prefixItems", "minItems", "maxItems", "default"}


class Unsupported(Exception):
    pass


class CheckFailed(ValueError):
    pass


_PYTYPES = {
    "string": {str},
    "integer": {int},
    "number": {int, float},
    "boolean": {bool},
    "null": {type(None)},
    "object": {dict},
    "array": {list},
}


def compile_checker(schema: dict, name: str):
    """Return check(record) raising CheckFailed('field: problem')."""
    lines: list[str] = []
    consts: dict[str, object] = {}
    counter = [0]

    def const(value) -> str:
        counter[0] += 1
        k = f"_c{counter[0]}"
        consts[k] = value
        return k

    def emit(node: dict, expr: str, path: str, indent: int) -> None:
        extra = set(node) - SUPPORTED
        if extra:
            raise Unsupported(f"{name}: {path}: keywords {sorted(extra)}")
        pad = " " * indent
        lines.append(f"{pad}x = {expr}")
        fail = f"raise CheckFailed({path!r} + ': ' + "
        t = node.get("type")
        lines.append(f"{pad}t = type(x)")
        if t is not None:
            ts = [t] if isinstance(t, str) else t
            allowed_types = set()
            for s_ in ts:
                allowed_types |= _PYTYPES[s_]
            # bool is its own type, so {int, float} already excludes True/False
            lines.append(f"{pad}if t not in {const(frozenset(allowed_types))}: "
                         f"{fail}{('want ' + '/'.join(ts) + ', got ')!r} + t.__name__)")
        if "const" in node:
            lines.append(f"{pad}if x != {const(node['const'])}: {fail}'want ' + repr({const(node['const'])}))")
        if "enum" in node:
            lines.append(f"{pad}if x not in {const(frozenset(node['enum']))}: {fail}{('not one of ' + str(node['enum']))!r})")
        numeric = "(t is int or t is float)"
        for kw, op in (("minimum", "<"), ("maximum", ">"), ("exclusiveMinimum", "<=")):
            if kw in node:
                lines.append(f"{pad}if {numeric} and x {op} {node[kw]!r}: {fail}'{kw} {node[kw]}')")
        if "pattern" in node:
            # the same few strings (provider, market) recur in every record: remember the good ones
            memo = const(set())
            lines.append(f"{pad}if t is str and x not in {memo}:")
            lines.append(f"{pad}    if {const(re.compile(node['pattern']))}.search(x) is None: "
                         f"{fail}{('does not match ' + node['pattern'])!r})")
            lines.append(f"{pad}    if len({memo}) < 1024: {memo}.add(x)")
        if "minLength" in node:
            lines.append(f"{pad}if t is str and len(x) < {node['minLength']}: {fail}'too short')")
        if "maxLength" in node:
            lines.append(f"{pad}if t is str and len(x) > {node['maxLength']}: {fail}'too long')")
        if "minItems" in node:
            lines.append(f"{pad}if t is list and len(x) < {node['minItems']}: {fail}'too few items')")
        if "maxItems" in node:
            lines.append(f"{pad}if t is list and len(x) > {node['maxItems']}: {fail}'too many items')")
        props = node.get("properties")
        if "required" in node:
            lines.append(f"{pad}if t is dict and not {const(frozenset(node['required']))} <= x.keys(): "
                         f"{fail}'missing ' + ', '.join(sorted({const(frozenset(node['required']))} - x.keys())))")
        if node.get("additionalProperties") is False:
            allowed = frozenset(props or {})
            lines.append(f"{pad}if t is dict and not x.keys() <= {const(allowed)}: "
                         f"{fail}'unexpected ' + ', '.join(sorted(x.keys() - {const(allowed)})))")
        elif node.get("additionalProperties") not in (None, True):
            sub = node["additionalProperties"]
            counter[0] += 1
            v = f"_v{counter[0]}"
            lines.append(f"{pad}if t is dict:")
            lines.append(f"{pad}    for {v} in x.values():")
            emit(sub, v, path + ".*", indent + 8)
            lines.append(f"{pad}    x = None")
        if props:
            counter[0] += 1
            d = f"_d{counter[0]}"
            lines.append(f"{pad}if t is dict:")
            lines.append(f"{pad}    {d} = x")
            for key, sub in props.items():
                if set(sub) <= {"description", "default", "title"}:
                    continue
                lines.append(f"{pad}    if {key!r} in {d}:")
                emit(sub, f"{d}[{key!r}]", f"{path}.{key}" if path else key, indent + 8)
        if "prefixItems" in node or "items" in node:
            counter[0] += 1
            it = f"_i{counter[0]}"
            lines.append(f"{pad}if t is list:")
            lines.append(f"{pad}    {it} = x")
            for k, sub in enumerate(node.get("prefixItems", [])):
                lines.append(f"{pad}    if len({it}) > {k}:")
                emit(sub, f"{it}[{k}]", f"{path}[{k}]", indent + 8)
            if "items" in node:
                counter[0] += 1
                e = f"_e{counter[0]}"
                lines.append(f"{pad}    for {e} in {it}:")
                emit(node["items"], e, f"{path}[]", indent + 8)

    emit(schema, "rec", "", 4)
    src = "def check(rec):\n" + "\n".join(lines) + "\n"
    ns: dict = {"CheckFailed": CheckFailed, **consts}
    exec(compile(src, f"<fastcheck {name}>", "exec"), ns)
    return ns["check"]
