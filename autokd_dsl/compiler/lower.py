"""Lower a checked distiller onto real models: a `torch.fx` graph of the loss with readable node names.

`Lowering` builds the graph only: the taps' placeholders and where a pipeline starts come from :mod:`.inputs`
(names and shapes from :mod:`.taps`), each op's implementation and the marshalling of its arguments from
:mod:`.bindings`, number arguments and weights from :mod:`.numbers`, and modules from :mod:`.modules`. Every
value is computed once per (side, tap, transform prefix), keyed by the IR's content keys, so a transform shared
by several terms appears once in the graph. The compiler runs each kernel on example activations as it builds
the graph: that gives the real shapes and kinds, and a located error as soon as something does not fit.
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn

from ..errors import KDError
from ..lang import ir
from ..lang.check import distance_fits, distance_hint
from ..lang.kinds import Kind
from ..lang.ops import OPS
from . import inputs as tap_inputs
from .bindings import (
    Site,
    Val,
    arguments,
    binding,
    check_module_input,
    distance_call,
    finish_transform,
    run_example,
    shape_text,
    transform_call,
    transform_kinds,
)
from .inputs import Chain
from .numbers import Numbers
from .taps import Model, example_input, ident


class Lowering:
    """Builds the loss graph of ``block`` for ``teacher`` and ``student`` (:meth:`build`). ``teacher`` is one
    :class:`Model` or a list (several teachers, numbered from 1 in order; ``self.teacher`` is the one a term's
    pipeline is being built against)."""

    def __init__(self, block: ir.Block, teacher: "Model | list[Model]", student: Model, input_size, batch: int = 2):
        self.teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        self.block, self.teacher, self.student = block, self.teachers[0], student
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.memo: dict[tuple, object] = {}
        self.examples: dict[fx.Node, object] = {}  # compile-time values of the number nodes (parameters)
        self.numbers = Numbers(block, self)
        self.use = self.numbers.use
        self.x = example_input(input_size, batch)
        self.labels = torch.arange(batch) % 2
        self.index = torch.arange(batch)  # example dataset positions of the batch's samples

    # ---- graph inputs and output ---------------------------------------------------------------------
    def build(self) -> fx.GraphModule:
        from .teachers import require_teachers

        require_teachers(self.block, [model.name for model in self.teachers])
        t_names = tap_inputs.add_taps(self)
        self.labels_node = self.graph.placeholder("labels", default_value=None)
        self.epoch_node = self.graph.placeholder("epoch", default_value=0)
        self.index_node = self.graph.placeholder("index", default_value=None) if self.uses("index") else None
        self.last_input = self.index_node or self.epoch_node
        check = tap_inputs.check_taps(self)
        tap_inputs.detach(self, t_names)
        terms = {name: self.term(term, name) for term, name in zip(self.block.terms, term_names(self.block))}
        total, *rest = terms.values()
        for i, value in enumerate(rest, start=1):
            total = self.fn(operator.add, (total, value), name="total" if i == len(rest) else "add")
        self.graph.output({**terms, "total": total})
        # dead-code elimination asks the owning module whether call_module nodes (connectors) are pure
        gm = fx.GraphModule(self.root, self.graph, class_name="DistillerLoss")
        gm.graph.eliminate_dead_code(is_impure_node=lambda node: node is check or node.is_impure())
        gm.delete_all_unused_submodules()
        gm.recompile()
        return gm

    def uses(self, graph_input: str) -> bool:
        """Does an op of the distiller take this graph input (`index`)?"""
        return any(graph_input in OPS[c.op].needs for term in self.block.terms for c in term.steps
                   if isinstance(c, ir.Call) and c.op in OPS)

    def fn(self, target, args, kwargs=None, name: str | None = None) -> fx.Node:
        """A call_function node named ``name`` (made unique)."""
        return self.graph.create_node("call_function", target, tuple(args), kwargs or {}, name=name)

    def attr(self, attr: str, example) -> fx.Node:
        """The node reading attribute ``attr`` of the loss (added with the graph's inputs, in the order first
        read); ``example`` is its value when compiling."""
        node = next((n for n in self.graph.nodes if n.op == "get_attr" and n.target == attr), None)
        if node is None:
            with self.graph.inserting_after(self.last_input):
                node = self.last_input = self.graph.get_attr(attr)
            self.examples[node] = example
        return node

    def prefix(self, k: int) -> str:
        """Teacher k's graph-input prefix: `t` with one teacher, `t1`, `t2`, … with several."""
        return tap_inputs.prefix(k, len(self.teachers))

    def kernel_val(self, call: ir.Call, fn, args: list, kwargs: dict, name: str, kind: Kind) -> Val:
        """A call of kernel ``fn`` on the values ``args`` (a node named ``name``), run on their examples."""
        node = self.fn(fn, tuple(v.node for v in args), kwargs, name=name)
        return Val(node, self.run(call, fn, tuple(v.example for v in args), kwargs), kind)

    def run(self, call: ir.Call, fn, args, kwargs):
        return run_example(call, fn, args, kwargs, self.examples)

    # ---- terms -----------------------------------------------------------------------------------------
    def term(self, term: ir.Term, name: str) -> fx.Node:
        """Each tap's pipeline and distance, summed, times the weight; the term's last node carries its name.
        With an op across taps the pipelines run in lockstep so that it sees all of them (otherwise tap after
        tap, which keeps each tap's nodes together)."""
        if any(tap.each_teacher for tap in term.taps):
            from .teachers import each_teacher

            return each_teacher(self, term, name)
        groups = [term.taps] if any(OPS[call.op].across for call in term.transforms) else [[t] for t in term.taps]
        weight = self.numbers.weight(term.weight, name)
        unweighted = isinstance(weight, (int, float)) and weight == 1
        alone = unweighted and len(term.taps) == 1  # the distance is the term's value
        k = 1 if term.taps[0].teacher_point.is_labels else (term.taps[0].teacher_point.teacher_number or 1)
        self.teacher, tag = self.teachers[k - 1], (f"@t{k}" if len(self.teachers) > 1 else "")
        parts = [self.distance(term.distance, c, name, alone)
                 for taps in groups for c in self.pipeline(term, taps, tag)]
        self.teacher = self.teachers[0]
        value = parts[0]
        for i, part in enumerate(parts[1:], start=2):
            last = i == len(parts) and unweighted
            value = self.fn(operator.add, (value, part), name=name if last else "add")
        if unweighted:
            return value
        return self.fn(operator.mul, (value, weight if isinstance(weight, fx.Node) else float(f"{weight:.12g}")),
                       name=name)

    def pipeline(self, term: ir.Term, taps, tag: str = "") -> list[Chain]:
        """The pipelines of ``taps`` against the current teacher; ``tag`` keeps the values that depend on the
        teacher (its side; student-side modules sized for it, random draws made with it) apart from another
        teacher's."""
        chains = [tap_inputs.start(self, tap, tag) for tap in taps]
        for call in term.transforms:
            if OPS[call.op].across:
                chains = self.across(call, chains)
            else:
                chains = [self.transform(call, c, tag) for c in chains]
        return chains

    # ---- transforms --------------------------------------------------------------------------------------
    def transform(self, call: ir.Call, chain: Chain, tag: str = "") -> Chain:
        op, s, t = OPS[call.op], chain.s, chain.t
        kinds = transform_kinds(call, s, t, self.student.name, self.teacher.name)
        side = call.side or (op.side if op.side != "both" else None)
        step = (call.key, tag) if tag and (op.module or op.random) else call.key  # sized for / drawn with it
        key = (chain.key[0] + (step,) if side != "teacher" else chain.key[0],
               chain.key[1] + (call.key,) if side != "student" else chain.key[1])
        if op.random:
            s2, t2 = self.paired(call, s, t, kinds, key, side)
        else:
            s2 = self.one_side(call, s, kinds[0], ("s", key[0]), t, chain.tap) if side != "teacher" else s
            t2 = self.one_side(call, t, kinds[1], ("t", key[1]), s, chain.tap) if side != "student" else t
        return Chain(s2, t2, key, chain.tap)

    def one_side(self, call: ir.Call, v: Val, kind: Kind, key: tuple, other: Val, tap: ir.Tap) -> Val:
        if key in self.memo:
            return self.memo[key]
        op = OPS[call.op]
        base = v.node.name.removesuffix("_detached")
        if op.module:
            site = Site(call, v, other, tap, self.teacher, self.x)
            out = self.module_val(site, base, [v], kind, other.pdims if op.learnable else None)
        else:
            labels = Val(self.labels_node, self.labels, Kind("labels"))
            args, kwargs = transform_call(call, v, self.numbers.value, labels)
            out = self.kernel_val(call, binding(call.op).fn, args, kwargs, f"{base}_{call.op}", kind)
            finish_transform(call, out, v, kwargs)
        out.batch_sized = v.batch_sized or op.batch_sized or kind.form == "relation"
        self.memo[key] = out
        return out

    def paired(self, call: ir.Call, s: Val, t: Val, kinds, key: tuple, side: str | None) -> tuple[Val, Val]:
        """A random op: one draw for both sides (the same mask), or applied to one side only."""
        memo_key = ("pair", side, key)
        if memo_key in self.memo:
            return self.memo[memo_key]
        b = binding(call.op)
        kwargs = arguments(b.op, call, self.numbers.value, s.example.dim())
        pair = self.fn(b.fn, (s.node, t.node), kwargs, name=f"{call.op}_{s.node.name}")
        s_ex, t_ex = self.run(call, b.fn, (s.example, t.example), kwargs)
        outs = []
        for i, (v, ex, kind) in enumerate(((s, s_ex, kinds[0]), (t, t_ex, kinds[1]))):
            if side is not None and side != ("student", "teacher")[i]:
                outs.append(v)
                continue
            node = self.fn(operator.getitem, (pair, i), name=f"{v.node.name.removesuffix('_detached')}_{call.op}")
            outs.append(Val(node, ex, kind, v.pdims, batch_sized=v.batch_sized))
        self.memo[memo_key] = tuple(outs)
        return self.memo[memo_key]

    def module_val(self, site: Site, base: str, inputs: list, kind: Kind, pdims=None, node_name=None) -> Val:
        """Build the op's module at ``site``, register it as a submodule, call it on ``inputs`` (a node named
        ``node_name``, by default ``<base>_<op>``) and run it once on their examples."""
        call, op = site.call, OPS[site.call.op]
        check_module_input(site)
        ndim = inputs[0].example.dim()
        module = binding(call.op).fn(site, **arguments(op, call, self.numbers.value, ndim))
        stem = base.removeprefix({"student": "s_", "teacher": "t_"}.get(op.side, "&"))
        name, k = f"{call.op}_{stem}", 2
        while hasattr(self.root, name):
            name, k = f"{call.op}_{stem}_{k}", k + 1
        self.root.add_module(name, module.to(inputs[0].example.device))
        node = self.graph.create_node("call_module", name, tuple(v.node for v in inputs), {},
                                      name=node_name or f"{base}_{call.op}")
        probe_module = copy.deepcopy(module) if op.stateful else module  # an example must not change the state
        probe_module.eval()
        try:
            example = self.run(call, probe_module, tuple(v.example for v in inputs), {})
        finally:
            module.train()
        return Val(node, example, kind, pdims)

    def across(self, call: ir.Call, chains: list[Chain]) -> list[Chain]:
        """An op that takes every tap of the term at once: one output per tap, or per consecutive pair."""
        op = OPS[call.op]
        if op.across == "pairs" and len(chains) < 2:
            raise KDError(f"`{call.op}` relates consecutive taps, and this term has one", span=call.span,
                          hint=f"list two or more taps before it, e.g. `stage1, stage2, stage3 -> {call.op}`")
        kinds = [transform_kinds(call, c.s, c.t, self.student.name, self.teacher.name) for c in chains]
        # an output depends on every tap (memo keys name them all), so no value is shared with another term
        joined = [(tuple(c.key[side] for c in chains), call.key) for side in (0, 1)]
        if op.module:  # student side, learnable (ReviewKD's fusion)
            site = Site(call, [c.s for c in chains], [c.t for c in chains], None, self.teacher, self.x)
            base = f"{chains[0].s.node.name}_to_{chains[-1].s.node.name.removeprefix('s_')}"
            group = self.module_val(site, base, [c.s for c in chains], kinds[0][0])
            outs = [Val(self.fn(operator.getitem, (group.node, i), name=f"{c.s.node.name}_{call.op}"),
                        group.example[i], kinds[i][0], c.t.pdims) for i, c in enumerate(chains)]
            return [Chain(o, c.t, ((joined[0], i), c.key[1]), c.tap) for i, (o, c) in enumerate(zip(outs, chains))]
        s_outs = self.across_side(call, [c.s for c in chains], [k[0] for k in kinds])
        t_outs = self.across_side(call, [c.t for c in chains], [k[1] for k in kinds])
        taps = [c.tap for c in chains][-len(s_outs):]
        out = [Chain(s, t, ((joined[0], i), (joined[1], i)), tap)
               for i, (s, t, tap) in enumerate(zip(s_outs, t_outs, taps))]
        if op.same_channels:
            for c in out:
                _check_same_shape(call, c, self.student.name, self.teacher.name)
        return out

    def across_side(self, call: ir.Call, vals: list[Val], kinds: list[Kind]) -> list[Val]:
        fn = binding(call.op).fn
        base = vals[0].node.name.removesuffix("_detached")
        group = self.fn(fn, tuple(v.node for v in vals), {}, name=f"{base}_{call.op}")
        examples = self.run(call, fn, tuple(v.example for v in vals), {})
        return [Val(self.fn(operator.getitem, (group, i), name=f"{base}_{call.op}_{i}"), ex, kinds[i])
                for i, ex in enumerate(examples)]

    # ---- distances ---------------------------------------------------------------------------------------
    def distance(self, call: ir.Call, chain: Chain, term: str, alone: bool) -> fx.Node:
        """The distance node of one chain (named after the term when it is the term's value)."""
        op, s, t = OPS[call.op], chain.s, chain.t
        name = term if alone else f"{term}_{call.op}"
        _check_distance_fits(call, s, t, chain.tap, self.student.name, self.teacher.name)
        if op.module:
            inputs = [s, t] + ([Val(self.index_node, self.index, Kind("labels"))] if self.index_node else [])
            site = Site(call, s, t, chain.tap, self.teacher, self.x)
            return self.module_val(site, term, inputs, Kind("scalar"), node_name=name).node
        s, t, kwargs = distance_call(call, s, t, self.numbers.value)
        out = self.kernel_val(call, binding(call.op).fn, [s, t], kwargs, name, Kind("scalar"))
        if not torch.is_tensor(out.example) or out.example.dim() != 0:
            raise KDError(f"`{call.op}` did not give a scalar", span=call.span)
        return out.node


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
            base = ident(f"{point.path}_{dist}")
        name, k = base, 2
        while name in out or name == "total":
            name, k = f"{base}_{k}", k + 1
        out.append(name)
    return out


