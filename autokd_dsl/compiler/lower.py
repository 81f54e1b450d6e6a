"""Lower a checked distiller onto real models: a `torch.fx` graph of the loss with readable node names.

Every value is computed once per (side, tap, transform prefix), so a transform shared by several terms appears
once in the graph. The compiler runs each kernel on example activations as it builds the graph: that gives
the real shapes and kinds, and a located error as soon as something does not fit.
"""

from __future__ import annotations

import copy
import operator
import re
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from ..errors import KDError
from ..lang import ir
from ..lang.check import _distance_hint, apply_transform, distance_fits
from ..lang.kinds import Kind
from ..lang.ops import OPS
from ..lang.printer import print_call, print_point
from ..standalone import kernels
from ..standalone import teachers as tw
from . import modules
from .taps import example_input, probe_examples, resolve_point


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
class Chain:
    """One tap's pipeline inside a term: its current student and teacher values and their memo keys."""

    s: Val
    t: Val
    key: tuple
    tap: ir.Tap


@dataclass
class Model:
    net: nn.Module
    name: str
    taps: dict[str, str] = field(default_factory=dict)  # placeholder name → spec


def _ident(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_") or "x"


class Lowering:
    """``teacher`` is one :class:`Model` or a list of them (several teachers, numbered from 1 in order)."""

    def __init__(self, block: ir.Block, teacher: "Model | list[Model]", student: Model, input_size, batch: int = 2):
        self.teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        self.block, self.teacher, self.student = block, self.teachers[0], student
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.memo: dict[tuple, Val] = {}
        self.params = {p.name: _constant(p.value, {}) for p in block.params}
        self.x = example_input(input_size, batch)
        self.labels = torch.arange(batch) % 2
        self.index = torch.arange(batch)  # example dataset positions of the batch's samples

    # ---- graph inputs ----------------------------------------------------------------------------
    def collect_taps(self) -> None:
        for term in self.block.terms:
            for tap in term.taps:
                self.tap_name(self.student, tap.student, "s")
                if not tap.teacher_point.is_labels:
                    for k in self.teacher_numbers(tap):
                        self.tap_name(self.teachers[k - 1], tap.teacher_point, self.prefix(k))
            if _uses_op(term, "confidence"):  # CA-MKD's weights read every teacher's logits
                for k, model in enumerate(self.teachers, 1):
                    self.tap_name(model, ir.Point("logits"), self.prefix(k))

    def prefix(self, k: int) -> str:
        """Teacher k's placeholder prefix: `t` with one teacher, `t1`, `t2`, … with several."""
        return "t" if len(self.teachers) == 1 else f"t{k}"

    def teacher_numbers(self, tap: ir.Tap) -> list[int]:
        """The teachers a tap reads: each of them (`teachers.x`), or the one it names."""
        point = tap.teacher_point
        if tap.each_teacher:
            return list(range(1, len(self.teachers) + 1))
        return [point.teacher_number or 1]

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
        from .teachers import check_classes, require_teachers

        require_teachers(self.block, [model.name for model in self.teachers])
        self.collect_taps()
        if len(self.teachers) > 1:
            check_classes(self)
        s_ex = probe_examples(self.student.net, self.student.taps, self.x, self.student.name)
        t_ex = {}
        for model in self.teachers:
            t_ex.update(probe_examples(model.net, model.taps, self.x, model.name))
        self.labels = self.labels.to(next(iter(s_ex.values())).device) if s_ex else self.labels
        self.inputs = {}
        t_names = [name for model in self.teachers for name in model.taps]
        for name in self.student.taps:
            self.inputs[name] = (self.graph.placeholder(name), s_ex[name])
        for name in t_names:
            self.inputs[name] = (self.graph.placeholder(name), t_ex[name])
        self.labels_node = self.graph.placeholder("labels", default_value=None)
        self.epoch_node = self.graph.placeholder("epoch", default_value=0)
        self.index_node = self.graph.placeholder("index", default_value=None) if self.uses("index") else None
        for name in t_names:  # the teacher side never carries gradients
            node, ex = self.inputs[name]
            self.inputs[name] = (self.graph.call_method("detach", (node,)), ex)
            self.inputs[name][0]._rename(f"{name}_detached")
        terms = {}
        for term, name in zip(self.block.terms, term_names(self.block)):
            terms[name] = self.term(term, name)
        out = dict(terms)
        out["total"] = self.fn(kernels.total, tuple(terms.values()), name="total")
        self.graph.output(out)
        # dead-code elimination asks the owning module whether call_module nodes (connectors) are pure
        gm = fx.GraphModule(self.root, self.graph, class_name="DistillerLoss")
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
        return gm

    def uses(self, graph_input: str) -> bool:
        """Does an op of the distiller take this graph input (`index`)?"""
        return any(graph_input in OPS[c.op].needs for term in self.block.terms for c in term.steps
                   if isinstance(c, ir.Call) and c.op in OPS)

    # ---- terms -----------------------------------------------------------------------------------------
    def term(self, term: ir.Term, name: str) -> fx.Node:
        """Each tap's pipeline and distance, summed; with an op across taps the pipelines run in lockstep so
        that it sees all of them (otherwise tap after tap, which keeps each tap's nodes together)."""
        if any(tap.each_teacher for tap in term.taps):
            from .teachers import each_teacher

            return each_teacher(self, term, name)
        k = self.teacher_numbers(term.taps[0])[0] if not term.taps[0].teacher_point.is_labels else 1
        self.teacher = self.teachers[k - 1]
        tag = f"@t{k}" if len(self.teachers) > 1 else ""
        parts = [self.distance(term.distance, c.s, c.t, c.tap, name)
                 for taps in _groups(term) for c in self.group_chains(term, taps, tag)]
        self.teacher = self.teachers[0]
        return self.weighted(self.add_all(parts), term.weight, name)

    def chains(self, term: ir.Term, tag: str = "") -> list[Chain]:
        """Every tap's pipeline of a term, against the current teacher; ``tag`` keeps the values that depend on
        a teacher (its side, learnable connectors sized for it) apart from another teacher's."""
        return [c for taps in _groups(term) for c in self.group_chains(term, taps, tag)]

    def group_chains(self, term: ir.Term, taps, tag: str = "") -> list[Chain]:
        chains = [self.start(tap, tag) for tap in taps]
        for call in term.transforms:
            if OPS[call.op].across:
                chains = self.across(call, chains)
            else:
                chains = [Chain(*self.transform(call, c.s, c.t, c.key, c.tap, tag), c.tap) for c in chains]
        return chains

    def add_all(self, parts: list) -> fx.Node:
        value = parts[0]
        for part in parts[1:]:
            value = self.graph.call_function(operator.add, (value, part))
        return value

    def weighted(self, value: fx.Node, expr: ir.Expr, name: str) -> fx.Node:
        weight = self.weight(expr)
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

    def start(self, tap: ir.Tap, tag: str = "") -> Chain:
        s = self.source_val(self.student, tap.student, "s")
        if tap.teacher_point.is_labels:
            t = Val(self.labels_node, self.labels, Kind("labels"))
        else:
            t = self.source_val(self.teacher, tap.teacher_point, self.prefix(self.teachers.index(self.teacher) + 1))
        return Chain(s, t, (print_point(tap.student), tag + print_point(tap.teacher_point)), tap)

    # ---- transforms --------------------------------------------------------------------------------------
    def transform(self, call: ir.Call, s: Val, t: Val, key: tuple, tap: ir.Tap, tag: str = ""):
        op = OPS[call.op]
        kinds = apply_transform(call, (s.kind, t.kind))
        if kinds is None:
            raise KDError(f"`{print_call(call)}` does not take {s.kind.describe()} (student {self.student.name}) "
                          f"and {t.kind.describe()} (teacher {self.teacher.name})", span=call.span,
                          hint=f"`{call.op}` takes {op.accepts()}")
        side = call.side or (op.side if op.side != "both" else None)
        step = print_call(call)
        s_step = step + (tag if op.module or op.random else "")  # sized for, or drawn with, this teacher
        new_key = (key[0] + "|" + s_step if side != "teacher" else key[0],
                   key[1] + "|" + step if side != "student" else key[1])
        if op.random:
            s2, t2 = self.paired(call, s, t, kinds, new_key, side)
        else:
            s2 = self.one_side(call, s, kinds[0], ("s", new_key[0]), t, tap) if side != "teacher" else s
            t2 = self.one_side(call, t, kinds[1], ("t", new_key[1]), s, tap) if side != "student" else t
        return s2, t2, new_key

    def one_side(self, call: ir.Call, v: Val, kind: Kind, key: tuple, other: Val, tap: ir.Tap) -> Val:
        if key in self.memo:
            return self.memo[key]
        op = OPS[call.op]
        base = v.node.name.removesuffix("_detached")
        if op.module:
            module = modules.build(self, call, v, other, tap)
            out = self.module_val(call, module, base, [v], kind, other.pdims if op.learnable else None)
        else:
            kwargs = self.kernel_args(call, v)
            fn = getattr(kernels, call.op)
            args, examples = (v.node,), (v.example,)
            if "labels" in op.needs:
                args, examples = (v.node, self.labels_node), (v.example, self.labels)
                kwargs.update({"log": v.kind.prob == "logp"} if call.op == "target_binary" else {})
            node = self.fn(fn, args, kwargs, name=f"{base}_{call.op}")
            example = self.run(call, fn, examples, kwargs)
            out = Val(node, example, kind)
            if call.op in ("softmax", "log_softmax"):
                out.pdims, out.logits, out.temp = kwargs["dims"], (v if call.op == "softmax" else None), kwargs["t"]
            elif kind.prob:
                out.pdims = v.pdims or (1,)
        self.memo[key] = out
        return out

    def paired(self, call: ir.Call, s: Val, t: Val, kinds, key: tuple, side: str | None) -> tuple[Val, Val]:
        """A random op: one draw for both sides (the same mask), or applied to one side only."""
        memo_key = ("pair", side, key)
        if memo_key in self.memo:
            return self.memo[memo_key]
        fn = getattr(kernels, call.op)
        kwargs = self.kernel_args(call, s)
        pair = self.fn(fn, (s.node, t.node), kwargs, name=f"{call.op}_{s.node.name}")
        s_ex, t_ex = self.run(call, fn, (s.example, t.example), kwargs)
        outs = []
        for i, (v, ex, kind) in enumerate(((s, s_ex, kinds[0]), (t, t_ex, kinds[1]))):
            if side is not None and side != ("student", "teacher")[i]:
                outs.append(v)
                continue
            node = self.fn(operator.getitem, (pair, i), name=f"{v.node.name.removesuffix('_detached')}_{call.op}")
            outs.append(Val(node, ex, kind, v.pdims))
        self.memo[memo_key] = tuple(outs)
        return self.memo[memo_key]

    def module_val(self, call: ir.Call, module: nn.Module, base: str, inputs: list, kind: Kind,
                   pdims=None) -> Val:
        """Register ``module`` as a submodule, call it on ``inputs`` and run it once on their examples."""
        op = OPS[call.op]
        stem = base.removeprefix({"student": "s_", "teacher": "t_"}.get(op.side, "&"))
        name, k = f"{call.op}_{stem}", 2
        while hasattr(self.root, name):
            name, k = f"{call.op}_{stem}_{k}", k + 1
        self.root.add_module(name, module.to(inputs[0].example.device))
        node = self.graph.create_node("call_module", name, tuple(v.node for v in inputs), {}, name=f"{base}_{call.op}")
        probe_module = copy.deepcopy(module) if op.stateful else module  # an example must not change the state
        probe_module.eval()
        try:
            with torch.no_grad():
                example = probe_module(*(v.example for v in inputs))
        except (RuntimeError, ValueError, IndexError) as err:
            shapes = " and ".join(_shape(tuple(v.example.shape[1:])) for v in inputs)
            raise KDError(f"`{print_call(call)}` cannot run on {shapes}: {str(err).splitlines()[0]}",
                          span=call.span) from None
        finally:
            module.train()
        return Val(node, example, kind, pdims)

    def across(self, call: ir.Call, chains: list[Chain]) -> list[Chain]:
        """An op that takes every tap of the term at once: one output per tap, or per consecutive pair."""
        op = OPS[call.op]
        if op.across == "pairs" and len(chains) < 2:
            raise KDError(f"`{call.op}` relates consecutive taps, and this term has one", span=call.span,
                          hint=f"list two or more taps before it, e.g. `stage1, stage2, stage3 -> {call.op}`")
        kinds = [self.transform_kinds(call, c.s, c.t) for c in chains]
        # an output depends on every tap (memo keys name them all), so no value is shared with another term
        joined = ["&".join(c.key[side] for c in chains) + "|" + print_call(call) for side in (0, 1)]
        if op.module:  # student side, learnable (ReviewKD's fusion)
            module = modules.build_across(call, [c.s for c in chains], [c.t for c in chains])
            base = f"{chains[0].s.node.name}_to_{chains[-1].s.node.name.removeprefix('s_')}"
            group = self.module_val(call, module, base, [c.s for c in chains], kinds[0][0])
            outs = [Val(self.fn(operator.getitem, (group.node, i), name=f"{c.s.node.name}_{call.op}"),
                        group.example[i], kinds[i][0], c.t.pdims) for i, c in enumerate(chains)]
            return [Chain(o, c.t, (f"{joined[0]}#{i}", c.key[1]), c.tap) for i, (o, c) in enumerate(zip(outs, chains))]
        s_outs = self.across_side(call, [c.s for c in chains], [k[0] for k in kinds])
        t_outs = self.across_side(call, [c.t for c in chains], [k[1] for k in kinds])
        taps = [c.tap for c in chains][-len(s_outs):]
        out = [Chain(s, t, (f"{joined[0]}#{i}", f"{joined[1]}#{i}"), tap)
               for i, (s, t, tap) in enumerate(zip(s_outs, t_outs, taps))]
        if op.same_channels:
            for c in out:
                if c.s.example.shape != c.t.example.shape:
                    raise KDError(f"`{call.op}` needs equal channel counts on both networks: it gives "
                                  f"{_shape(tuple(c.s.example.shape[1:]))} for {self.student.name} and "
                                  f"{_shape(tuple(c.t.example.shape[1:]))} for {self.teacher.name} at "
                                  f"`{_tap_text(c.tap)}`", span=call.span,
                                  hint=f"`{call.op}` compares C×C matrices, which only match when the channels do")
        return out

    def across_side(self, call: ir.Call, vals: list[Val], kinds: list[Kind]) -> list[Val]:
        fn = getattr(kernels, call.op)
        base = vals[0].node.name.removesuffix("_detached")
        group = self.fn(fn, tuple(v.node for v in vals), {}, name=f"{base}_{call.op}")
        examples = self.run(call, fn, tuple(v.example for v in vals), {})
        return [Val(self.fn(operator.getitem, (group, i), name=f"{base}_{call.op}_{i}"), ex, kinds[i])
                for i, ex in enumerate(examples)]

    def transform_kinds(self, call: ir.Call, s: Val, t: Val) -> tuple[Kind, Kind]:
        kinds = apply_transform(call, (s.kind, t.kind))
        if kinds is None:
            raise KDError(f"`{print_call(call)}` does not take {s.kind.describe()} (student {self.student.name}) "
                          f"and {t.kind.describe()} (teacher {self.teacher.name})", span=call.span,
                          hint=f"`{call.op}` takes {OPS[call.op].accepts()}")
        return kinds

    def kernel_args(self, call: ir.Call, v: Val) -> dict:
        op = OPS[call.op]
        kwargs = {}
        for param in op.params:
            expr = call.arg(param.name)
            if param.type == "axis":
                kwargs["dims"] = axis_dims(param_value(expr), v.example.dim())
            elif param.type == "symbol":  # passed only when written, so the kernel's default stays implicit
                kwargs.update({param.name: expr.id} if isinstance(expr, ir.Name) else {})
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
                          hint=_distance_hint(call, (s.kind, t.kind)))
        if t.kind.form != "labels" and not _shapes_fit(OPS[call.op].shapes, s.example.shape, t.example.shape):
            raise KDError(
                f"`{call.op}` compares {_shape(tuple(s.example.shape[1:]))} from {self.student.name} with "
                f"{_shape(tuple(t.example.shape[1:]))} from {self.teacher.name} (tap `{_tap_text(tap)}`): "
                "the shapes differ", span=call.span,
                hint="add a student-side connector before the distance: `-> adapt ->`")
        if OPS[call.op].module:
            inputs = [s, t] + ([Val(self.index_node, self.index, Kind("labels"))] if self.index_node else [])
            module = modules.build(self, call, s, t, tap)
            return self.module_val(call, module, term_name, inputs, Kind("scalar")).node
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
               and p.type not in ("symbol", "axis") else p.default for p in op.params}
        if op.param("axis") is not None:  # a distance along an axis (per row), only when written
            axis = param_value(call.arg("axis"))
            own["axis"], own["dims"] = None, axis_dims(axis, s.example.dim()) if axis else None
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


def _groups(term: ir.Term) -> list:
    """Taps whose pipelines run together: all of them with an op across taps, otherwise one at a time."""
    return [term.taps] if any(OPS[call.op].across for call in term.transforms) else [[t] for t in term.taps]


def _uses_op(term: ir.Term, op: str) -> bool:
    return any(isinstance(e, ir.Call) and e.op == op for e in ir.walk(term.weight))


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


def _shapes_fit(rule: str, s: torch.Size, t: torch.Size) -> bool:
    """Do a distance's two inputs fit: the same shape, the same but for the channels ("positions"), or any?"""
    if rule == "any":
        return True
    if rule == "positions":
        return len(s) == len(t) and s[0] == t[0] and s[2:] == t[2:]
    return s == t


def axis_dims(axis: str | None, ndim: int) -> tuple[int, ...]:
    """The tensor dims an axis name means for a tensor of ``ndim`` dims."""
    if axis == "n":
        return (0,)
    if ndim == 4:
        return {"c": (1,), "hw": (2, 3), "chw": (1, 2, 3), "nhw": (0, 2, 3)}.get(axis, (1,))
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
    from ..lang.printer import print_tap

    return print_tap(tap)
