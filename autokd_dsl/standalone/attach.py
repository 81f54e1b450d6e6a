"""Capture tapped activations with forward hooks, and run teacher + student + loss together.

Like `kernels`, this module is copied verbatim into compiled files: torch and the standard library only.
A tap spec is ``dotted.module.path[:in|:out][@N]`` (the N-th call of a module that runs several times).
Captured tensors are cloned, so a later in-place op (``ReLU(inplace=True)``) cannot overwrite them.
"""

import torch
from torch import nn


def parse_spec(spec):
    """``"layer1.0.relu:in@2"`` → ``("layer1.0.relu", "in", 2)``; the call number is 1 when absent."""
    path, _, call = spec.partition("@")
    path, _, io = path.partition(":")
    return path, io or "out", int(call) if call else 1


class TapCapture:
    """Forward hooks on ``model`` that store the tapped tensors of the latest forward in ``values``."""

    def __init__(self, model, taps, detach=False):
        self.values, self.detach = {}, detach
        self._calls, self._handles = {}, []
        modules = dict(model.named_modules())
        self._handles.append(model.register_forward_pre_hook(lambda m, a: self.reset()))
        for name, spec in taps.items():
            path, io, call = parse_spec(spec)
            hook = self._hook(name, path, io, call)
            if io == "in":  # before the call: an in-place module (ReLU(inplace=True)) overwrites its input
                handle = modules[path].register_forward_pre_hook(lambda m, inputs, hook=hook: hook(m, inputs, None))
            else:
                handle = modules[path].register_forward_hook(hook)
            self._handles.append(handle)

    def reset(self):
        self.values, self._calls = {}, {}

    def _hook(self, name, path, io, call):
        def hook(module, inputs, output):
            key = (name, path)
            self._calls[key] = self._calls.get(key, 0) + 1
            if self._calls[key] == call:
                value = inputs[0] if io == "in" else output
                value = value.detach() if self.detach else value
                self.values[name] = value.clone()

        return hook

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []


class Attached(nn.Module):
    """``forward(x, labels=None, epoch=0, index=None)`` → ``(student_output, losses)``.

    ``teacher`` is one network (``teacher_taps`` a dict) or a list of them (``teacher_taps`` a list of dicts, one
    per teacher). The teachers run in eval mode without gradients; the student runs in its own mode. Only the loss
    module (the distiller's learnable connectors) is registered, so ``parameters()`` are the connectors.
    Loss modules that read the teacher's parameters (OFD's margins, SRRL's classifier) copy them here.
    ``index`` (the dataset positions of the batch's samples) reaches the loss when it asks for it
    (``needs_index``: CRD's memory banks).
    """

    def __init__(self, teacher, student, loss, student_taps, teacher_taps):
        super().__init__()
        self.loss = loss
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        tap_sets = list(teacher_taps) if isinstance(teacher_taps, (list, tuple)) else [teacher_taps]
        if len(teachers) != len(tap_sets):
            raise ValueError(f"this loss distils from {len(tap_sets)} teacher(s); {len(teachers)} were given")
        object.__setattr__(self, "_nets", (teachers, student))
        object.__setattr__(self, "_captures", ([TapCapture(t, taps, detach=True) for t, taps in zip(teachers, tap_sets)],
                                               TapCapture(student, student_taps)))
        for module in loss.modules():
            if hasattr(module, "copy_from_teacher"):
                module.copy_from_teacher(teachers[0])

    @property
    def teacher(self):
        return self._nets[0][0]

    @property
    def teachers(self):
        return list(self._nets[0])

    @property
    def student(self):
        return self._nets[1]

    def forward(self, x, labels=None, epoch=0, index=None):
        teachers, student = self._nets
        t_captures, s_capture = self._captures
        with torch.no_grad():
            for teacher in teachers:
                teacher.eval()
                teacher(x)
        output = student(x)
        extra = {"index": index} if getattr(self.loss, "needs_index", False) else {}
        t_values = {k: v for capture in t_captures for k, v in capture.values.items()}
        losses = self.loss(**s_capture.values, **t_values, labels=labels, epoch=epoch, **extra)
        return output, losses

    def detach_hooks(self):
        for capture in [*self._captures[0], self._captures[1]]:
            capture.remove()
