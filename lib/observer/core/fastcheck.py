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
    "string": ("str",),
    "integer": ("int",),
    "number": ("int", "float"),
    "boolean": ("bool",),
    "null": ("NoneType",),
    "object": ("dict",),
    "array": ("list",),
}

_TYPE_OBJ = {"str": str, "int": int, "float": float, "bool": bool, "NoneType": type(None), "dict": dict, "list": list}


def compile_checker(schema: dict, name: str):
    """Return check(record) raising CheckFailed('field: problem').

    The generated code tests each value's type once: where the schema allows one Python type, the
    later keyword checks run unguarded (or are left out when they cannot apply to that type), and a
    required property is read without a membership test (the required check has run)."""
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
        known: str | None = None  # the one Python type x can have past the type check
        has_t = False
        if t is not None:
            ts = [t] if isinstance(t, str) else t
            allowed = sorted({py for s_ in ts for py in _PYTYPES[s_]})
            want = ("want " + "/".join(ts) + ", got ")
            if len(allowed) == 1:
                known = allowed[0]
                lines.append(f"{pad}if type(x) is not {known}: {fail}{want!r} + type(x).__name__)")
            else:
                # bool is its own type, so (int, float) already excludes True/False
                lines.append(f"{pad}t = type(x)")
                has_t = True
                lines.append(f"{pad}if t not in {const(frozenset(_TYPE_OBJ[a] for a in allowed))}: {fail}{want!r} + t.__name__)")

        def guard(*types: str) -> str | None:
            """Condition under which a keyword for `types` applies: '' = always, None = never."""
            nonlocal has_t
            if known is not None:
                return "" if known in types else None
            if not has_t:
                lines.append(f"{pad}t = type(x)")
                has_t = True
            return "(" + " or ".join(f"t is {ty}" for ty in types) + ") and "

        if "const" in node:
            lines.append(f"{pad}if x != {const(node['const'])}: {fail}'want ' + repr({const(node['const'])}))")
        if "enum" in node:
            values = const(frozenset(node["enum"]))
            msg = repr("not one of " + str(node["enum"]))
            lines.append(f"{pad}try:")
            lines.append(f"{pad}    _ok = x in {values}")
            lines.append(f"{pad}except TypeError:  # an unhashable value (list, dict) is in no enum")
            lines.append(f"{pad}    _ok = False")
            lines.append(f"{pad}if not _ok: {fail}{msg})")
        for kw, op in (("minimum", "<"), ("maximum", ">"), ("exclusiveMinimum", "<=")):
            if kw in node and (g := guard("int", "float")) is not None:
                lines.append(f"{pad}if {g}x {op} {node[kw]!r}: {fail}'{kw} {node[kw]}')")
        if "pattern" in node and (g := guard("str")) is not None:
            # the same few strings (provider, market) recur in every record: remember the good ones
            memo = const(set())
            lines.append(f"{pad}if {g}x not in {memo}:")
            lines.append(f"{pad}    if {const(re.compile(node['pattern']))}.search(x) is None: "
                         f"{fail}{('does not match ' + node['pattern'])!r})")
            lines.append(f"{pad}    if len({memo}) < 1024: {memo}.add(x)")
        for kw, op, ty, msg in (("minLength", "<", "str", "too short"), ("maxLength", ">", "str", "too long"),
                                ("minItems", "<", "list", "too few items"), ("maxItems", ">", "list", "too many items")):
            if kw in node and (g := guard(ty)) is not None:
                lines.append(f"{pad}if {g}len(x) {op} {node[kw]}: {fail}{msg!r})")
        props = node.get("properties")
        is_dict = guard("dict") if {"required", "additionalProperties", "properties"} & node.keys() else None
        required = frozenset(node.get("required", ()))
        if required and is_dict is not None:
            lines.append(f"{pad}if {is_dict}not {const(required)} <= x.keys(): "
                         f"{fail}'missing ' + ', '.join(sorted({const(required)} - x.keys())))")
        if node.get("additionalProperties") is False and is_dict is not None:
            allowed_keys = const(frozenset(props or {}))
            lines.append(f"{pad}if {is_dict}not x.keys() <= {allowed_keys}: "
                         f"{fail}'unexpected ' + ', '.join(sorted(x.keys() - {allowed_keys})))")
        elif node.get("additionalProperties") not in (None, True, False) and is_dict is not None:
            counter[0] += 1
            v = f"_v{counter[0]}"
            lines.append(f"{pad}if {is_dict}True:")
            lines.append(f"{pad}    for {v} in x.values():")
            emit(node["additionalProperties"], v, path + ".*", indent + 8)
            lines.append(f"{pad}    x = None")
        if props and is_dict is not None:
            counter[0] += 1
            d = f"_d{counter[0]}"
            lines.append(f"{pad}if {is_dict}True:")
            lines.append(f"{pad}    {d} = x")
            for key, sub in props.items():
                if set(sub) <= {"description", "default", "title"}:
                    continue
                sub_path = f"{path}.{key}" if path else key
                if key in required and known == "dict":
                    emit(sub, f"{d}[{key!r}]", sub_path, indent + 4)  # present: the required check ran
                else:
                    lines.append(f"{pad}    if {key!r} in {d}:")
                    emit(sub, f"{d}[{key!r}]", sub_path, indent + 8)
        if ("prefixItems" in node or "items" in node) and (is_list := guard("list")) is not None:
            counter[0] += 1
            it = f"_i{counter[0]}"
            lines.append(f"{pad}if {is_list}True:")
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
    ns: dict = {"CheckFailed": CheckFailed, "NoneType": type(None), **consts}
    exec(compile(src, f"<fastcheck {name}>", "exec"), ns)
    return ns["check"]
