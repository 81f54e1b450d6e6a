"""The loss graph's tap inputs: one placeholder per distinct tap (the student's, then each teacher's), measured
on an example batch, the teacher side detached, and the check that a map or tokens tap has the shape compiled
for; and where a term's pipeline starts (:class:`Chain`).

The functions take the :class:`~.lower.Lowering` building the graph (``lw``) and add their nodes through it.
"""

from __future__ import annotations

from torch import fx

from ..lang import ir
from ..lang.kinds import Kind
from ..standalone import kernels
from .bindings import Val
from .taps import Model, base_kind, collect_taps, probe_examples


class Chain:
    """One tap's pipeline inside a term: its current student and teacher values and their memo keys (the content
    keys of the tap's points, then of each transform applied)."""

    __slots__ = ("s", "t", "key", "tap")

    def __init__(self, s: Val, t: Val, key: tuple, tap: ir.Tap):
        self.s, self.t, self.key, self.tap = s, t, key, tap


def add_taps(lw) -> list[str]:
    """Name every tap on the networks, measure them on the example input and add their placeholders
    (``lw.inputs``: graph input name → (node, example)); returns the teachers' input names."""
    collect_taps(lw.block, lw.teachers, lw.student)
    if len(lw.teachers) > 1:
        from .teachers import check_classes

        check_classes(lw)
    s_ex = probe_examples(lw.student.net, lw.student.taps, lw.x, lw.student.name)
    t_ex = {}
    for model in lw.teachers:
        t_ex.update(probe_examples(model.net, model.taps, lw.x, model.name))
    t_names = [name for model in lw.teachers for name in model.taps]
    lw.labels = lw.labels.to(next(iter(s_ex.values())).device) if s_ex else lw.labels
    lw.inputs = {name: (lw.graph.placeholder(name), s_ex[name]) for name in lw.student.taps}
    lw.inputs.update({name: (lw.graph.placeholder(name), t_ex[name]) for name in t_names})
    lw.root.tap_shapes = {name: tuple(ex.shape[1:]) for name, (_, ex) in lw.inputs.items()}
    return t_names


def check_taps(lw) -> fx.Node | None:
    """A node failing early, naming the tap, where a map or tokens tap is not the shape compiled for (an input
    of another size). Vectors and logits do not depend on the input size; they are not checked, which keeps
    a distiller on logits free of the cost."""
    taps = {name: node for name, (node, ex) in lw.inputs.items() if ex.dim() > 2}
    if not taps:
        return None
    return lw.fn(kernels.check_taps, (lw.attr("tap_shapes", lw.root.tap_shapes),), taps, name="check_taps")


def detach(lw, names: list[str]) -> None:
    """The teacher side never carries gradients: its inputs are read through ``detach``."""
    for name in names:
        node, ex = lw.inputs[name]
        detached = lw.graph.create_node("call_method", "detach", (node,), {}, name=f"{name}_detached")
        lw.inputs[name] = (detached, ex)


def prefix(k: int, teachers: int) -> str:
    """Teacher k's graph-input prefix: `t` with one teacher, `t1`, `t2`, … with several."""
    return "t" if teachers == 1 else f"t{k}"


def source_val(lw, model: Model, point: ir.Point, prefix: str) -> Val:
    node, ex = lw.inputs[model.tap_name(point, prefix)]
    return Val(node, ex, base_kind(model, point, ex))


def start(lw, tap: ir.Tap, tag: str = "") -> Chain:
    """The chain of ``tap`` against the current teacher (``lw.teacher``), before any transform."""
    s = source_val(lw, lw.student, tap.student, "s")
    if tap.teacher_point.is_labels:
        t = Val(lw.labels_node, lw.labels, Kind("labels"))
    else:
        t = source_val(lw, lw.teacher, tap.teacher_point, prefix(lw.teachers.index(lw.teacher) + 1, len(lw.teachers)))
    return Chain(s, t, ((tap.student.key,), (tag, tap.teacher_point.key) if tag else (tap.teacher_point.key,)), tap)
