"""Distiller `kd` compiled by autokd-dsl for teacher resnet14 and student resnet8
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
# # KD: Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network". NeurIPS Deep Learning Workshop, 2014.
# # Soft targets: KL(teacher ‖ student) between temperature-softened class distributions, scaled by t² so its
# # gradients keep their size as t changes; plus cross-entropy on the labels. CIFAR-100 recipe (RepDistiller):
# # t = 4, 0.9 on the soft term, 0.1 on the labels.
# distiller kd(t = 4, alpha = 0.9):
#     soft: logits -> softmax(t) -> kl -> alpha * t^2
#     hard: logits ~ labels -> ce -> 1 - alpha


# ---- kernels, connectors, hooks: copied from autokd_dsl (see tests/test_emit.py) ----


# ---- the loss ------------------------------------------------------------------------------------


STUDENT_TAPS = {'s_logits': 'fc'}
TEACHER_TAPS = {'t_logits': 'fc'}
TERMS = ['soft', 'hard']



class DistillerLoss(nn.Module):
    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""

    def __init__(self):
        super().__init__()

    def forward(self, s_logits, t_logits, labels = None, epoch = 0):
        t_logits_detached = t_logits.detach();  t_logits = None
        soft_kl = kernels.kl(s_logits, t_logits_detached, mode = 'logits', dims = (1,), temp = 4, reduce = 'batch');  t_logits_detached = None
        soft = soft_kl * 14.4;  soft_kl = None
        hard_ce = kernels.ce(s_logits, labels, soft = False, temp = 1);  s_logits = labels = None
        hard = hard_ce * 0.1;  hard_ce = None
        total = kernels.total(soft, hard)
        return {'soft': soft, 'hard': hard, 'total': total}



def attach(teacher, student, loss=None):
    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""
    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, TEACHER_TAPS)
