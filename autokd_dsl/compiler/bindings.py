"""Op bindings: each registry entry resolved to the code that runs it, and the marshalling of its arguments.

An op's :class:`~autokd_dsl.lang.ops.Impl` names a kernel of :mod:`autokd_dsl.standalone.kernels` or a module
builder of :mod:`autokd_dsl.compiler.modules`; :func:`binding` resolves the name once. :func:`arguments` turns a
call's arguments into keywords the same way for every op (numbers folded with the distiller's parameters, ints as
ints, an axis into the tensor ``dims`` it names, a symbol only when written); an op's ``rule`` (:data:`RULES`, one
small function each) adds what the generic marshalling cannot know, such as a softmax fused into the KL after it.

>>> b = binding("softmax")
>>> b.fn.__name__, sorted(b.keywords), b.inputs
('softmax', ['dims', 't'], 1)
>>> binding("crd").inputs, sorted(binding("crd").keywords)
(1, ['k', 'momentum', 'n_data', 't'])
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
from torch import fx

from ..errors import KDError
from ..lang import ir
from ..lang.check import apply_transform
from ..lang.kinds import Kind
from ..lang.ops import OPS, Op
from ..lang.printer import print_call
from ..standalone import kernels, teachers
from . import modules
from .taps import Model


@dataclass
class Val:
    """A value in the graph: its node, an example tensor, its kind, and where its probabilities live."""

    node: fx.Node
    example: torch.Tensor
    kind: Kind
    pdims: tuple[int, ...] | None = None
    logits: "Val | None" = None  # the input of the softmax that made this value (for fused kl)
    temp: float = 1.0
    batch_sized: bool = False  # a size beyond the batch axis is the batch size (batch relations)
    transposed: "Val | None" = None  # the value `transpose` made this one from (for pearson over columns)


@dataclass(frozen=True)
class Site:
    """Where a module-backed op is built: its call, the value(s) it applies to, the other side's value(s) at the
    same point, the tap, and the teacher with the example input (for ops that read the teacher). Ops across taps
    get one value per tap."""

    call: ir.Call
    value: Val | list[Val]
    other: Val | list[Val]
    tap: ir.Tap | None
    teacher: Model
    x: torch.Tensor


# ---- rules: what one op needs beyond the generic marshalling -------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """``extra``: keywords the rule adds to the kernel call; ``prepare``: transforms ``(call, v, kwargs) ->
    kwargs``, distances ``(s, t, kwargs) -> (s, t, kwargs)`` (it may pick other inputs); ``finish``: ``(out, v,
    kwargs)``, annotating a transform's output value."""

    extra: tuple[str, ...] = ()
    prepare: Callable | None = None
    finish: Callable | None = None


def _remember_distribution(out: Val, v: Val, kwargs: dict) -> None:
    """softmax / log_softmax: where the distribution lives, and its logits and temperature, so that a KL right
    after it works on the logits (one exact log-softmax)."""
    out.pdims, out.temp = kwargs["dims"], kwargs["t"]
    out.logits = v if out.kind.prob == "p" else None


def _log_form(call, v: Val, kwargs: dict) -> dict:
    return {**kwargs, "log": v.kind.prob == "logp"}


def _patches_fit(call, v: Val, kwargs: dict) -> dict:
    h, w = v.example.shape[2:]
    n = kwargs["n"]
    if h % n or w % n:
        raise KDError(f"`patches({n})` needs a height and width divisible by {n}; this map is {h}×{w}",
                      span=call.span, hint="pick a smaller n, or pool first")
    return kwargs


def _divergence(s: Val, t: Val, kwargs: dict):
    """kl / js: on logits with the op's temperature; right after a shared softmax, on that softmax's logits
    (fused: an exact log-softmax); otherwise on the probabilities (or log-probabilities) as they are."""
    kwargs = {**kwargs, "mode": "p", "dims": s.pdims or (1,)}
    if s.kind.prob is None:
        return s, t, {**kwargs, "mode": "logits"}
    if s.logits is not None and t.logits is not None and s.temp == t.temp and s.pdims == t.pdims:
        return s.logits, t.logits, {**kwargs, "mode": "logits", "t": s.temp}
    return s, t, {**kwargs, "t": 1.0, "mode": "logp" if s.kind.prob == "logp" else "p"}


def _remember_transposed(out: Val, v: Val, kwargs: dict) -> None:
    out.transposed = v


