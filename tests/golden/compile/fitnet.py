"""Distiller `fitnet` compiled by autokd-dsl for teacher wrn_40_2 and student wrn_40_1
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
# # FitNet-style hint with a channel mismatch (wrn_40_2 → wrn_40_1: 64 vs 32 channels at stage2).
# distiller fitnet(beta = 100):
#     ce: logits ~ labels -> ce -> 1
#     hint: stage2 -> adapt -> mse -> beta


# ---- kernels, connectors, hooks: copied from autokd_dsl (see tests/test_emit.py) ----


# ---- the loss ------------------------------------------------------------------------------------


STUDENT_TAPS = {'s_logits': 'fc', 's_stage2': 'block3.layer.0.relu1'}
TEACHER_TAPS = {'t_stage2': 'block3.layer.0.relu1'}
TERMS = ['ce', 'hint']



class DistillerLoss(nn.Module):
    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""

    def __init__(self):
        super().__init__()
        self.adapt_stage2 = Connector((32, 8, 8), (64, 8, 8))

    def forward(self, s_logits, s_stage2, t_stage2, labels = None, epoch = 0):
        t_stage2_detached = t_stage2.detach();  t_stage2 = None
        ce = kernels.ce(s_logits, labels, soft = False, temp = 1);  s_logits = labels = None
        s_stage2_adapt = self.adapt_stage2(s_stage2);  s_stage2 = None
        hint_mse = kernels.mse(s_stage2_adapt, t_stage2_detached);  s_stage2_adapt = t_stage2_detached = None
        hint = hint_mse * 100.0;  hint_mse = None
        total = kernels.total(ce, hint)
        return {'ce': ce, 'hint': hint, 'total': total}



def attach(teacher, student, loss=None):
    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""
    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, TEACHER_TAPS)
