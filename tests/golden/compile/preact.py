"""Distiller `preact` compiled by autokd-dsl for teacher resnet32 and student resnet8
(input 3x16x16, 10 classes). Generated code: edit the .kd source and compile again.

    loss = DistillerLoss()   # the .kd defaults; learnable connectors are its parameters
    model = attach(teacher, student, loss)
    logits, losses = model(x, labels=y, epoch=epoch)   # losses['total'] is the training loss
"""

import functools
import types

import torch
import torch.nn.functional as F
from torch import nn

# The distiller, as written:
# # Pre-activations: the input of a basic block's second ReLU call (the residual sum before the ReLU).
# distiller preact:
#     pre: student.layer1.0.relu:in@2 ~ teacher.layer1.0.relu:in@2 -> mse -> 1

# ---- what the loss uses, copied from autokd_dsl.standalone ---------------------------------------

def mse(s, t):
    return F.mse_loss(s, t)

def check_taps(shapes, **taps):
    """Name the tap whose activation (per sample) is not the shape the loss was compiled for."""
    for name, x in taps.items():
        if x.shape[1:] != shapes[name]:
            raise ValueError(f"tap `{name}`: expected {shapes[name]} per sample, as compiled, received "
                             f"{tuple(x.shape[1:])}: compile the distiller again for this input size")

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

kernels = types.SimpleNamespace(check_taps=check_taps, mse=mse)

# ---- the loss ------------------------------------------------------------------------------------

STUDENT_TAPS = {'s_layer1_0_relu_in2': 'layer1.0.relu:in@2'}
TEACHER_TAPS = {'t_layer1_0_relu_in2': 'layer1.0.relu:in@2'}
TAP_SHAPES = {'s_layer1_0_relu_in2': (16, 16, 16), 't_layer1_0_relu_in2': (16, 16, 16)}  # per sample, as compiled

class DistillerLoss(nn.Module):
    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""

    def __init__(self):
        super().__init__()
        self.tap_shapes = TAP_SHAPES

    def forward(self, s_layer1_0_relu_in2, t_layer1_0_relu_in2, labels = None, epoch = 0):
        tap_shapes = self.tap_shapes
        check_taps = kernels.check_taps(tap_shapes, s_layer1_0_relu_in2 = s_layer1_0_relu_in2, t_layer1_0_relu_in2 = t_layer1_0_relu_in2);  tap_shapes = check_taps = None
        t_layer1_0_relu_in2_detached = t_layer1_0_relu_in2.detach();  t_layer1_0_relu_in2 = None
        pre = kernels.mse(s_layer1_0_relu_in2, t_layer1_0_relu_in2_detached);  s_layer1_0_relu_in2 = t_layer1_0_relu_in2_detached = None
        return {'pre': pre, 'total': pre}

def attach(teacher, student, loss=None):
    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""
    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, TEACHER_TAPS)
