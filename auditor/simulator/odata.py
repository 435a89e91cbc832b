"""The subset of OData query syntax that Graph's directory routes accept, and how each property filters.

`parse_filter` turns a `$filter` string into a small tree; `FilterSpec` says which operators a resource
allows on which property, and which of them count as "advanced queries" (those need the
`ConsistencyLevel: eventual` header and `$count=true`, as on Graph).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ODataQueryError(Exception):
    """A query Graph would reject; carries Graph's error code and message."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Compare:
    prop: str
    op: str  # eq ne gt ge lt le
    value: Any


@dataclass(frozen=True)
class In:
    prop: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Func:
    name: str  # startswith | endswith
    prop: str
    value: str


@dataclass(frozen=True)
class CountCompare:
    prop: str  # collection property, e.g. assignedLicenses
    op: str
    value: int


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


Node = Compare | In | Func | CountCompare | BoolOp | Not

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?(?![\w-]))|(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})|(?P<ident>[A-Za-z_$][\w$]*(?:/[\w$]+)*)|(?P<punct>[(),]))"
)
_COMPARISON = {"eq", "ne", "gt", "ge", "lt", "le"}


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ODataQueryError(
                "BadRequest", f"Invalid filter clause: syntax error at position {pos} in '{text}'."
            )
        pos = match.end()
        kind = match.lastgroup or ""
        raw = match.group(kind)
        if kind == "str":
            tokens.append(("value", raw[1:-1].replace("''", "'")))
        elif kind == "num":
            tokens.append(("value", float(raw) if "." in raw else int(raw)))
        elif kind == "guid":
            tokens.append(("value", raw))
        elif kind == "ident":
            lowered = raw.lower()
            if lowered in ("true", "false"):
                tokens.append(("value", lowered == "true"))
            elif lowered == "null":
                tokens.append(("value", None))
            elif lowered in _COMPARISON or lowered in ("and", "or", "not", "in"):
                tokens.append(("kw", lowered))
            else:
                tokens.append(("ident", raw))
        else:
            tokens.append(("punct", raw))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str, value: Any = None) -> Any:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            expected = value or kind
            raise ODataQueryError(
                "BadRequest", f"Invalid filter clause: expected {expected} in '{self.text}'."
            )
        self.pos += 1
        return token[1]

    def parse(self) -> Node:
        node = self.or_expr()
        if self.peek() is not None:
            raise ODataQueryError(
                "BadRequest", f"Invalid filter clause: unexpected '{self.peek()}' in '{self.text}'."
            )
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.peek() == ("kw", "or"):
            self.pos += 1
            node = BoolOp("or", node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.unary()
        while self.peek() == ("kw", "and"):
            self.pos += 1
            node = BoolOp("and", node, self.unary())
        return node

    def unary(self) -> Node:
        if self.peek() == ("kw", "not"):
            self.pos += 1
            return Not(self.unary())
        if self.peek() == ("punct", "("):
            self.pos += 1
            node = self.or_expr()
            self.take("punct", ")")
            return node
        return self.predicate()

    def predicate(self) -> Node:
        name = self.take("ident")
        if self.peek() == ("punct", "("):
            # function call: startsWith(prop, 'x') / endsWith(prop, 'x')
            self.pos += 1
            prop = self.take("ident")
            self.take("punct", ",")
            value = self.take("value")
            self.take("punct", ")")
            if name.lower() not in ("startswith", "endswith") or not isinstance(value, str):
                raise ODataQueryError("BadRequest", f"Invalid filter clause: unsupported function '{name}'.")
            return Func(name.lower(), prop, value)
        token = self.peek()
        if token is None or token[0] != "kw":
            raise ODataQueryError("BadRequest", f"Invalid filter clause: operator expected after '{name}'.")
        op = token[1]
        self.pos += 1
        if op == "in":
            self.take("punct", "(")
            values = [self.take("value")]
            while self.peek() == ("punct", ","):
                self.pos += 1
                values.append(self.take("value"))
            self.take("punct", ")")
            return In(name, tuple(values))
        if op not in _COMPARISON:
            raise ODataQueryError("BadRequest", f"Invalid filter clause: unexpected '{op}' after '{name}'.")
        value = self.take("value")
        if name.lower().endswith("/$count"):
            if not isinstance(value, int):
                raise ODataQueryError("BadRequest", "Invalid filter clause: $count compares with a number.")
            return CountCompare(name[: -len("/$count")], op, value)
        return Compare(name, op, value)


def parse_filter(text: str) -> Node:
    """Parse a `$filter` expression, raising ODataQueryError the way Graph answers a bad one."""
    return _Parser(text).parse()


@dataclass(frozen=True)
class PropertyRule:
    """Which operators a property supports by default and which only as an advanced query."""

    default: frozenset[str]
    advanced: frozenset[str] = frozenset()


def rule(default: str, advanced: str = "") -> PropertyRule:
    """Operators by name (case does not matter: `startsWith` is stored as `startswith`)."""
    return PropertyRule(frozenset(default.lower().split()), frozenset(advanced.lower().split()))


@dataclass(frozen=True)
class FilterSpec:
    """Per-resource filter support, mirroring the property docstrings in Graph's metadata."""

    resource: str  # e.g. microsoft.graph.user, used in error messages
    properties: dict[str, PropertyRule] = field(default_factory=dict)
    directory_object: bool = True  # directory objects use the advanced-query rules

    def check(self, node: Node, advanced_allowed: bool) -> None:
        """Raise ODataQueryError if Graph would refuse this filter on this resource."""
        for prop, op in _operators(node):
            op = op.lower()
            rule_ = self._rule(prop)
            if op in rule_.default:
                continue
            if op in rule_.advanced:
                if not advanced_allowed:
                    raise ODataQueryError(
                        "Request_UnsupportedQuery",
                        f"Operator '{op}' is not supported because the required parameters might be missing. "
                        "Try adding $count=true query parameter and ConsistencyLevel:eventual header. "
                        "Refer to https://aka.ms/graph-docs/advanced-queries for more information",
                    )
                continue
            raise ODataQueryError(
                "Request_UnsupportedQuery",
                f"Unsupported or invalid query filter clause specified for property '{prop}' of resource "
                f"'{self.resource.rsplit('.', 1)[-1]}'.",
            )

    def _rule(self, prop: str) -> PropertyRule:
        for name, rule_ in self.properties.items():
            if name.lower() == prop.lower():
                return rule_
        raise ODataQueryError(
            "Request_BadRequest", f"Could not find a property named '{prop}' on type '{self.resource}'."
        )


def _operators(node: Node) -> list[tuple[str, str]]:
    """(property, operator) pairs used by a filter; `not` and `ne` count as their own operators."""
    if isinstance(node, Compare):
        if node.value is None:
            return [(node.prop, "null" if node.op == "eq" else "ne")]
        return [(node.prop, node.op)]
    if isinstance(node, In):
        return [(node.prop, "in")]
    if isinstance(node, Func):
        return [(node.prop, node.name)]
    if isinstance(node, CountCompare):
        return [(node.prop + "/$count", node.op)]
    if isinstance(node, Not):
        return [(prop, "not") for prop, _ in _operators(node.operand)] + _operators(node.operand)
    return _operators(node.left) + _operators(node.right)


def _get(obj: dict[str, Any], prop: str) -> Any:
    for key, value in obj.items():
        if key.lower() == prop.lower():
            return value
    return None


def _norm(value: Any) -> Any:
    # Directory string comparisons are case-insensitive.
    return value.lower() if isinstance(value, str) else value


def evaluate(node: Node, obj: dict[str, Any]) -> bool:
    """Does `obj` (a Graph-shaped dict) satisfy the filter?"""
    if isinstance(node, BoolOp):
        if node.op == "and":
            return evaluate(node.left, obj) and evaluate(node.right, obj)
        return evaluate(node.left, obj) or evaluate(node.right, obj)
    if isinstance(node, Not):
        return not evaluate(node.operand, obj)
    if isinstance(node, In):
        value = _norm(_get(obj, node.prop))
        return any(value == _norm(v) for v in node.values)
    if isinstance(node, Func):
        value = _get(obj, node.prop)
        if not isinstance(value, str):
            return False
        test: Callable[[str], bool] = (
            value.lower().startswith if node.name == "startswith" else value.lower().endswith
        )
        return test(node.value.lower())
    if isinstance(node, CountCompare):
        return _compare(len(_get(obj, node.prop) or []), node.op, node.value)
    return _compare(_norm(_get(obj, node.prop)), node.op, _norm(node.value))


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    return bool({"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op])
