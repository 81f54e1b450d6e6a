"""Learnable connectors (`adapt`): map a student activation onto the teacher's shape.

Copied verbatim into compiled files (torch only). Sized from the real shapes (without the batch axis):

* map → map: resize to the teacher's H×W (average pooling down, bilinear up), 1×1 conv, BatchNorm;
* tokens → tokens: resample the token count, Linear on the feature axis;
* tokens → map (ViT → CNN): drop leading class/distillation tokens, fold the rest into a square grid, then as
  map → map; map → tokens: flatten positions into tokens, then as tokens → tokens;
* vector → vector: Linear; map or tokens → vector: average, then Linear.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def _resize(x, size):
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if x.shape[2] >= size[0] and x.shape[3] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Connector(nn.Module):
    def __init__(self, student_shape, teacher_shape):
        super().__init__()
        self.student_shape, self.teacher_shape = tuple(student_shape), tuple(teacher_shape)
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

    def forward(self, x):
        s, t = self.student_shape, self.teacher_shape
        if len(t) == 3:
            if len(s) == 2:
                x = self._grid(x)
            return self.bn(self.conv(_resize(x, t[1:])))
        if len(t) == 2:
            if len(s) == 3:
                x = x.flatten(2).transpose(1, 2)
            if x.shape[1] != t[0]:
                x = F.interpolate(x.transpose(1, 2), size=t[0], mode="linear", align_corners=False).transpose(1, 2)
            return self.linear(x)
        if x.dim() == 4:
            x = x.mean((2, 3))
        elif x.dim() == 3:
            x = x.mean(1)
        return self.linear(x)


def connector_fits(student_shape, teacher_shape):
    """Can a connector map this student shape onto this teacher shape?"""
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(t) == 1:
        return len(s) in (1, 2, 3)
    return len(t) in (2, 3) and len(s) in (2, 3)
