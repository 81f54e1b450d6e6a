"""Compile a distiller for a teacher and a student, and attach it to them.

>>> import torch
>>> from autokd_dsl.models import create_model
>>> teacher, student = create_model("resnet14", num_classes=10), create_model("resnet8", num_classes=10)
>>> loss = compile_distiller(load_distiller("library/kd.kd"), teacher, student, input_size=(3, 16, 16))
>>> model = attach(teacher, student, loss)
>>> logits, losses = model(torch.randn(2, 3, 16, 16), labels=torch.tensor([1, 2]))
>>> sorted(losses)
['hard', 'soft', 'total']
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import fx, nn
from torch.nn.modules import module as _module

from ..errors import KDError
from ..lang import ir
from ..lang.check import check_file
from ..standalone.attach import Attached, AttachedTeachers
from .lower import Lowering, term_names
from .taps import Model, TapNotReached, resolve_point


def load_distiller(path: str | Path, name: str | None = None) -> ir.Block:
    """Parse and check a `.kd` file and return its distiller ``name`` (or its only distiller)."""
    return pick_distiller(check_file(path), name, str(path))


def pick_distiller(program: ir.Program, name: str | None, where: str) -> ir.Block:
    distillers = [b for b in program.blocks if b.kind == "distiller"]
    if name is not None:
        block = program.block(name)
        if block is None or block.kind != "distiller":
            known = ", ".join(b.name for b in distillers) or "none"
            raise KDError(f"{where} has no distiller `{name}`", hint=f"its distillers: {known}")
        return block
    if len(distillers) == 1:
        return distillers[0]
    if not distillers:
        spaces = [b.name for b in program.blocks if b.kind == "space"]
        hint = "a space is searched with `autokd-dsl search`" if spaces else None
        raise KDError(f"{where} holds no distiller", hint=hint)
    raise KDError(f"{where} holds several distillers", hint="pick one with --distiller: "
                  + ", ".join(b.name for b in distillers))


# every module's hooks (registered with torch.nn.modules.module.register_module_forward_hook and the like; the
# dicts are updated in place)
_GLOBAL_HOOKS = (_module._global_forward_pre_hooks, _module._global_forward_hooks,
                 _module._global_backward_pre_hooks, _module._global_backward_hooks)


class DistillerLoss(fx.GraphModule):
    """The compiled loss: ``forward(<student taps>, <teacher taps>, labels=None, epoch=0)`` → dict of terms."""

    _KEPT = ("student_taps", "teacher_taps", "teachers_taps", "term_names", "distiller", "needs_index", "param_use",
             "tap_shapes")

    def tap_specs(self) -> dict[str, dict[str, str]]:
        """Placeholder name → tap spec: the student's, and every teacher's together (the names of several
        teachers' taps start `t1_`, `t2_`, …; ``teachers_taps`` holds them per teacher)."""
        return {"student": dict(self.student_taps), "teacher": dict(self.teacher_taps)}

    def recompile(self):
        code = super().recompile()
        type(self).__call__ = DistillerLoss._call  # the class of this instance alone (GraphModule makes one each)
        return code

    def _call(self, *args, **kwargs):
        """``forward``, called directly where nothing observes the call (no hooks, no tracing, not compiled):
        the generic path of a module call (GraphModule's error-reporting wrapper, then nn.Module's hook
        dispatch) costs about as much as one kernel of a small loss. Otherwise, a module call as usual."""
        if (self._forward_hooks or self._forward_pre_hooks or self._backward_hooks or self._backward_pre_hooks
                or any(_GLOBAL_HOOKS) or self._compiled_call_impl is not None or torch._C._get_tracing_state()):
            return nn.Module.__call__(self, *args, **kwargs)
        return self.forward(*args, **kwargs)

    def __deepcopy__(self, memo):
        # GraphModule copies its graph and submodules only; the compile results ride along here
        copied = super().__deepcopy__(memo)
        for name in self._KEPT:
            if name in self.__dict__:
                setattr(copied, name, copy.deepcopy(self.__dict__[name], memo))
        return copied


def compile_distiller(block: ir.Block, teacher: nn.Module | list[nn.Module], student: nn.Module,
                      input_size=(3, 32, 32), *, teacher_name: str | list[str] | None = None,
                      student_name: str | None = None) -> DistillerLoss:
    """Lower a checked distiller onto a student and one teacher, or a list of teachers (`teacher2.x` is the
    second, `teachers.x` each of them); raises a located KDError where it does not fit."""
    if block.kind != "distiller":
        raise KDError(f"`{block.name}` is a space; compile one of its candidates (or search it)")
    nets = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    names = teacher_name if isinstance(teacher_name, (list, tuple)) else [teacher_name] * len(nets)
    models = [Model(net, name or getattr(net, "kd_name", "teacher")) for net, name in zip(nets, names)]
    s_name = student_name or getattr(student, "kd_name", "student")
    lowering = Lowering(block, models, Model(student, s_name), tuple(input_size))
    try:
        gm = lowering.build()
    except TapNotReached as err:  # point at the tap in the file
        if err.span is None:
            nets = [(student, s_name)] + [(m.net, m.name) for m in models]
            err.span = next((p.span for p in _points(block) for net, name in nets if _spec(net, p, name) == err.spec),
                            None)
        raise
    loss = DistillerLoss(gm, gm.graph, class_name="DistillerLoss")
    loss.student_taps = dict(lowering.student.taps)
    loss.teachers_taps = [dict(model.taps) for model in lowering.teachers]
    loss.teacher_taps = {name: spec for taps in loss.teachers_taps for name, spec in taps.items()}
    loss.term_names = term_names(block)
    loss.distiller = block
    loss.needs_index = lowering.index_node is not None  # CRD's memory banks: the trainer passes index=
    loss.param_use = lowering.use  # which parameters the graph reads, and which shaped it (for emit)
    loss.tap_shapes = lowering.root.tap_shapes  # per sample, as compiled
    return loss


def _spec(net, point, name):
    try:
        return resolve_point(net, point, name)
    except KDError:
        return None


def _points(block: ir.Block):
    for term in block.terms:
        for tap in term.taps:
            yield tap.student
            if not tap.teacher_point.is_labels:
                yield tap.teacher_point


def attach(teacher: nn.Module | list[nn.Module], student: nn.Module, loss: DistillerLoss) -> Attached:
    """A module running the teacher(s) (eval, no grad) and the student, returning ``(student_output, losses)``."""
    if isinstance(teacher, (list, tuple)):
        return AttachedTeachers(list(teacher), student, loss, loss.student_taps, loss.teachers_taps)
    return Attached(teacher, student, loss, loss.student_taps, loss.teacher_taps)
