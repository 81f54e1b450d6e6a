"""Distiller `at` compiled by autokd-dsl for teacher resnet14 and student resnet8
(input 3x16x16, 10 classes). Generated code: edit the .kd source and compile again.

    loss = DistillerLoss(p=2, beta=1000)   # the .kd defaults; learnable connectors are its parameters
    model = attach(teacher, student, loss)
    logits, losses = model(x, labels=y, epoch=epoch)   # losses['total'] is the training loss
"""

import functools
import types

import torch
import torch.nn.functional as F
from torch import nn

# The distiller, as written:
# # AT: Zagoruyko, Komodakis. "Paying More Attention to Attention: Improving the Performance of Convolutional
# # Neural Networks via Attention Transfer". ICLR 2017.
# # Spatial attention maps (mean over channels of |x|^p, flattened and L2-normalised) of each stage are matched
# # with the squared error. CIFAR-100 recipe (RepDistiller): p = 2, weight 1000 (the 1/2 of the paper's form is
# # folded into it), cross-entropy weight 1.
# distiller at(p = 2, beta = 1000):
#     ce: logits ~ labels -> ce -> 1
#     at: stage1, stage2, stage3 -> attention(p) -> mse -> beta

# ---- what the loss uses, copied from autokd_dsl.standalone ---------------------------------------

def _power(x, p):
    """|x|^p: x·x for p = 2 (faster than pow, and its backward too), no abs for other even p."""
    if p == 2:
        return x * x
    return (x if float(p) % 2 == 0 else x.abs()).pow(p)

def attention(x, p=2.0):
    return F.normalize(_power(x, p).mean(1).flatten(1), dim=1)

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

kernels = types.SimpleNamespace(check_taps=check_taps, ce=ce, attention=attention, mse=mse)

# ---- the loss ------------------------------------------------------------------------------------

STUDENT_TAPS = {'s_logits': 'fc', 's_stage1': 'layer1', 's_stage2': 'layer2', 's_stage3': 'layer3'}
TEACHER_TAPS = {'t_stage1': 'layer1', 't_stage2': 'layer2', 't_stage3': 'layer3'}
TAP_SHAPES = {'s_logits': (10,), 's_stage1': (16, 16, 16), 's_stage2': (32, 8, 8), 's_stage3': (64, 4, 4), 't_stage1': (16, 16, 16), 't_stage2': (32, 8, 8), 't_stage3': (64, 4, 4)}  # per sample, as compiled

class DistillerLoss(nn.Module):
    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""

    def __init__(self, p=2, beta=1000):
        super().__init__()
        self.p = p
        self.at_weight = beta
        self.tap_shapes = TAP_SHAPES

    def forward(self, s_logits, s_stage1, s_stage2, s_stage3, t_stage1, t_stage2, t_stage3, labels = None, epoch = 0):
        tap_shapes = self.tap_shapes
        at_weight = self.at_weight
        p = self.p
        check_taps = kernels.check_taps(tap_shapes, s_stage1 = s_stage1, s_stage2 = s_stage2, s_stage3 = s_stage3, t_stage1 = t_stage1, t_stage2 = t_stage2, t_stage3 = t_stage3);  tap_shapes = check_taps = None
        t_stage1_detached = t_stage1.detach();  t_stage1 = None
        t_stage2_detached = t_stage2.detach();  t_stage2 = None
        t_stage3_detached = t_stage3.detach();  t_stage3 = None
        ce = kernels.ce(s_logits, labels, t = 1, soft = False);  s_logits = labels = None
        s_stage1_attention = kernels.attention(s_stage1, p = p);  s_stage1 = None
        t_stage1_attention = kernels.attention(t_stage1_detached, p = p);  t_stage1_detached = None
        at_mse = kernels.mse(s_stage1_attention, t_stage1_attention);  s_stage1_attention = t_stage1_attention = None
        s_stage2_attention = kernels.attention(s_stage2, p = p);  s_stage2 = None
        t_stage2_attention = kernels.attention(t_stage2_detached, p = p);  t_stage2_detached = None
        at_mse_1 = kernels.mse(s_stage2_attention, t_stage2_attention);  s_stage2_attention = t_stage2_attention = None
        s_stage3_attention = kernels.attention(s_stage3, p = p);  s_stage3 = None
        t_stage3_attention = kernels.attention(t_stage3_detached, p = p);  t_stage3_detached = p = None
        at_mse_2 = kernels.mse(s_stage3_attention, t_stage3_attention);  s_stage3_attention = t_stage3_attention = None
        add = at_mse + at_mse_1;  at_mse = at_mse_1 = None
        add_1 = add + at_mse_2;  add = at_mse_2 = None
        at = add_1 * at_weight;  add_1 = at_weight = None
        total = ce + at
        return {'ce': ce, 'at': at, 'total': total}

def attach(teacher, student, loss=None):
    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""
    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, TEACHER_TAPS)
