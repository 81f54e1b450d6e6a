"""MobileNetV2 of RepDistiller (Sandler et al. 2018), width 0.5, expansion 6 ("mobile_half").

Stem ``conv1`` (3x3 stride-2 conv + BN + ReLU, 16 channels at width 0.5), seven groups of inverted
residual blocks ``blocks.0`` .. ``blocks.6`` (settings t/c/n/s: 1/16/1/1, 6/24/2/1, 6/32/3/2,
6/64/4/2, 6/96/3/1, 6/160/3/2, 6/320/1/1, channels scaled by the width), a 1x1 head conv ``conv2``
to 1280 channels, global average pooling and ``classifier`` (an ``nn.Sequential`` holding one
``nn.Linear``, as in RepDistiller). As in RepDistiller, the expansion 1x1 conv is present even in
the t=1 group. Parameter names follow RepDistiller (``conv1.0``, ``blocks.1.0.conv.3``, ``conv2.0``,
``classifier.0``).

The natural stage count is **four**, at RepDistiller's feature points (resolution changes):
``blocks.1``, ``blocks.2``, ``blocks.4``, ``blocks.6``.

Blocks end in a *linear* bottleneck (conv + BN, no activation), so a stage output has no
nonlinearity after it: ``stageK_pre`` maps to the stage output itself, the closest equivalent
(it is also what RepDistiller hands to OFD for this network).

========== ==================================================
stem       ``conv1`` (conv + bn + relu)
stage1..4  ``blocks.1``, ``blocks.2``, ``blocks.4``, ``blocks.6``
stageK_pre same as stageK (linear bottleneck, no activation)
embedding  ``classifier:in``
logits     ``classifier``
========== ==================================================
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autokd_dsl.models.init import fan_out_init

__all__ = ["MobileNetV2", "InvertedResidual", "build_mobilenetv2"]


def _conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU())


def _conv_1x1_bn(inp: int, oup: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU())


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        hidden = inp * expand_ratio
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),  # pointwise expansion
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),  # depthwise
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),  # pointwise linear projection
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


#: t (expansion), c (channels at width 1), n (blocks), s (first stride)
_SETTINGS = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]

_STAGE_BLOCKS = (1, 2, 4, 6)


def _make_divisible(v: float, divisor: int = 8) -> int:
    return int(math.ceil(v / divisor) * divisor)


class MobileNetV2(nn.Module):
    def __init__(self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100, in_chans: int = 3):
        super().__init__()
        input_channel = int(32 * width_mult)
        self.conv1 = _conv_bn(in_chans, input_channel, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in _SETTINGS:
            t = expansion if t is None else t
            output_channel = int(c * width_mult)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = _make_divisible(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_1x1_bn(input_channel, self.last_channel)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))

        fan_out_init(self)

        self.kd_aliases = {"stem": "conv1", "embedding": "classifier:in", "logits": "classifier"}
        for k, idx in enumerate(_STAGE_BLOCKS, start=1):
            self.kd_aliases[f"stage{k}"] = f"blocks.{idx}"
            self.kd_aliases[f"stage{k}_pre"] = f"blocks.{idx}"  # linear bottleneck: no activation to precede

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.blocks:
            x = block(x)
        x = self.conv2(x)
        return self.classifier(self.flatten(self.avgpool(x)))


def build_mobilenetv2(name: str = "mobilenetv2", num_classes: int = 100, in_chans: int = 3) -> MobileNetV2:
    return MobileNetV2(expansion=6, width_mult=0.5, num_classes=num_classes, in_chans=in_chans)
