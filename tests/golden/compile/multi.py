"""Distiller `multi` compiled by autokd-dsl for teacher resnet32 and student resnet8
(input 3x16x16, 10 classes). Generated code: edit the .kd source and compile again.

    loss = DistillerLoss(t=4)   # the .kd defaults; learnable connectors are its parameters
    model = attach(teacher, student, loss)
    logits, losses = model(x, labels=y, epoch=epoch)   # losses['total'] is the training loss
"""

import functools
import types

import torch
import torch.nn.functional as F
from torch import nn

# The distiller, as written:
# # Three terms that share work: `at` and `at_cos` read the same attention maps (computed once per side).
# distiller multi(t = 4):
#     at: stage3 -> attention(2) -> mse -> 1000
#     at_cos: stage3 -> attention(2) -> cosine -> 10
#     inter: logits -> softmax(t) -> pearson -> t^2

# ---- what the loss uses, copied from autokd_dsl.standalone ---------------------------------------

def _power(x, p):
    """|x|^p: x·x for p = 2 (faster than pow, and its backward too), no abs for other even p."""
    if p == 2:
        return x * x
    return (x if float(p) % 2 == 0 else x.abs()).pow(p)

def attention(x, p=2.0):
    return F.normalize(_power(x, p).mean(1).flatten(1), dim=1)

def softmax(x, t=1.0, dims=(1,)):
    """Softmax of x / t over ``dims`` (adjacent dims, taken together)."""
    x = x if t == 1 else x / t
    return x.softmax(dims[0]) if len(dims) == 1 else x.flatten(dims[0], dims[-1]).softmax(dims[0]).view(x.shape)

def mse(s, t):
    return F.mse_loss(s, t)

def cosine(s, t):
    return torch.rsub(F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1, eps=1e-8).mean(), 1.0)

def pearson(s, t, dim=1, mean=None):
    """1 − ρ per sample (``dim`` 0: per column, the rows of the transposed tensors), averaged; ρ = Σ a·b / (‖a‖ ‖b‖
    + 1e-8) over the centred rows, DIST's form (not clamped norms, which differ where the student is close to the
    teacher and the centred norms are small). ``mean``: the rows' mean where it is known (1/K for a softmax)."""
    s, t = (s, t) if s.dim() == 2 else (s.flatten(1), t.flatten(1))
    if mean is None:
        s, t = s - s.mean(dim, keepdim=True), t - t.mean(dim, keepdim=True)
    else:
        s, t = s - mean, t - mean
    rho = (s * t).sum(dim) / (s.norm(dim=dim) * t.norm(dim=dim) + 1e-8)
    return torch.rsub(rho.mean(), 1.0)

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

kernels = types.SimpleNamespace(check_taps=check_taps, attention=attention, mse=mse, cosine=cosine, softmax=softmax, pearson=pearson)

# ---- the loss ------------------------------------------------------------------------------------

STUDENT_TAPS = {'s_stage3': 'layer3', 's_logits': 'fc'}
TEACHER_TAPS = {'t_stage3': 'layer3', 't_logits': 'fc'}
TAP_SHAPES = {'s_stage3': (64, 4, 4), 's_logits': (10,), 't_stage3': (64, 4, 4), 't_logits': (10,)}  # per sample, as compiled

class DistillerLoss(nn.Module):
    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""

    def __init__(self, t=4):
        super().__init__()
        self.t = t
        self.inter_weight = t ** 2
        self.tap_shapes = TAP_SHAPES

    def forward(self, s_stage3, s_logits, t_stage3, t_logits, labels = None, epoch = 0):
        tap_shapes = self.tap_shapes
        inter_weight = self.inter_weight
        t = self.t
        check_taps = kernels.check_taps(tap_shapes, s_stage3 = s_stage3, t_stage3 = t_stage3);  tap_shapes = check_taps = None
        t_stage3_detached = t_stage3.detach();  t_stage3 = None
        t_logits_detached = t_logits.detach();  t_logits = None
        s_stage3_attention = kernels.attention(s_stage3, p = 2);  s_stage3 = None
        t_stage3_attention = kernels.attention(t_stage3_detached, p = 2);  t_stage3_detached = None
        at_mse = kernels.mse(s_stage3_attention, t_stage3_attention)
        at = at_mse * 1000.0;  at_mse = None
        at_cos_cosine = kernels.cosine(s_stage3_attention, t_stage3_attention);  s_stage3_attention = t_stage3_attention = None
        at_cos = at_cos_cosine * 10.0;  at_cos_cosine = None
        s_logits_softmax = kernels.softmax(s_logits, t = t, dims = (1,));  s_logits = None
        t_logits_softmax = kernels.softmax(t_logits_detached, t = t, dims = (1,));  t_logits_detached = t = None
        inter_pearson = kernels.pearson(s_logits_softmax, t_logits_softmax, mean = 0.1);  s_logits_softmax = t_logits_softmax = None
        inter = inter_pearson * inter_weight;  inter_pearson = inter_weight = None
        add = at + at_cos
        total = add + inter;  add = None
        return {'at': at, 'at_cos': at_cos, 'inter': inter, 'total': total}

def attach(teacher, student, loss=None):
    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""
    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, TEACHER_TAPS)
