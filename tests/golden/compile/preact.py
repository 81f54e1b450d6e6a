"""Distiller `preact` compiled by autokd-dsl for teacher resnet32 and student resnet8
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
# # Pre-activations: the input of a basic block's second ReLU call (the residual sum before the ReLU).
# distiller preact:
#     pre: student.layer1.0.relu:in@2 ~ teacher.layer1.0.relu:in@2 -> mse -> 1


# ---- kernels, connectors, hooks: copied from autokd_dsl (see tests/test_emit.py) ----


# ---- the loss ------------------------------------------------------------------------------------


STUDENT_TAPS = {'s_layer1_0_relu_in2': 'layer1.0.relu:in@2'}
TEACHER_TAPS = {'t_layer1_0_relu_in2': 'layer1.0.relu:in@2'}
TERMS = ['pre']



class DistillerLoss(nn.Module):
    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""

    def __init__(self):
        super().__init__()

    def forward(self, s_layer1_0_relu_in2, t_layer1_0_relu_in2, labels = None, epoch = 0):
        t_layer1_0_relu_in2_detached = t_layer1_0_relu_in2.detach();  t_layer1_0_relu_in2 = None
        pre = kernels.mse(s_layer1_0_relu_in2, t_layer1_0_relu_in2_detached);  s_layer1_0_relu_in2 = t_layer1_0_relu_in2_detached = None
        total = kernels.total(pre)
        return {'pre': pre, 'total': total}



def attach(teacher, student, loss=None):
    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""
    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, TEACHER_TAPS)