def _correlation(s: Val, t: Val, kwargs: dict):
    """pearson right after `transpose` on both sides: the same correlation over the originals' columns (no
    transposed views, which cost a copy or strided reductions, forward and backward); right after a softmax over
    the rows, their mean is 1/K (no reduction to compute it)."""
    if s.transposed is not None and t.transposed is not None and s.example.dim() == 2:
        return s.transposed, t.transposed, {**kwargs, "dim": 0}
    if all(v.logits is not None and v.pdims == (1,) and v.example.dim() == 2 for v in (s, t)):
        return s, t, {**kwargs, "mean": 1.0 / s.example.shape[1]}
    return s, t, kwargs


def _ce(s: Val, t: Val, kwargs: dict):
    return s, t, {**kwargs, "soft": t.kind.form != "labels"}


RULES: dict[str, Rule] = {
    "": Rule(),
    "softmax": Rule(finish=_remember_distribution),
    "log_form": Rule(extra=("log",), prepare=_log_form),  # target_binary on log-probabilities stays in logs
    "patches": Rule(prepare=_patches_fit),
    "divergence": Rule(extra=("mode", "dims"), prepare=_divergence),
    "ce": Rule(extra=("soft",), prepare=_ce),  # labels, or the teacher's distribution
    "transpose": Rule(finish=_remember_transposed),
    "correlation": Rule(extra=("dim", "mean"), prepare=_correlation),
}


# ---- resolving an entry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """An op with its implementation: ``fn`` (a kernel, or a module builder taking a :class:`Site`) and rule."""

    op: Op
    fn: Callable
    rule: Rule

    @property
    def keywords(self) -> frozenset[str]:
        """The keyword names the compiler passes to ``fn``: the op's parameters (an axis as ``dims``) and the
        rule's extras."""
        return frozenset(keyword(p) for p in self.op.params) | frozenset(self.rule.extra)

    @property
    def inputs(self) -> int | None:
        """How many positional inputs ``fn`` takes (None: one per tap, ``*xs``)."""
        op = self.op
        if op.module or op.role == "weight":
            return 1  # a Site; the epoch
        if op.role == "distance" or op.random or "labels" in op.needs:
            return 2  # (student, teacher) or (value, labels)
        return None if op.across else 1


def keyword(param) -> str:
    return "dims" if param.type == "axis" else param.name


@lru_cache(maxsize=None)
def binding(name: str) -> Binding:
    """The binding of op ``name`` (a LookupError naming what is missing when the registry names no code)."""
    op = OPS[name]
    home = modules if op.module else teachers if op.per_teacher else kernels
    fn = getattr(home, op.impl_name, None)
    if not callable(fn):
        raise LookupError(f"op `{name}` names {op.impl.kind} `{op.impl_name}`, which {home.__name__} does not define")
    if op.impl.rule not in RULES:
        raise LookupError(f"op `{name}` names argument rule `{op.impl.rule}`, which the bindings do not define")
    return Binding(op, fn, RULES[op.impl.rule])


