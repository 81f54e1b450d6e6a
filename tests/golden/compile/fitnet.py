"""Distiller `fitnet` compiled by autokd-dsl for teacher wrn_40_2 and student wrn_40_1
(input 3x16x16, 10 classes). Generated code: edit the .kd source and compile again.

    loss = DistillerLoss(beta=100)   # the .kd defaults; learnable connectors are its parameters
    model = attach(teacher, student, loss)
    logits, losses = model(x, labels=y, epoch=epoch)   # losses['total'] is the training loss
"""

import functools
import math
import types

import torch
import torch.nn.functional as F
from torch import nn

# The distiller, as written:
# # FitNet-style hint with a channel mismatch (wrn_40_2 → wrn_40_1: 64 vs 32 channels at stage2).
# distiller fitnet(beta = 100):
#     ce: logits ~ labels -> ce -> 1
#     hint: stage2 -> adapt -> mse -> beta

# ---- what the loss uses, copied from autokd_dsl.standalone ---------------------------------------

def mse(s, t):
    return F.mse_loss(s, t)

def ce(s, target, soft=False, t=1.0):
    """Cross-entropy of the logits ``s`` / t against class labels, or a distribution (``soft``)."""
    s = s if t == 1 else s / t
    return -(target * F.log_softmax(s, dim=1)).sum(1).mean() if soft else F.cross_entropy(s, target)

def check_taps(shapes, **taps):
    """Name the tap whose activation (per sample) is not the shape the loss was compiled for."""
    for name, x in taps.items():
        if x.shape[1:] != shapes[name]:
            raise ValueError(f"tap `{name}`: expected {shapes[name]} per sample, as compiled, received "
                             f"{tuple(x.shape[1:])}: compile the distiller again for this input size")

class Part(nn.Module):
    """The base of every module behind an op, with the two hooks the compiler and `attach` use:

    * ``args``: the constructor arguments (shapes without the batch axis, numbers, module paths); a compiled
      file rebuilds the module as ``type(module)(*module.args)``;
    * ``reads_teacher``: when True, ``copy_from_teacher(teacher)`` copies values out of the teacher model, at
      compile time and again whenever the loss is attached to a teacher (`Attached`).
    """

    reads_teacher = False

    def __init__(self, *args):
        super().__init__()
        self.args = args

    def copy_from_teacher(self, teacher):
        raise NotImplementedError(f"{type(self).__name__} reads nothing from the teacher")

def _resize(x, size):
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if x.shape[2] >= size[0] and x.shape[3] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

class Connector(Part):
    def __init__(self, student_shape, teacher_shape):
        super().__init__(tuple(student_shape), tuple(teacher_shape))
        self.student_shape, self.teacher_shape = self.args
        s, t = self.student_shape, self.teacher_shape
        if len(t) == 3:
            channels = s[0] if len(s) == 3 else s[1]
            self.conv = nn.Conv2d(channels, t[0], kernel_size=1, bias=False)
            self.bn = nn.BatchNorm2d(t[0])
        else:
            self.linear = nn.Linear(s[-1] if len(s) != 3 else s[0], t[-1])

    def _grid(self, x):
        n, length, dim = x.shape
        side = math.isqrt(length)
        return x[:, length - side * side:].transpose(1, 2).reshape(n, dim, side, side)

    def _tokens(self, grid, length, leading=None):
        """A map (N, D, H, W) onto ``length`` tokens: the map resized to the largest square in the count, in
        raster order, after the leading tokens the square leaves over. ``leading`` (N, K, D), a student's own
        leading tokens, is kept where K is that many, otherwise averaged; without any, the map's average."""
        side = math.isqrt(length)
        count = length - side * side
        cells = _resize(grid, (side, side)).flatten(2).transpose(1, 2)
        if leading is None or leading.shape[1] != count:
            none = leading is None or leading.shape[1] == 0
            leading = (grid.mean((2, 3))[:, None] if none else leading.mean(1, keepdim=True)).expand(-1, count, -1)
        return torch.cat([leading, cells], dim=1)

    def forward(self, x):
        s, t = self.student_shape, self.teacher_shape
        if len(t) == 3:
            if len(s) == 2:
                x = self._grid(x)
            return self.bn(self.conv(_resize(x, t[1:])))
        if len(t) == 2:
            if len(s) == 3:
                x = self._tokens(x, t[0])
            elif x.shape[1] != t[0]:
                x = self._tokens(self._grid(x), t[0], x[:, :x.shape[1] - math.isqrt(x.shape[1]) ** 2])
            return self.linear(x)
        if x.dim() == 4:
            x = x.mean((2, 3))
        elif x.dim() == 3:
            x = x.mean(1)
        return self.linear(x)

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

kernels = types.SimpleNamespace(check_taps=check_taps, ce=ce, mse=mse)

# ---- the loss ------------------------------------------------------------------------------------

STUDENT_TAPS = {'s_logits': 'fc', 's_stage2': 'block3.layer.0.relu1'}
TEACHER_TAPS = {'t_stage2': 'block3.layer.0.relu1'}
TAP_SHAPES = {'s_logits': (10,), 's_stage2': (32, 8, 8), 't_stage2': (64, 8, 8)}  # per sample, as compiled

class DistillerLoss(nn.Module):
    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""

    def __init__(self, beta=100):
        super().__init__()
        self.hint_weight = beta
        self.tap_shapes = TAP_SHAPES
        self.adapt_stage2 = Connector((32, 8, 8), (64, 8, 8))

    def forward(self, s_logits, s_stage2, t_stage2, labels = None, epoch = 0):
        tap_shapes = self.tap_shapes
        hint_weight = self.hint_weight
        check_taps = kernels.check_taps(tap_shapes, s_stage2 = s_stage2, t_stage2 = t_stage2);  tap_shapes = check_taps = None
        t_stage2_detached = t_stage2.detach();  t_stage2 = None
        ce = kernels.ce(s_logits, labels, t = 1, soft = False);  s_logits = labels = None
        s_stage2_adapt = self.adapt_stage2(s_stage2);  s_stage2 = None
        hint_mse = kernels.mse(s_stage2_adapt, t_stage2_detached);  s_stage2_adapt = t_stage2_detached = None
        hint = hint_mse * hint_weight;  hint_mse = hint_weight = None
        total = ce + hint
        return {'ce': ce, 'hint': hint, 'total': total}

def attach(teacher, student, loss=None):
    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""
    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, TEACHER_TAPS)
