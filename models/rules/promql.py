"""Classify an alerting rule's PromQL: is it a series compared with a constant, and if so which
series, which constant, which side.

Parsed with `promql-parser` (Prometheus' own grammar, ported). A rule is supported when its
expression is `lhs OP c` or `c OP lhs` with OP one of > >= < <= (no `bool`), c a number and
lhs any expression that yields series (a selector, `rate()`, an aggregation...). Every other
shape is refused with the reason, so a listing can say why a rule is not forecast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import promql_parser

Direction = Literal["above", "below"]

#: comparison -> the direction of the series when the rule's condition holds (lhs OP c)
_DIRECTIONS: dict[str, Direction] = {">": "above", ">=": "above", "<": "below", "<=": "below"}
#: `c OP lhs` reads as `lhs FLIPPED c`
_FLIPPED = {">": "<", ">=": "<=", "<": ">", "<=": ">="}
_SET_OPERATORS = ("and", "or", "unless")


@dataclass(frozen=True, slots=True)
class Comparison:
    """`query OP threshold`: the rule holds while the series is beyond the threshold."""

    query: str  #: the series side, printed back as PromQL
    op: str  #: > >= < <= (after flipping `c OP lhs`)
    threshold: float

    @property
    def direction(self) -> Direction:
        return _DIRECTIONS[self.op]


@dataclass(frozen=True, slots=True)
class Unsupported:
    """Why a rule's expression cannot be forecast as a series against a constant."""

    reason: str


def classify(expr: str) -> Comparison | Unsupported:
    """The rule's series, comparison and constant, or the reason it has none."""
    try:
        tree = promql_parser.parse(expr)
    except ValueError as exc:
        return Unsupported(f"the expression does not parse as PromQL: {exc}")
    tree = _unwrap(tree)
    if not isinstance(tree, promql_parser.BinaryExpr):
        return Unsupported("no comparison with a constant (the rule fires on any series)")
    op = str(tree.op)
    if op in _SET_OPERATORS:
        return Unsupported(f"`{op}` combines several conditions; only one comparison is forecast")
    if op in ("==", "!="):
        return Unsupported(f"`{op}` tests equality, which a forecast cannot time")
    if op not in _DIRECTIONS:
        return Unsupported(f"the top operator is `{op}`, not a comparison (> >= < <=)")
    if tree.modifier is not None and tree.modifier.return_bool:
        return Unsupported("a `bool` comparison always returns series (0 or 1), it never filters")
    lhs, rhs = _unwrap(tree.lhs), _unwrap(tree.rhs)
    left, right = _number(lhs), _number(rhs)
    if left is None and right is None:
        return Unsupported("both sides are series (vector against vector); no constant threshold")
    if left is not None and right is not None:
        return Unsupported("both sides are constants; no series to forecast")
    series, threshold = (lhs, right) if right is not None else (rhs, left)
    if threshold is None or not math.isfinite(threshold):
        return Unsupported("the constant is not a finite number")
    if isinstance(series, promql_parser.BinaryExpr) and str(series.op) in _DIRECTIONS:
        return Unsupported("the series side is itself a comparison (a filter); no single series")
    if right is None:
        op = _FLIPPED[op]
    return Comparison(query=str(series), op=op, threshold=threshold)


def _unwrap(node: promql_parser.Expr) -> promql_parser.Expr:
    while isinstance(node, promql_parser.ParenExpr):
        node = node.expr
    return node


def _number(node: promql_parser.Expr) -> float | None:
    """The value of a number literal (also `-c`), None for anything else."""
    if isinstance(node, promql_parser.NumberLiteral):
        return float(node.val)
    if isinstance(node, promql_parser.UnaryExpr):
        inner = _number(_unwrap(node.expr))
        return None if inner is None else -inner
    return None
