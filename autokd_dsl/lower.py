"""Lower a checked distiller onto real models: a `torch.fx` graph of the loss with readable node names.

Every value is computed once per (side, tap, transform prefix), so a transform shared by several terms appears
once in the graph. The compiler runs each kernel on example activations as it builds the graph: that gives
the real shapes and kinds, and a located error as soon as something does not fit.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from . import ir, kernels
from .check import apply_transform, distance_fits
from .connectors import Connector, connector_fits
from .errors import KDError
from .kinds import Kind
from .ops import OPS
from .printer import print_call, print_point
from .taps import example_input, probe, resolve_point


@dataclass
class Val:
    """A value in the graph: its node, an example tensor, its kind, and where its probabilities live."""

    node: fx.Node
    example: torch.Tensor
    kind: Kind
    pdims: tuple[int, ...] | None = None
    logits: "Val | None" = None  # the input of the softmax that made this value (for fused kl)
    temp: float = 1.0


@dataclass
class Model:
    net: nn.Module
    name: str
    taps: dict[str, str] = field(default_factory=dict)  # placeholder name → spec


def _ident(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_") or "x"


class Lowering:
    def __init__(self, block: ir.Block, teacher: Model, student: Model, input_size, batch: int = 4):
        self.block, self.teacher, self.student = block, teacher, student
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.memo: dict[tuple, Val] = {}
        self.params = {p.name: _constant(p.value, {}) for p in block.params}
        self.x = example_input(input_size, batch)
        self.labels = torch.arange(batch) % 2

    # ---- graph inputs ----------------------------------------------------------------------------
    def collect_taps(self) -> None:
        for term in self.block.terms:
            for tap in term.taps:
                self.tap_name(self.student, tap.student, "s")
                if not tap.teacher_point.is_labels:
                    self.tap_name(self.teacher, tap.teacher_point, "t")

    def tap_name(self, model: Model, point: ir.Point, prefix: str) -> str:
        spec = resolve_point(model.net, point, model.name)
        for name, known in model.taps.items():
            if known == spec:
                return name
        base = f"{prefix}_{_ident(point.path + ('_in' if point.io == 'in' else '') + (f'{point.call}' if point.call else ''))}"
        name, k = base, 2
        while name in model.taps:
            name, k = f"{base}_{k}", k + 1
        model.taps[name] = spec
        return name

    def build(self) -> fx.GraphModule:
        self.collect_taps()
        s_ex = probe(self.student.net, self.student.taps, self.x, self.student.name)
        t_ex = probe(self.teacher.net, self.teacher.taps, self.x, self.teacher.name)
        self.inputs = {}
        for name in self.student.taps:
            self.inputs[name] = (self.graph.placeholder(name), s_ex[name])
        for name in self.teacher.taps:
            self.inputs[name] = (self.graph.placeholder(name), t_ex[name])
        self.labels_node = self.graph.placeholder("labels", default_value=None)
        self.epoch_node = self.graph.placeholder("epoch", default_value=0)
        for name in self.teacher.taps:  # the teacher side never carries gradients
            node, ex = self.inputs[name]
            self.inputs[name] = (self.graph.call_method("detach", (node,)), ex)
            self.inputs[name][0]._rename(f"{name}_detached")
        terms = {}
        for term, name in zip(self.block.terms, term_names(self.block)):
            terms[name] = self.term(term, name)
        out = dict(terms)
        out["total"] = self.fn(kernels.total, tuple(terms.values()), name="total")
        self.graph.output(out)
        self.graph.eliminate_dead_code()
        return fx.GraphModule(self.root, self.graph, class_name="DistillerLoss")

    # ---- terms -----------------------------------------------------------------------------------------
    def term(self, term: ir.Term, name: str) -> fx.Node:
        parts = [self.tap_term(term, tap, name) for tap in term.taps]
        value = parts[0]
        for part in parts[1:]:
            value = self.graph.call_function(operator.add, (value, part))
        weight = self.weight(term.weight)
        if isinstance(weight, (int, float)) and weight == 1:
            return self._named(value, name)
        if not isinstance(weight, fx.Node):
            weight = float(f"{weight:.12g}")
        return self.fn(operator.mul, (value, weight), name=name)

    def _named(self, node: fx.Node, name: str) -> fx.Node:
        node._rename(name)
        return node

    def fn(self, target, args, kwargs=None, name: str | None = None) -> fx.Node:
        """A call_function node named ``name`` (made unique) from the start."""
        return self.graph.create_node("call_function", target, tuple(args), kwargs or {}, name=name)

    def source_val(self, model: Model, point: ir.Point, prefix: str) -> Val:
        name = self.tap_name(model, point, prefix)
        node, ex = self.inputs[name]
        return Val(node, ex, _base_kind(model, point, ex))

    def tap_term(self, term: ir.Term, tap: ir.Tap, term_name: str) -> fx.Node:
        s = self.source_val(self.student, tap.student, "s")
        if tap.teacher_point.is_labels:
            t = Val(self.labels_node, self.labels, Kind("labels"))
        else:
            t = self.source_val(self.teacher, tap.teacher_point, "t")
        key = (print_point(tap.student), print_point(tap.teacher_point))
        for call in term.transforms:
            s, t, key = self.transform(call, s, t, key, tap)
        return self.distance(term.distance, s, t, tap, term_name)

    # ---- transforms --------------------------------------------------------------------------------------
    def transform(self, call: ir.Call, s: Val, t: Val, key: tuple, tap: ir.Tap):
        op = OPS[call.op]
        kinds = apply_transform(call, (s.kind, t.kind))
        if kinds is None:
            raise KDError(f"`{print_call(call)}` does not take {s.kind.describe()} (student {self.student.name}) "
                          f"and {t.kind.describe()} (teacher {self.teacher.name})", span=call.span,
                          hint=f"`{call.op}` takes {op.accepts()}")
        side = call.side or (op.side if op.side != "both" else None)
        step = print_call(call)
        new_key = (key[0] + "|" + step if side != "teacher" else key[0],
                   key[1] + "|" + step if side != "student" else key[1])
        if op.random:
            s2, t2 = self.paired(call, s, t, kinds, new_key)
        else:
            s2 = self.one_side(call, s, kinds[0], ("s", new_key[0]), t) if side != "teacher" else s
            t2 = self.one_side(call, t, kinds[1], ("t", new_key[1]), None) if side != "student" else t
        return s2, t2, new_key

    def one_side(self, call: ir.Call, v: Val, kind: Kind, key: tuple, teacher: Val | None) -> Val:
        if key in self.memo:
            return self.memo[key]
        op = OPS[call.op]
        base = v.node.name.removesuffix("_detached")
        if op.learnable:
            out = self.connector(call, v, teacher, base)
        else:
            kwargs = self.kernel_args(call, v)
            fn = getattr(kernels, call.op)
            node = self.fn(fn, (v.node,), kwargs, name=f"{base}_{call.op}")
            example = self.run(call, fn, (v.example,), kwargs)
            out = Val(node, example, kind)
            if call.op in ("softmax", "log_softmax"):
                out.pdims, out.logits, out.temp = kwargs["dims"], (v if call.op == "softmax" else None), kwargs["t"]
            elif kind.prob:
                out.pdims = v.pdims or (1,)
        self.memo[key] = out
        return out

    def paired(self, call: ir.Call, s: Val, t: Val, kinds, key: tuple) -> tuple[Val, Val]:
        memo_key = ("pair", key)
        if memo_key in self.memo:
            return self.memo[memo_key]
        fn = getattr(kernels, call.op)
        kwargs = self.kernel_args(call, s)
        pair = self.fn(fn, (s.node, t.node), kwargs, name=f"{call.op}_{s.node.name}")
        s_ex, t_ex = self.run(call, fn, (s.example, t.example), kwargs)
        outs = []
        for i, (v, ex, kind) in enumerate(((s, s_ex, kinds[0]), (t, t_ex, kinds[1]))):
            node = self.fn(operator.getitem, (pair, i), name=f"{v.node.name.removesuffix('_detached')}_{call.op}")
            outs.append(Val(node, ex, kind, v.pdims))
        self.memo[memo_key] = tuple(outs)
        return self.memo[memo_key]

    def connector(self, call: ir.Call, v: Val, teacher: Val | None, base: str) -> Val:
        s_shape, t_shape = tuple(v.example.shape[1:]), tuple(teacher.example.shape[1:])
        if not connector_fits(s_shape, t_shape):
            raise KDError(f"no connector maps the student's {_shape(s_shape)} onto the teacher's {_shape(t_shape)}",
                          span=call.span, hint="adapt maps maps, tokens and vectors onto maps, tokens or vectors")
        name = self.graph._graph_namespace.create_name(f"adapt_{base.removeprefix('s_')}", None)
        self.root.add_module(name, Connector(s_shape, t_shape))
        node = self.graph.call_module(name, (v.node,))
        module = getattr(self.root, name)
        module.eval()
        with torch.no_grad():
            example = module(v.example)
        module.train()
        return Val(node, example, teacher.kind, teacher.pdims)

    def kernel_args(self, call: ir.Call, v: Val) -> dict:
        op = OPS[call.op]
        kwargs = {}
        for param in op.params:
            expr = call.arg(param.name)
            if param.type == "axis":
                kwargs["dims"] = axis_dims(param_value(expr), v.example.dim())
            elif expr is not None:
                kwargs[param.name] = _constant(expr, self.params)
            elif param.default is not None:
                kwargs[param.name] = param.default
        if call.op == "pool" or call.op == "patches":
            kwargs = {k: int(val) for k, val in kwargs.items()}
        if call.op == "patches":
            h, w = v.example.shape[2:]
            n = kwargs["n"]
            if h % n or w % n:
                raise KDError(f"`patches({n})` needs a height and width divisible by {n}; this map is {h}×{w}",
                              span=call.span, hint="pick a smaller n, or pool first")
        return kwargs

    def run(self, call: ir.Call, fn, args, kwargs):
        try:
            with torch.no_grad():
                return fn(*args, **kwargs)
        except (RuntimeError, ValueError, IndexError) as err:
            shapes = " and ".join(_shape(tuple(a.shape[1:])) for a in args)
            raise KDError(f"`{print_call(call)}` cannot run on {shapes}: {str(err).splitlines()[0]}",
                          span=call.span) from None

    # ---- distances ---------------------------------------------------------------------------------------
    def distance(self, call: ir.Call, s: Val, t: Val, tap: ir.Tap, term_name: str) -> fx.Node:
        if not distance_fits(call, (s.kind, t.kind)):
            raise KDError(f"`{call.op}` does not take {s.kind.describe()} (student {self.student.name}) with "
                          f"{t.kind.describe()} (teacher {self.teacher.name})", span=call.span,
                          hint=f"`{call.op}` takes {OPS[call.op].accepts()}")
        if t.kind.form != "labels" and t.example.shape != s.example.shape and call.op != "ce":
            raise KDError(
                f"`{call.op}` compares {_shape(tuple(s.example.shape[1:]))} from {self.student.name} with "
                f"{_shape(tuple(t.example.shape[1:]))} from {self.teacher.name} (tap `{_tap_text(tap)}`): "
                "the shapes differ", span=call.span,
                hint="add a student-side connector before the distance: `-> adapt ->`")
        fn = getattr(kernels, call.op)
        args, kwargs = self.distance_args(call, s, t)
        node = self.fn(fn, args, kwargs, name=f"{term_name}_{call.op}")
        example = self.run(call, fn, tuple(a.example if isinstance(a, fx.Node) else a for a in
                                           [self._example(n, s, t) for n in args]), kwargs)
        if not torch.is_tensor(example) or example.dim() != 0:
            raise KDError(f"`{call.op}` did not give a scalar", span=call.span)
        return node

    def _example(self, node, s: Val, t: Val):
        for v in (s, t, s.logits, t.logits):
            if v is not None and v.node is node:
                return v.example
        return node

    def distance_args(self, call: ir.Call, s: Val, t: Val):
        op = OPS[call.op]
        own = {p.name: _constant(call.arg(p.name), self.params) if call.arg(p.name) is not None
               and p.type != "symbol" else p.default for p in op.params}
        if call.op in ("kl", "js"):
            kwargs = {"mode": "p", "dims": s.pdims or (1,), "temp": 1.0}
            if call.op == "kl":
                reduce = call.arg("reduce")
                kwargs["reduce"] = reduce.id if isinstance(reduce, ir.Name) else "batch"
            if s.kind.prob is None:
                kwargs.update(mode="logits", temp=own["t"])
                return (s.node, t.node), kwargs
            if s.logits is not None and t.logits is not None and s.temp == t.temp and s.pdims == t.pdims:
                kwargs.update(mode="logits", temp=s.temp)  # fused softmax → kl: exact log-softmax
                return (s.logits.node, t.logits.node), kwargs
            if s.kind.prob == "logp":
                kwargs["mode"] = "logp"
            return (s.node, t.node), kwargs
        if call.op == "ce":
            soft = t.kind.form != "labels"
            return (s.node, t.node), {"soft": soft, "temp": own["t"]}
        return (s.node, t.node), {k: v for k, v in own.items() if v is not None}

    # ---- weights -----------------------------------------------------------------------------------------
    def weight(self, expr: ir.Expr):
        if isinstance(expr, ir.Call):
            op = OPS[expr.op]
            args = [_constant(expr.arg(p.name), self.params) for p in op.params]
            return self.fn(getattr(kernels, expr.op), (self.epoch_node, *args), name=expr.op)
        if isinstance(expr, ir.BinOp):
            left, right = self.weight(expr.left), self.weight(expr.right)
            if not isinstance(left, fx.Node) and not isinstance(right, fx.Node):
                return _apply(expr.op, left, right)
            fn = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
                  "^": operator.pow}[expr.op]
            return self.graph.call_function(fn, (left, right))
        if isinstance(expr, ir.Neg):
            inner = self.weight(expr.operand)
            return -inner if not isinstance(inner, fx.Node) else self.graph.call_function(operator.neg, (inner,))
        return _constant(expr, self.params)


def term_names(block: ir.Block) -> list[str]:
    """Each term's label, or `<first tap>_<distance>` made unique."""
    out: list[str] = []
    for term in block.terms:
        if term.label:
            base = term.label
        else:
            first = term.taps[0]
            point = first.student if isinstance(first, ir.Tap) else first.options[0].student
            dist = term.distance.op if isinstance(term.distance, ir.Call) else "term"
            base = _ident(f"{point.path}_{dist}")
        name, k = base, 2
        while name in out or name == "total":
            name, k = f"{base}_{k}", k + 1
        out.append(name)
    return out


