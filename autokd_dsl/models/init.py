"""Weight initialisation shared by the VGG and MobileNetV2 families (RepDistiller's: He fan-out normal for
convolutions, N(0, 0.01) for linear layers, BatchNorm at identity)."""

from __future__ import annotations

import math

from torch import nn


def fan_out_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 0.01)
            m.bias.data.zero_()
