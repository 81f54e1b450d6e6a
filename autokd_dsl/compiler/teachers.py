"""Lower a term that taps each teacher (`logits ~ teachers.logits -> … -> w * confidence`).

The term's pipeline runs once per teacher: student-side values that do not depend on the teacher (a softmax of
the student's logits) are shared, while learnable connectors are built per teacher, sized from that teacher's
shapes. Each teacher's distance ``d_k`` is then weighted by the term's weight with every per-teacher factor
(``equal``, ``confidence``, ``agreement``, ``balance``; see :mod:`autokd_dsl.standalone.teachers`) taken for
teacher k, and the K products are summed. With ``confidence`` (a weight per sample) and a distance that is a
batch mean of per-sample values, the distance is evaluated per sample and ``mean_i(w_k,i · d_k,i)`` is summed;
otherwise (batch relations, folded patches) the confidence weights are averaged over the batch.
"""

from __future__ import annotations

import operator

from torch import fx

from ..errors import KDError
from ..lang import ir
from ..lang.ops import OPS
from ..lang.printer import print_point
from ..standalone import teachers as tw
from ..standalone.teachers import TeacherWeights
from .taps import aliases, probe_examples

# distances that are a batch mean of one value per sample, so a per-sample weight can go inside the mean
PER_SAMPLE = {"l1", "mse", "l2", "smooth_l1", "pairwise", "kl", "js", "cosine", "pearson", "ce"}
# transforms after which the first axis no longer holds one row per sample
_MIXING = {"transpose", "patches"}


def require_teachers(block: ir.Block, names: list[str]) -> None:
    """A located error where a tap needs a teacher the command did not give (checked before any network runs).

    >>> from autokd_dsl.lang.check import check_text
    >>> block = check_text("distiller d:\\n    logits ~ teacher2.logits -> kl -> 1\\n").blocks[0]
    >>> require_teachers(block, ["resnet56"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    autokd_dsl.errors.KDError: error: `teacher2.logits` names teacher 2, and the command gave 1...
    """
    for term in block.terms:
        for tap in ir.term_taps(term):
            point = tap.teacher_point
            if tap.each_teacher and len(names) == 1:
                raise KDError(f"`{print_point(point)}` distils from several teachers, and the command gave one "
                              f"({names[0]})", span=point.span,
                              hint="give two or more teachers: --teacher A --teacher B")
            if not point.is_labels and (point.teacher_number or 1) > len(names):
                given = ", ".join(f"teacher{i} = {name}" for i, name in enumerate(names, 1))
                raise KDError(f"`{print_point(point)}` names teacher {point.teacher_number}, and the command gave "
                              f"{len(names)}", span=point.span,
                              hint=f"the teachers given: {given}; add more with --teacher (repeatable)")


def check_classes(lw) -> None:
    """Several teachers must predict the same classes (as many logits each)."""
    counts = []
    for model in lw.teachers:
        spec = aliases(model.net).get("logits")
        if spec is None:
            return
        counts.append(int(probe_examples(model.net, {"_logits": spec}, lw.x, model.name)["_logits"].shape[1]))
    if len(set(counts)) > 1:
        k = next(i for i, c in enumerate(counts) if c != counts[0])
        where = _first_teacher_tap(lw.block)
        raise KDError(f"teacher{k + 1} ({lw.teachers[k].name}) predicts {counts[k]} classes and teacher1 "
                      f"({lw.teachers[0].name}) {counts[0]}: several teachers must share the classes",
                      span=where.span if where is not None else None,
                      hint="give teachers trained on the same dataset (--teacher-weights per teacher)")


def _first_teacher_tap(block: ir.Block) -> ir.Point | None:
    for term in block.terms:
        for tap in ir.term_taps(term):
            if tap.teacher is not None and tap.teacher.is_teacher:
                return tap.teacher
    return None


def factor_calls(expr: ir.Expr) -> list[ir.Call]:
    """The per-teacher weight factors in a weight, once each."""
    found: dict[str, ir.Call] = {}
    for node in ir.walk(expr):
        if isinstance(node, ir.Call) and node.op in OPS and OPS[node.op].per_teacher:
            found.setdefault(node.key, node)
    return list(found.values())


