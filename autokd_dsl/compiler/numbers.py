"""The distiller's parameters in the loss graph: number arguments folded or read live, schedules, term weights.

A number argument that a kernel takes is read from the loss's parameters at run time (so that
``DistillerLoss(t=2)`` takes effect); one that shapes the graph or sizes a module is folded when compiling, and
the parameters it names are then fixed (a compiled file refuses other values). :class:`ParamUse` records which
is which for :mod:`.emit`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

from torch import fx, nn

from ..lang import ir, weights
from .bindings import arguments, binding, run_example

_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "^": operator.pow}


@dataclass
class ParamUse:
    """How a compiled loss uses the distiller's parameters: ``values`` (as compiled), ``attrs`` (parameters the
    graph reads, by attribute name), ``derived`` (attributes computed from them: term weights), ``fixed``
    (parameters that shaped the graph or its modules, so a compiled file accepts no other value)."""

    values: dict[str, float]
    attrs: dict[str, str] = field(default_factory=dict)
    derived: dict[str, ir.Expr] = field(default_factory=dict)
    fixed: set[str] = field(default_factory=set)


def constant(expr: ir.Expr, params: dict) -> float:
    """Fold a number expression with the distiller's parameter values (faults are located errors)."""
    return weights.evaluate(expr, params)


class Numbers:
    """The number arguments of one loss graph. ``lw`` is the :class:`~.lower.Lowering` building it (its
    ``graph``, ``root``, ``epoch_node``, ``examples``, and ``fn`` / ``attr`` to add nodes)."""

    def __init__(self, block: ir.Block, lw):
        self.lw = lw
        self.params = {p.name: constant(p.value, {}) for p in block.params}
        self.use = ParamUse(dict(self.params))

    def value(self, expr: ir.Expr, live: bool = False):
        """A number argument: nodes reading the loss's parameters where ``live`` and it names one, otherwise
        folded with the parameters' values (which then stay fixed in a compiled file)."""
        names = {e.id for e in ir.walk(expr) if isinstance(e, ir.Name)}
        if live and names:
            return self.number(expr)
        self.use.fixed.update(names)
        return constant(expr, self.params)

    def param(self, name: str) -> fx.Node:
        """The node reading parameter ``name`` from the loss (an attribute of the same name, or ``p_<name>``)."""
        if name not in self.use.attrs:
            attr = name if not hasattr(nn.Module(), name) and name not in ("tap_shapes",) else f"p_{name}"
            setattr(self.lw.root, attr, self.params[name])
            self.use.attrs[name] = attr
        return self.lw.attr(self.use.attrs[name], self.params[name])

    def number(self, expr: ir.Expr):
        """A number expression as the graph computes it: parameters read from the loss, schedules from the
        epoch, constant parts folded."""
        lw = self.lw
        if isinstance(expr, ir.Call):  # a schedule
            b = binding(expr.op)
            kwargs = arguments(b.op, expr, self.value, 0)
            node = lw.fn(b.fn, (lw.epoch_node,), kwargs, name=expr.op)
            lw.examples[node] = run_example(expr, b.fn, (0,), kwargs, lw.examples)  # its value at epoch 0
            return node
        if isinstance(expr, ir.Name):
            return self.param(expr.id)
        if isinstance(expr, (ir.BinOp, ir.Neg)):
            parts = (expr.left, expr.right) if isinstance(expr, ir.BinOp) else (expr.operand,)
            args = [self.number(e) for e in parts]
            if not any(isinstance(a, fx.Node) for a in args):
                return weights.apply(expr.op, *args, expr.span) if isinstance(expr, ir.BinOp) else -args[0]
            fn = _ARITHMETIC[expr.op] if isinstance(expr, ir.BinOp) else operator.neg
            node = lw.graph.call_function(fn, tuple(args))
            lw.examples[node] = fn(*(lw.examples.get(a, a) for a in args))
            return node
        return constant(expr, self.params)

    def weight(self, expr: ir.Expr, term: str):
        """A term's weight: a number, an attribute ``<term>_weight`` computed from the parameters when the loss
        is built, or nodes (with a schedule over the epoch)."""
        names = {e.id for e in ir.walk(expr) if isinstance(e, ir.Name)}
        if any(isinstance(e, ir.Call) for e in ir.walk(expr)) or not names:
            return self.number(expr)
        attr = f"{term}_weight"
        value = constant(expr, self.params)
        setattr(self.lw.root, attr, value)
        self.use.derived[attr] = expr
        return self.lw.attr(attr, value)
