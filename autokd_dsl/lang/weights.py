"""Safe arithmetic on the numbers of a `.kd` file: weights, parameters and numeric op arguments.

Only the operation asked for is computed, every intermediate value is bounded by the largest float, and
every arithmetic fault (overflow, division by zero, a complex result) is a :class:`~autokd_dsl.errors.KDError`
at the expression's span, so no weight can hang (``7 ^ 1000000000``, ``9^9^9``) or escape as a traceback.

>>> from autokd_dsl.lang.parse import parse
>>> term = parse("distiller d(beta = 2.5):\\n    logits -> mse -> beta * 1000\\n").blocks[0].terms[0]
>>> evaluate(term.steps[-1], {"beta": 2.5})
2500.0
>>> evaluate(ir.BinOp("^", ir.Num(9), ir.BinOp("^", ir.Num(9), ir.Num(9))), {})
Traceback (most recent call last):
...
autokd_dsl.errors.KDError: error: `^` gives a number too large (the largest is about 1.8e308)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping

from ..errors import KDError, Span
from . import ir

LARGEST = sys.float_info.max
_TOO_LARGE = "(the largest is about 1.8e308)"

Number = int | float


def bounded(value: Number, span: Span | None = None, what: str = "number") -> Number:
    """``value`` if it is a finite number no larger than the largest float, else a located error."""
    if isinstance(value, float) and math.isnan(value):
        raise KDError(f"{what} is not a number (NaN)", span=span)
    if isinstance(value, complex):
        raise KDError(f"{what} has no real value", span=span)
    if not (-LARGEST <= value <= LARGEST):
        raise KDError(f"{what} too large {_TOO_LARGE}", span=span,
                      hint="weights and parameters are ordinary numbers; split a huge one into factors")
    if isinstance(value, int) and abs(value) > 2**53:  # beyond exact floats: a float, as torch takes it
        return float(value)
    return value


def _power(a: Number, b: Number, span: Span | None) -> Number:
    if a == 0 and b < 0:
        raise KDError("0 raised to a negative power (a division by zero)", span=span)
    if a < 0 and not float(b).is_integer():
        raise KDError("a negative number raised to a fractional power has no real value", span=span)
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        if abs(a) > 1 and b * math.log2(abs(a)) > 1025:  # decided before computing: no huge integer is built
            raise OverflowError
        return a ** b
    return math.pow(float(a), float(b))


def apply(op: str, a: Number, b: Number, span: Span | None = None) -> Number:
    """``a op b`` for one of ``+ - * / ^``: only that operation, bounded, faults as located errors.

    >>> apply("*", 2.5, 1000), apply("^", 2, 10), apply("/", 1, 4)
    (2500.0, 1024, 0.25)
    """
    a, b = bounded(a, span), bounded(b, span)
    try:
        if op == "+":
            value = a + b
        elif op == "-":
            value = a - b
        elif op == "*":
            value = a * b
        elif op == "/":
            if b == 0:
                raise KDError("division by zero", span=span)
            value = a / b
        elif op == "^":
            value = _power(a, b, span)
        else:
            raise KDError(f"unknown operator `{op}`", span=span)
    except (OverflowError, ZeroDivisionError):
        raise KDError(f"`{op}` gives a number too large {_TOO_LARGE}", span=span) from None
    return bounded(value, span, f"`{op}` gives a number")


def evaluate(expr: ir.Expr, params: Mapping[str, Number], calls: Callable[[ir.Call], Number] | None = None
             ) -> Number:
    """The value of a number expression over numbers and parameters (``params``: name → value).

    ``calls`` gives the value of a schedule call (`warmup(5)`); without it a call is an error, as are a choice,
    an unknown name and any arithmetic fault (all located).
    """
    if isinstance(expr, ir.Call) and calls is not None:
        return bounded(calls(expr), expr.span)
    if isinstance(expr, ir.Num):
        return bounded(expr.value, expr.span)
    if isinstance(expr, ir.Name):
        if expr.id not in params:
            raise KDError(f"unknown name `{expr.id}` in a number", span=expr.span)
        return bounded(params[expr.id], expr.span)
    if isinstance(expr, ir.Neg):
        return -evaluate(expr.operand, params, calls)
    if isinstance(expr, ir.BinOp):
        return apply(expr.op, evaluate(expr.left, params, calls), evaluate(expr.right, params, calls), expr.span)
    raise KDError(f"expected a number, got `{type(expr).__name__.lower()}`", span=getattr(expr, "span", None))


def is_constant(expr: ir.Expr, params: Mapping[str, Number]) -> bool:
    """Whether ``expr`` is made of numbers and the given parameters only (no call, choice or other name)."""
    return all(isinstance(node, (ir.Num, ir.BinOp, ir.Neg)) or (isinstance(node, ir.Name) and node.id in params)
               for node in ir.walk(expr))


def value_or_none(expr: ir.Expr, params: Mapping[str, Number]) -> Number | None:
    """:func:`evaluate` where ``expr`` is constant (:func:`is_constant`), else None; faults still raise."""
    return evaluate(expr, params) if is_constant(expr, params) else None


def schedule_range(call: ir.Call, params: Mapping[str, Number]) -> tuple[Number, Number]:
    """The values a schedule takes at its start and at its end (`linear`: start and end; the others 0 and 1)."""
    if call.op == "linear":
        return evaluate(call.arg("start"), params), evaluate(call.arg("end"), params)
    return (1, 0) if call.op == "before" else (0, 1)


def check_weight(expr: ir.Expr, params: Mapping[str, Number]) -> None:
    """Raise a located error if a weight faults, its schedules (`warmup(5)`) taken at their start and at their end.

    >>> from autokd_dsl.lang.check import check_text
    >>> check_text("distiller d:\\n    logits -> mse -> 1 / warmup(5)\\n")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    autokd_dsl.errors.KDError: <string>:2:22: error: division by zero ...
    """
    names = [n for n in ir.walk(expr) if isinstance(n, ir.Name)]
    if any(n.id not in params for n in names) or any(isinstance(n, ir.Choice) for n in ir.walk(expr)):
        return  # depends on a search's alternatives: checked per candidate
    if not any(isinstance(n, ir.Call) for n in ir.walk(expr)):
        evaluate(expr, params)
        return
    for end, when in ((0, "start"), (1, "end")):
        try:
            evaluate(expr, params, lambda call, end=end: schedule_range(call, params)[end])
        except KDError as err:
            err.message += f" (with the schedules at their {when})"
            raise
