"""Capture tapped activations with forward hooks, and run teacher + student + loss together.

Like `kernels`, this module is copied verbatim into compiled files: torch and the standard library only.
A tap spec is ``dotted.module.path[:in|:out][@N]`` (the N-th call of a module that runs several times).
Captured tensors are cloned, so a later in-place op (``ReLU(inplace=True)``) cannot overwrite them.
"""

import functools

import torch
from torch import nn


def parse_spec(spec):
    """``"layer1.0.relu:in@2"`` → ``("layer1.0.relu", "in", 2)``; the call number is 1 when absent."""
    path, _, call = spec.partition("@")
    path, _, io = path.partition(":")
    return path, io or "out", int(call) if call else 1


def hook_taps(model, taps, detach=False):
    """Hook the taps of ``model``: ``(values, handles)``; ``values`` holds clones of the latest forward's taps (an
    ``:in`` tap is read before the call, as an in-place module such as ``ReLU(inplace=True)`` overwrites it)."""
    values, calls, modules = {}, {}, dict(model.named_modules())

    def keep(name, io, call, module, inputs, output=None):
        calls[name] = calls.get(name, 0) + 1
        if calls[name] == call:
            value = inputs[0] if io == "in" else output
            values[name] = (value.detach() if detach else value).clone()

    def reset(*_):  # a forward pre-hook: returns None, leaving the input as it is
        values.clear()
        calls.clear()

    handles = [model.register_forward_pre_hook(reset)]
    for name, spec in taps.items():
        path, io, call = parse_spec(spec)
        module = modules[path]
        register = module.register_forward_pre_hook if io == "in" else module.register_forward_hook
        handles.append(register(functools.partial(keep, name, io, call)))
    return values, handles


class TapCapture:
    """:func:`hook_taps` as an object: ``values`` after each forward of the model; ``remove()`` the hooks."""

    def __init__(self, model, taps, detach=False):
        self.values, self._handles = hook_taps(model, taps, detach)

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []


class Attached(nn.Module):
    """``forward(x, labels=None, epoch=0, index=None)`` → ``(student_output, losses)``, the teacher in eval mode
    without gradients. ``parameters()`` are the loss's (its connectors); loss parts with ``reads_teacher`` copy from
    the teacher here; ``index`` (the batch's dataset positions) reaches a loss with ``needs_index`` (CRD)."""

    def __init__(self, teacher, student, loss, student_taps, teacher_taps):
        super().__init__()
        self.loss = loss
        t_values, t_hooks = hook_taps(teacher, teacher_taps, detach=True)
        s_values, s_hooks = hook_taps(student, student_taps)
        object.__setattr__(self, "_parts", (teacher, student, t_values, s_values, t_hooks + s_hooks))  # no submodules
        for module in loss.modules():
            if getattr(module, "reads_teacher", False):
                module.copy_from_teacher(teacher)

    def forward(self, x, labels=None, epoch=0, index=None):
        teacher, student, t_values, s_values, _ = self._parts
        with torch.no_grad():
            teacher.eval()(x)
        output = student(x)
        extra = {"index": index} if getattr(self.loss, "needs_index", False) else {}
        return output, self.loss(**s_values, **t_values, labels=labels, epoch=epoch, **extra)

    def detach_hooks(self):
        for handle in self._parts[4]:
            handle.remove()


class AttachedTeachers(Attached):
    """:class:`Attached` with several teachers: ``teachers`` a list, ``teacher_taps`` one dict per teacher in the
    same order (their tap names differ: ``t1_…``, ``t2_…``); every teacher runs in eval mode without gradients."""

    def __init__(self, teachers, student, loss, student_taps, teacher_taps):
        nn.Module.__init__(self)
        self.loss = loss
        if len(teachers) != len(teacher_taps):
            raise ValueError(f"this loss distils from {len(teacher_taps)} teachers; {len(teachers)} were given")
        t_values, hooks = [], []
        for net, taps in zip(teachers, teacher_taps):
            values, handles = hook_taps(net, taps, detach=True)
            t_values.append(values)
            hooks += handles
        s_values, s_hooks = hook_taps(student, student_taps)
        object.__setattr__(self, "_parts", (list(teachers), student, t_values, s_values, hooks + s_hooks))
        for module in loss.modules():
            if getattr(module, "reads_teacher", False):
                module.copy_from_teacher(teachers[0])

    def forward(self, x, labels=None, epoch=0, index=None):
        teachers, student, t_values, s_values, _ = self._parts
        with torch.no_grad():
            for net in teachers:
                net.eval()(x)
        output = student(x)
        extra = {"index": index} if getattr(self.loss, "needs_index", False) else {}
        taps = {k: v for values in t_values for k, v in values.items()}
        return output, self.loss(**s_values, **taps, labels=labels, epoch=epoch, **extra)