# ---- fit checks -------------------------------------------------------------------------------------------


def _check_distance_fits(call: ir.Call, s: Val, t: Val, tap: ir.Tap, student: str, teacher: str) -> None:
    if not distance_fits(call, (s.kind, t.kind)):
        raise KDError(f"`{call.op}` does not take {s.kind.describe()} (student {student}) with "
                      f"{t.kind.describe()} (teacher {teacher})", span=call.span,
                      hint=distance_hint(call, (s.kind, t.kind)))
    if t.kind.form != "labels" and not _shapes_fit(OPS[call.op].shapes, s.example.shape, t.example.shape):
        raise KDError(
            f"`{call.op}` compares {shape_text(tuple(s.example.shape[1:]))} from {student} with "
            f"{shape_text(tuple(t.example.shape[1:]))} from {teacher} (tap `{_tap_text(tap)}`): "
            "the shapes differ", span=call.span,
            hint="add a student-side connector before the distance: `-> adapt ->`")


def _check_same_shape(call: ir.Call, c: Chain, student: str, teacher: str) -> None:
    if c.s.example.shape != c.t.example.shape:
        raise KDError(f"`{call.op}` needs equal channel counts on both networks: it gives "
                      f"{shape_text(tuple(c.s.example.shape[1:]))} for {student} and "
                      f"{shape_text(tuple(c.t.example.shape[1:]))} for {teacher} at "
                      f"`{_tap_text(c.tap)}`", span=call.span,
                      hint=f"`{call.op}` compares C×C matrices, which only match when the channels do")


def _shapes_fit(rule: str, s: torch.Size, t: torch.Size) -> bool:
    """Do a distance's two inputs fit: the same shape, the same but for the channels ("positions"), or any?"""
    if rule == "any":
        return True
    if rule == "positions":
        return len(s) == len(t) and s[0] == t[0] and s[2:] == t[2:]
    return s == t


def _tap_text(tap: ir.Tap) -> str:
    from ..lang.printer import print_tap

    return print_tap(tap)
