"""Distiller `kd` compiled by autokd-dsl for teacher resnet14 and student resnet8
(input 3x16x16, 10 classes). Generated code: edit the .kd source and compile again.

    loss = DistillerLoss(t=4, alpha=0.9)   # the .kd defaults; learnable connectors are its parameters
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
# # KD: Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network". NeurIPS Deep Learning Workshop, 2014.
# # Soft targets: KL(teacher ‖ student) between temperature-softened class distributions, scaled by t² so its
# # gradients keep their size as t changes; plus cross-entropy on the labels. CIFAR-100 recipe (RepDistiller):
# # t = 4, 0.9 on the soft term, 0.1 on the labels.
# distiller kd(t = 4, alpha = 0.9):
#     soft: logits -> softmax(t) -> kl -> alpha * t^2
#     hard: logits ~ labels -> ce -> 1 - alpha

# ---- what the loss uses, copied from autokd_dsl.standalone ---------------------------------------

EPS = 1e-7

def log_softmax(x, t=1.0, dims=(1,)):
    x = x if t == 1 else x / t
    if len(dims) > 1:
        return x.flatten(dims[0], dims[-1]).log_softmax(dims[0]).view(x.shape)
    return x.log_softmax(dims[0])

def kl(s, target, mode="p", dims=(1,), t=1.0, reduce="batch", weight=1.0):
    """KL(target ‖ s) summed over ``dims``, averaged over the rest (reduce "all": over every entry), on "p", "logp",
    or "logits" (an exact log-softmax of x / t first); times ``weight`` (a term's weight, folded into the mean's
    division)."""
    if mode == "p":
        total = (target * (torch.log(target + EPS) - torch.log(s + EPS))).sum()
    else:
        if mode == "logits":
            s, target = log_softmax(s, t, dims), log_softmax(target, t, dims)
        total = F.kl_div(s, target, reduction="sum", log_target=True)
    return total * (weight / (s.numel() if reduce == "all" else s.numel() // math.prod(s.shape[d] for d in dims)))

def ce(s, target, soft=False, t=1.0):
    """Cross-entropy of the logits ``s`` / t against class labels, or a distribution (``soft``)."""
    s = s if t == 1 else s / t
    return -(target * F.log_softmax(s, dim=1)).sum(1).mean() if soft else F.cross_entropy(s, target)

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

kernels = types.SimpleNamespace(kl=kl, ce=ce)

# ---- the loss ------------------------------------------------------------------------------------

STUDENT_TAPS = {'s_logits': 'fc'}
TEACHER_TAPS = {'t_logits': 'fc'}
TAP_SHAPES = {'s_logits': (10,), 't_logits': (10,)}  # per sample, as compiled

class DistillerLoss(nn.Module):
    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""

    def __init__(self, t=4, alpha=0.9):
        super().__init__()
        self.t = t
        self.soft_weight = alpha * t ** 2
        self.hard_weight = 1 - alpha

    def forward(self, s_logits, t_logits, labels = None, epoch = 0):
        soft_weight = self.soft_weight
        t = self.t
        hard_weight = self.hard_weight
        t_logits_detached = t_logits.detach();  t_logits = None
        soft = kernels.kl(s_logits, t_logits_detached, t = t, mode = 'logits', dims = (1,), weight = soft_weight);  t_logits_detached = t = soft_weight = None
        hard_ce = kernels.ce(s_logits, labels, t = 1, soft = False);  s_logits = labels = None
        hard = hard_ce * hard_weight;  hard_ce = hard_weight = None
        total = soft + hard
        return {'soft': soft, 'hard': hard, 'total': total}

def attach(teacher, student, loss=None):
    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""
    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, TEACHER_TAPS)