def axis_dims(axis: str | None, ndim: int) -> tuple[int, ...]:
    """The tensor dims an axis name means for a tensor of ``ndim`` dims."""
    if axis == "n":
        return (0,)
    if ndim == 4:
        return {"c": (1,), "hw": (2, 3), "chw": (1, 2, 3)}.get(axis, (1,))
    if ndim == 3:
        return {"l": (1,), "d": (2,)}.get(axis, (2,))
    return (1,)


def param_value(expr):
    return expr.id if isinstance(expr, ir.Name) else None


def _apply(op: str, a: float, b: float) -> float:
    if op == "/" and b == 0:
        raise KDError("division by zero in a weight")
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0, "^": a ** b}[op]


def _constant(expr: ir.Expr, params: dict) -> float:
    """Fold a number expression with the distiller's parameter values."""
    if isinstance(expr, ir.Num):
        return expr.value
    if isinstance(expr, ir.Name):
        return params[expr.id]
    if isinstance(expr, ir.Neg):
        return -_constant(expr.operand, params)
    if isinstance(expr, ir.BinOp):
        return _apply(expr.op, _constant(expr.left, params), _constant(expr.right, params))
    raise KDError(f"expected a number, got `{expr}`", span=getattr(expr, "span", None))


def _base_kind(model: Model, point: ir.Point, example: torch.Tensor) -> Kind:
    if example.dim() == 4:
        return Kind("map")
    if example.dim() == 3:
        return Kind("tokens")
    if example.dim() == 2:
        logits_spec = getattr(model.net, "kd_aliases", {}).get("logits")
        spec = resolve_point(model.net, point, model.name)
        return Kind("logits") if point.path == "logits" or spec == logits_spec else Kind("vector")
    raise KDError(f"tap `{print_point(point)}` of {model.name} has shape {tuple(example.shape)}; "
                  "taps must be maps, tokens or vectors", span=point.span)


def _shape(shape: tuple) -> str:
    return "×".join(str(d) for d in shape) or "scalar"


def _tap_text(tap: ir.Tap) -> str:
    from .printer import print_tap

    return print_tap(tap)
