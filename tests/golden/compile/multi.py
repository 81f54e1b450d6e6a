"""Distiller `multi` compiled by autokd-dsl for teacher resnet32 and student resnet8
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
# # Three terms that share work: `at` and `at_cos` read the same attention maps (computed once per side).
# distiller multi(t = 4):
#     at: stage3 -> attention(2) -> mse -> 1000
#     at_cos: stage3 -> attention(2) -> cosine -> 10
#     inter: logits -> softmax(t) -> pearson -> t^2


# ---- kernels, connectors, hooks: copied from autokd_dsl (see tests/test_emit.py) ----


# ---- the loss ------------------------------------------------------------------------------------


STUDENT_TAPS = {'s_stage3': 'layer3', 's_logits': 'fc'}
TEACHER_TAPS = {'t_stage3': 'layer3', 't_logits': 'fc'}
TERMS = ['at', 'at_cos', 'inter']



class DistillerLoss(nn.Module):
    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""

    def __init__(self):
        super().__init__()

    def forward(self, s_stage3, s_logits, t_stage3, t_logits, labels = None, epoch = 0):
        t_stage3_detached = t_stage3.detach();  t_stage3 = None
        t_logits_detached = t_logits.detach();  t_logits = None
        s_stage3_attention = kernels.attention(s_stage3, p = 2);  s_stage3 = None
        t_stage3_attention = kernels.attention(t_stage3_detached, p = 2);  t_stage3_detached = None
        at_mse = kernels.mse(s_stage3_attention, t_stage3_attention)
        at = at_mse * 1000.0;  at_mse = None
        at_cos_cosine = kernels.cosine(s_stage3_attention, t_stage3_attention);  s_stage3_attention = t_stage3_attention = None
        at_cos = at_cos_cosine * 10.0;  at_cos_cosine = None
        s_logits_softmax = kernels.softmax(s_logits, t = 4, dims = (1,));  s_logits = None
        t_logits_softmax = kernels.softmax(t_logits_detached, t = 4, dims = (1,));  t_logits_detached = None
        inter_pearson = kernels.pearson(s_logits_softmax, t_logits_softmax);  s_logits_softmax = t_logits_softmax = None
        inter = inter_pearson * 16.0;  inter_pearson = None
        total = kernels.total(at, at_cos, inter)
        return {'at': at, 'at_cos': at_cos, 'inter': inter, 'total': total}



def attach(teacher, student, loss=None):
    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""
    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, TEACHER_TAPS)