def each_teacher(lw, term: ir.Term, name: str) -> fx.Node:
    chains = []
    for k, model in enumerate(lw.teachers, 1):
        lw.teacher = model
        for call in term.transforms:
            if OPS[call.op].teacher and k > 1:
                raise KDError(f"`{call.op}` reads the first teacher's parameters; in a term over each teacher it "
                              "cannot read the others'", span=call.span, hint="tap one teacher in this term")
        chains.append([c for taps in _groups(term) for c in lw.pipeline(term, taps, f"@t{k}")])
    lw.teacher = lw.teachers[0]
    factors = factor_calls(term.weight)
    per_sample = any(c.op == "confidence" for c in factors) and _per_sample(lw, term, chains)
    losses = []
    for k, model in enumerate(lw.teachers, 1):
        lw.teacher = model
        parts = [_distance(lw, term.distance, c, name, per_sample) for c in chains[k - 1]]
        losses.append(_add_all(lw, parts))
    lw.teacher = lw.teachers[0]
    nodes = {call.key: _factor(lw, call, chains, losses, per_sample, name) for call in factors}
    parts = []
    for k, loss in enumerate(losses, 1):
        weight = _weight(lw, term.weight, k, nodes)
        if isinstance(weight, (int, float)) and weight == 1:
            part = loss
        else:
            part = lw.fn(operator.mul, (loss, weight if isinstance(weight, fx.Node) else float(f"{weight:.12g}")),
                         name=f"{name}_t{k}")
        if per_sample:
            part = lw.graph.call_method("mean", (part,))
        parts.append(part)
    total = _add_all(lw, parts)
    total._rename(name)
    return total


def _groups(term: ir.Term) -> list:
    """Taps whose pipelines run together: all of them with an op across taps, otherwise one at a time."""
    return [term.taps] if any(OPS[call.op].across for call in term.transforms) else [[t] for t in term.taps]


def _add_all(lw, parts: list) -> fx.Node:
    value = parts[0]
    for part in parts[1:]:
        value = lw.fn(operator.add, (value, part), name="add")
    return value


def _per_sample(lw, term: ir.Term, chains) -> bool:
    dist = term.distance
    if dist.op not in PER_SAMPLE or any(c.op in _MIXING for c in term.transforms):
        return False
    n = lw.x.shape[0]
    return all(c.s.kind.form != "relation" and c.s.example.shape[0] == n and c.t.example.shape[0] == n
               for per_teacher in chains for c in per_teacher)


def _distance(lw, call: ir.Call, chain, name: str, per_sample: bool) -> fx.Node:
    node = lw.distance(call, chain, name, False)
    if not per_sample:
        return node
    return lw.fn(tw.per_sample, (node.target.__name__, *node.args), dict(node.kwargs), name=f"{node.name}_per_sample")


def _teacher_logits(lw, k: int) -> fx.Node:
    model = lw.teachers[k - 1]
    return lw.inputs[model.tap_name(ir.Point("logits"), lw.prefix(k))][0]


def _factor(lw, call: ir.Call, chains, losses, per_sample: bool, name: str):
    """The node giving the K weights of one factor ((K,) or, per sample, (K, N)); None for `equal`."""
    if call.op == "equal":
        return None
    if call.op == "confidence":
        logits = [_teacher_logits(lw, k) for k in range(1, len(lw.teachers) + 1)]
        node = lw.fn(tw.confidence, (lw.labels_node, tuple(logits)), name=f"{name}_confidence")
        return node if per_sample else lw.graph.call_method("mean", (node, 1))
    teachers = len(lw.teachers)
    if call.op == "balance":
        module = TeacherWeights("balance", teachers)
        inputs = [lw.graph.call_method("mean", (d,)) if per_sample else d for d in losses]
    else:
        measure = call.arg("measure")
        module = TeacherWeights("agreement", teachers, measure.id if isinstance(measure, ir.Name) else "cka")
        inputs = [v.node for per_teacher in chains for c in per_teacher for v in (c.s, c.t)]
    target, i = f"{call.op}_{name}", 2
    while hasattr(lw.root, target):
        target, i = f"{call.op}_{name}_{i}", i + 1
    lw.root.add_module(target, module.to(lw.x.device))
    return lw.graph.create_node("call_module", target, tuple(inputs), {}, name=f"{name}_{call.op}")


def _weight(lw, expr: ir.Expr, k: int, nodes: dict):
    """The weight for teacher k: per-teacher factors taken at k, the rest as for any term."""
    if isinstance(expr, ir.Call) and expr.op in OPS and OPS[expr.op].per_teacher:
        node = nodes[expr.key]
        if node is None:  # equal
            return 1.0 / len(lw.teachers)
        return lw.fn(operator.getitem, (node, k - 1), name=f"{expr.op}_t{k}")
    if isinstance(expr, ir.BinOp):
        left, right = _weight(lw, expr.left, k, nodes), _weight(lw, expr.right, k, nodes)
        if not isinstance(left, fx.Node) and not isinstance(right, fx.Node):
            from ..lang import weights

            return weights.apply(expr.op, left, right, expr.span)
        fn = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
              "^": operator.pow}[expr.op]
        return lw.graph.call_function(fn, (left, right))
    if isinstance(expr, ir.Neg):
        inner = _weight(lw, expr.operand, k, nodes)
        return -inner if not isinstance(inner, fx.Node) else lw.graph.call_function(operator.neg, (inner,))
    return lw.numbers.number(expr)

