"""Evaluate a Terraform module's variables, locals and blocks from its .tf files, with python-hcl2's syntax tree.

Enough of Terraform's expression language for terraform/ (no terraform binary here): literals, strings with
interpolation, var/local/iterator references, index and attribute access, conditionals, arithmetic, comparison and
logic, tuples, objects, a handful of functions, and ``dynamic`` blocks. Anything else raises NotImplementedError,
so that a module change this cannot read fails the tests loudly instead of being skipped.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from hcl2.rules.base import AttributeRule, BlockRule, BodyRule
from hcl2.rules.containers import ObjectRule, TupleRule
from hcl2.rules.expressions import BinaryOpRule, ConditionalRule, ExprTermRule, UnaryOpRule
from hcl2.rules.functions import FunctionCallRule
from hcl2.rules.indexing import GetAttrExprTermRule, IndexExprTermRule
from hcl2.rules.literal_rules import FloatLitRule, IdentifierRule, IntLitRule, LiteralValueRule
from hcl2.rules.strings import InterpolationRule, StringRule

__all__ = ["Module"]

_META_ARGUMENTS = {"count", "for_each", "depends_on", "provider", "lifecycle"}
_ESCAPES = {'\\"': '"', "\\\\": "\\", "\\n": "\n", "\\t": "\t", "\\r": "\r"}

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge,
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "%": operator.mod,
    "&&": lambda a, b: a and b, "||": lambda a, b: a or b,
}  # fmt: skip


def _coalesce(*values: Any) -> Any:
    return next(v for v in values if v is not None and v != "")


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "trim": lambda s, chars: s.strip(chars),
    "coalesce": _coalesce,
    "concat": lambda *lists: [item for one in lists for item in one],
    "length": len,
    "contains": lambda collection, value: value in collection,
    "floor": math.floor,
    "max": max,
    "one": lambda values: None if not values else values[0],
    "setintersection": lambda *sets: sorted(set.intersection(*(set(s) for s in sets))),
}


def _name(node: Any) -> str:
    if isinstance(node, IdentifierRule):
        return str(node.token.value)
    if isinstance(node, StringRule):
        return "".join(str(part.content.value) for part in node.string_parts)
    raise NotImplementedError(f"block label {type(node).__name__}")


def _unescape(text: str) -> str:
    for escaped, plain in _ESCAPES.items():
        text = text.replace(escaped, plain)
    return text


@dataclass
class Module:
    """The blocks of every .tf file in ``directory``; ``variables`` overrides defaults, ``resources`` stands for
    the attributes of resources that only exist once applied (``{"aws_s3_bucket": {"this": {"arn": ...}}}``)."""

    directory: Path
    variables: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.blocks: list[tuple[str, tuple[str, ...], BodyRule]] = []
        for path in sorted(self.directory.glob("*.tf")):
            for node in hcl2.parses(path.read_text()).body.children:
                if isinstance(node, BlockRule):
                    kind, *labels = (_name(label) for label in node.labels)
                    self.blocks.append((kind, tuple(labels), node.body))
        self._locals = {
            _name(attr.identifier): attr.expression
            for kind, _, body in self.blocks
            if kind == "locals"
            for attr in body.children
            if isinstance(attr, AttributeRule)
        }
        self._local_values: dict[str, Any] = {}

    def body(self, kind: str, *labels: str) -> BodyRule:
        matches = [body for k, lbls, body in self.blocks if k == kind and lbls == labels]
        if len(matches) != 1:
            raise KeyError(f"{kind} {' '.join(labels)}: {len(matches)} blocks")
        return matches[0]

    def names(self, kind: str) -> list[tuple[str, ...]]:
        return [labels for k, labels, _ in self.blocks if k == kind]

    def local_names(self) -> set[str]:
        return set(self._locals)

    def var(self, name: str) -> Any:
        if name in self.variables:
            return self.variables[name]
        attributes = self.attributes(self.body("variable", name))
        if "default" not in attributes:
            raise KeyError(f"variable '{name}' has no default and no value")
        return self.eval(attributes["default"], {})

    def local(self, name: str) -> Any:
        if name not in self._local_values:
            self._local_values[name] = self.eval(self._locals[name], {})
        return self._local_values[name]

    def count(self, kind: str, *labels: str) -> int:
        """How many instances of a resource or data block exist (its ``count``; 1 without one)."""
        attributes = self.attributes(self.body(kind, *labels))
        return int(self.eval(attributes["count"], {})) if "count" in attributes else 1

    def render(self, kind: str, *labels: str) -> dict[str, Any]:
        """Evaluate a block: attributes as values, nested blocks as lists of dicts, dynamic blocks expanded."""
        return self._render(self.body(kind, *labels), {})

    # --- evaluation ---------------------------------------------------------------------------------------------

    @staticmethod
    def attributes(body: BodyRule) -> dict[str, Any]:
        return {_name(a.identifier): a.expression for a in body.children if isinstance(a, AttributeRule)}

    def _render(self, body: BodyRule, scope: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in body.children:
            if isinstance(node, AttributeRule):
                name = _name(node.identifier)
                if name not in _META_ARGUMENTS:
                    out[name] = self.eval(node.expression, scope)
            elif isinstance(node, BlockRule):
                kind, *labels = (_name(label) for label in node.labels)
                if kind in _META_ARGUMENTS:
                    continue
                if kind == "dynamic":
                    out.setdefault(labels[0], []).extend(self._dynamic(labels[0], node.body, scope))
                else:
                    out.setdefault(kind, []).append(self._render(node.body, scope))
        return out

    def _dynamic(self, name: str, body: BodyRule, scope: Mapping[str, Any]) -> list[dict[str, Any]]:
        attributes = self.attributes(body)
        iterator = _name(attributes["iterator"].expression) if "iterator" in attributes else name
        items = self.eval(attributes["for_each"], scope)
        pairs = items.items() if isinstance(items, Mapping) else enumerate(items)
        content = next(n.body for n in body.children if isinstance(n, BlockRule) and _name(n.labels[0]) == "content")
        return [self._render(content, {**scope, iterator: {"key": k, "value": v}}) for k, v in pairs]

    def eval(self, node: Any, scope: Mapping[str, Any]) -> Any:  # noqa: PLR0911, PLR0912 - one flat dispatch table
        if isinstance(node, ExprTermRule):
            return self.eval(node.expression, scope)
        if isinstance(node, StringRule):
            return "".join(self._string_part(part.content, scope) for part in node.string_parts)
        if isinstance(node, LiteralValueRule):
            return {"null": None, "true": True, "false": False}[str(node.token.value)]
        if isinstance(node, IntLitRule):
            return int(node.token.value)
        if isinstance(node, FloatLitRule):
            return float(node.token.value)
        if isinstance(node, IdentifierRule):
            return self._root(_name(node), scope)
        if isinstance(node, GetAttrExprTermRule):
            return self._attr(self.eval(node.expr_term, scope), _name(node.get_attr.identifier))
        if isinstance(node, IndexExprTermRule):
            base, index = node.children[0], node.children[1]
            return self.eval(base, scope)[self.eval(index.index_expression, scope)]
        if isinstance(node, ConditionalRule):
            chosen = node.if_true if self.eval(node.condition, scope) else node.if_false
            return self.eval(chosen, scope)
        if isinstance(node, BinaryOpRule):
            op = str(node.binary_term.binary_operator.token.value)
            left = self.eval(node.expr_term, scope)
            return _BINARY[op](left, self.eval(node.binary_term.expr_term, scope))
        if isinstance(node, UnaryOpRule):
            value = self.eval(node.expr_term, scope)
            return (not value) if node.operator == "!" else -value
        if isinstance(node, TupleRule):
            return [self.eval(element, scope) for element in node.elements]
        if isinstance(node, ObjectRule):
            return {self._key(e.key, scope): self.eval(e.expression, scope) for e in node.elements}
        if isinstance(node, FunctionCallRule):
            args = [self.eval(a, scope) for a in node.arguments.arguments] if node.arguments else []
            return _FUNCTIONS[_name(node.identifiers[0])](*args)
        raise NotImplementedError(f"cannot evaluate {type(node).__name__}: {node.serialize()}")

    def _string_part(self, content: Any, scope: Mapping[str, Any]) -> str:
        if isinstance(content, InterpolationRule):
            value = self.eval(content.expression, scope)
            return str(value).lower() if isinstance(value, bool) else str(value)
        return _unescape(str(content.value))

    def _key(self, key: Any, scope: Mapping[str, Any]) -> str:
        value = key.value
        return _name(value) if isinstance(value, IdentifierRule) else str(self.eval(value, scope))

    def _root(self, name: str, scope: Mapping[str, Any]) -> Any:
        if name in scope:
            return scope[name]
        if name == "var":
            return _Lazy(self.var)
        if name == "local":
            return _Lazy(self.local)
        if name in self.resources:
            return self.resources[name]
        raise KeyError(f"unknown reference '{name}'")

    @staticmethod
    def _attr(value: Any, name: str) -> Any:
        return value[name]


@dataclass(frozen=True)
class _Lazy:
    get: Callable[[str], Any]

    def __getitem__(self, name: str) -> Any:
        return self.get(name)