def signature_problems(b: Binding) -> list[str]:
    """Where ``b.fn``'s signature does not take what the compiler passes (empty when it fits)."""
    params = list(inspect.signature(b.fn).parameters.values())
    if b.inputs is None:  # one input per tap
        if not params or params[0].kind is not params[0].VAR_POSITIONAL:
            return [f"{b.fn.__name__} must take one input per tap (*xs)"]
        named, problems = params[1:], []
    else:
        positional = [p for p in params[:b.inputs] if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        named = params[b.inputs:]
        problems = [] if len(positional) == b.inputs else [
            f"{b.fn.__name__} takes {len(positional)} inputs, the op gives {b.inputs}"]
    names = {p.name for p in named}
    problems += [f"{b.fn.__name__} has no parameter `{k}`" for k in sorted(b.keywords - names)]
    problems += [f"{b.fn.__name__} requires `{p.name}`, which the op does not give" for p in named
                 if p.default is p.empty and p.kind is not p.VAR_KEYWORD and p.name not in b.keywords]
    return problems


# ---- marshalling ------------------------------------------------------------------------------------------


def axis_dims(axis: str | None, ndim: int) -> tuple[int, ...]:
    """The tensor dims an axis name means for a tensor of ``ndim`` dims.

    >>> axis_dims("hw", 4), axis_dims(None, 3), axis_dims("n", 2)
    ((2, 3), (2,), (0,))
    """
    if axis == "n":
        return (0,)
    if ndim == 4:
        return {"c": (1,), "hw": (2, 3), "chw": (1, 2, 3), "nhw": (0, 2, 3)}.get(axis, (1,))
    if ndim == 3:
        return {"l": (1,), "d": (2,)}.get(axis, (2,))
    return (1,)


def arguments(op: Op, call: ir.Call, value: Callable[[ir.Expr, bool], object], ndim: int) -> dict:
    """The keywords of ``call`` for its implementation. ``value(expr, live)`` gives a number argument: ``live``
    where the kernel may read it from the loss's parameters at run time (a number a kernel takes), otherwise
    fixed when compiling (ints, and what sizes a module). ``ndim`` is the rank of the tensor the op applies to
    (for an axis); a distance's axis is passed only when written."""
    kwargs: dict = {}
    for param in op.params:
        expr = call.arg(param.name)
        if param.type == "axis":
            axis = expr.id if isinstance(expr, ir.Name) else None
            if op.role != "distance" or axis is not None:
                kwargs["dims"] = axis_dims(axis, ndim)
        elif param.type == "symbol":  # passed only when written, so the kernel's default stays implicit
            kwargs.update({param.name: expr.id} if isinstance(expr, ir.Name) else {})
        elif expr is not None or param.default is not None:
            live = not op.module and param.type in ("number", "positive", "fraction")
            number = value(expr, live) if expr is not None else param.default
            kwargs[param.name] = int(number) if param.type == "int" else number
    return kwargs


def transform_call(call: ir.Call, v: Val, value: Callable, labels: Val) -> tuple[list[Val], dict]:
    """The inputs and keywords of a kernel transform applied to ``v``: ``v`` (and the labels where the op
    needs them), and the call's arguments with what the op's rule adds."""
    b = binding(call.op)
    kwargs = arguments(b.op, call, value, v.example.dim())
    kwargs = b.rule.prepare(call, v, kwargs) if b.rule.prepare else kwargs
    return ([v, labels] if "labels" in b.op.needs else [v]), kwargs


def finish_transform(call: ir.Call, out: Val, v: Val, kwargs: dict) -> None:
    """Annotate a kernel transform's output: the rule's notes, and where its probabilities live."""
    rule = binding(call.op).rule
    if rule.finish:
        rule.finish(out, v, kwargs)
    if out.kind.prob and out.pdims is None:
        out.pdims = v.pdims or (1,)


def distance_call(call: ir.Call, s: Val, t: Val, value: Callable) -> tuple[Val, Val, dict]:
    """The two inputs and the keywords of a kernel distance (the rule may pick other inputs, e.g. logits)."""
    b = binding(call.op)
    kwargs = arguments(b.op, call, value, s.example.dim())
    return b.rule.prepare(s, t, kwargs) if b.rule.prepare else (s, t, kwargs)


def transform_kinds(call: ir.Call, s: Val, t: Val, student: str, teacher: str) -> tuple[Kind, Kind]:
    """The kinds a transform gives on both sides; a located error where it does not take these."""
    kinds = apply_transform(call, (s.kind, t.kind))
    if kinds is None:
        raise KDError(f"`{print_call(call)}` does not take {s.kind.describe()} (student {student}) "
                      f"and {t.kind.describe()} (teacher {teacher})", span=call.span,
                      hint=f"`{call.op}` takes {OPS[call.op].accepts()}")
    return kinds


def run_example(call: ir.Call, fn: Callable, args: tuple, kwargs: dict, examples: dict):
    """Run an implementation on example inputs (keywords that are nodes read from ``examples``, their
    compile-time values); a located error where it cannot run on them."""
    try:
        with torch.no_grad():
            return fn(*args, **{k: examples.get(v, v) if isinstance(v, fx.Node) else v for k, v in kwargs.items()})
    except (RuntimeError, ValueError, IndexError) as err:
        shapes = " and ".join(shape_text(tuple(a.shape[1:])) for a in args)
        raise KDError(f"`{print_call(call)}` cannot run on {shapes}: {str(err).splitlines()[0]}",
                      span=call.span) from None


def shape_text(shape: tuple) -> str:
    return "×".join(str(d) for d in shape) or "scalar"


def check_module_input(site: Site) -> None:
    """A learnable module is sized from the shapes without the batch axis: refuse values sized by the batch."""
    values = site.value if isinstance(site.value, list) else [site.value, site.other]
    if OPS[site.call.op].learnable and any(v.batch_sized for v in values):
        raise KDError(f"`{site.call.op}` would be sized from a batch relation, whose size is the batch size (2 "
                      "when compiled, another in training)", span=site.call.span,
                      hint=f"compare relations directly, or apply `{site.call.op}` before the relation, e.g. "
                           f"`stage3 -> {site.call.op} -> batch_gram -> mse`")
