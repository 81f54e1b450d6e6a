"""Distiller `at` compiled by autokd-dsl for teacher resnet14 and student resnet8
(input 3x16x16, 10 classes). Generated code: edit the .kd source and compile again.

    loss = DistillerLoss()                # learnable connectors are its parameters
    model = attach(teacher, student, loss)
    logits, losses = model(x, labels=y, epoch=epoch)   # losses['total'] is the training loss
"""


import math
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


# ---- kernels, connectors, hooks: copied from autokd_dsl (see tests/test_emit.py) ----


# ---- the loss ------------------------------------------------------------------------------------


STUDENT_TAPS = {'s_logits': 'fc', 's_stage1': 'layer1', 's_stage2': 'layer2', 's_stage3': 'layer3'}
TEACHER_TAPS = {'t_stage1': 'layer1', 't_stage2': 'layer2', 't_stage3': 'layer3'}
TERMS = ['ce', 'at']



class DistillerLoss(nn.Module):
    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""

    def __init__(self):
        super().__init__()

    def forward(self, s_logits, s_stage1, s_stage2, s_stage3, t_stage1, t_stage2, t_stage3, labels = None, epoch = 0):
        t_stage1_detached = t_stage1.detach();  t_stage1 = None
        t_stage2_detached = t_stage2.detach();  t_stage2 = None
        t_stage3_detached = t_stage3.detach();  t_stage3 = None
        ce = kernels.ce(s_logits, labels, soft = False, temp = 1);  s_logits = labels = None
        s_stage1_attention = kernels.attention(s_stage1, p = 2);  s_stage1 = None
        t_stage1_attention = kernels.attention(t_stage1_detached, p = 2);  t_stage1_detached = None
        at_mse = kernels.mse(s_stage1_attention, t_stage1_attention);  s_stage1_attention = t_stage1_attention = None
        s_stage2_attention = kernels.attention(s_stage2, p = 2);  s_stage2 = None
        t_stage2_attention = kernels.attention(t_stage2_detached, p = 2);  t_stage2_detached = None
        at_mse_1 = kernels.mse(s_stage2_attention, t_stage2_attention);  s_stage2_attention = t_stage2_attention = None
        s_stage3_attention = kernels.attention(s_stage3, p = 2);  s_stage3 = None
        t_stage3_attention = kernels.attention(t_stage3_detached, p = 2);  t_stage3_detached = None
        at_mse_2 = kernels.mse(s_stage3_attention, t_stage3_attention);  s_stage3_attention = t_stage3_attention = None
        add = at_mse + at_mse_1;  at_mse = at_mse_1 = None
        add_1 = add + at_mse_2;  add = at_mse_2 = None
        at = add_1 * 1000.0;  add_1 = None
        total = kernels.total(ce, at)
        return {'ce': ce, 'at': at, 'total': total}



def attach(teacher, student, loss=None):
    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""
    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, TEACHER_TAPS)
