"""Wide ResNets of RepDistiller (Zagoruyko & Komodakis 2016; pre-activation blocks).

``wrn_D_W`` has depth ``D`` (``(D - 4) / 6`` blocks per stage), widths ``16W/32W/64W`` after a
16-channel stem conv, and **three stages** (``block1`` .. ``block3``). Dropout is off (RepDistiller
trains with ``dropRate=0``).

Parameter names follow RepDistiller (``conv1``, ``block1.layer.0.bn1``, ``block2.layer.0.convShortcut``,
``bn1``, ``fc``). Differences that change neither parameters nor function: adaptive average pooling
before ``fc``, non in-place ``nn.ReLU`` modules, ``in_chans`` for ``conv1``, logits-only ``forward``.

A pre-activation network has no activation at the end of a stage: the sum leaving stage K is
normalised and rectified by the *first block of stage K+1* (``bn1`` + ``relu1``) or, for the last
stage, by the head (``bn1`` + ``relu``). The aliases therefore follow RepDistiller's WRN features
(its ``get_bn_before_relu`` returns ``block2.layer[0].bn1``, ``block3.layer[0].bn1``, ``bn1``):

========== ============================================================
stem       ``conv1`` (the stem is a bare conv; no bn/relu of its own)
stage1     ``block2.layer.0.relu1``  (stage-1 output after bn+relu)
stage2     ``block3.layer.0.relu1``
stage3     ``relu``
stageK_pre the same modules with ``:in`` (bn output, input of the relu)
embedding  ``fc:in``
logits     ``fc``
========== ============================================================
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["WideResNet", "BasicBlock", "NetworkBlock", "build_wrn", "WRN_CONFIGS"]


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = drop_rate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (
            None
            if self.equalInOut
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        # RepDistiller: the shortcut of a channel-changing block starts from the activated input,
        # an identity shortcut from the raw input.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        return shortcut + self.conv2(out)


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(nb_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(
        self, depth: int, num_classes: int = 100, widen_factor: int = 1, drop_rate: float = 0.0, in_chans: int = 3
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError("WRN depth must be 6n + 4")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_chans, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = ch[3]

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

        self.kd_aliases = {
            "stem": "conv1",
            "stage1": "block2.layer.0.relu1",
            "stage1_pre": "block2.layer.0.relu1:in",
            "stage2": "block3.layer.0.relu1",
            "stage2_pre": "block3.layer.0.relu1:in",
            "stage3": "relu",
            "stage3_pre": "relu:in",
            "embedding": "fc:in",
            "logits": "fc",
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        x = self.relu(self.bn1(x))
        return self.fc(self.flatten(self.avgpool(x)))


#: name -> (depth, widen factor)
WRN_CONFIGS: dict[str, tuple[int, int]] = {
    "wrn_16_1": (16, 1),
    "wrn_16_2": (16, 2),
    "wrn_40_1": (40, 1),
    "wrn_40_2": (40, 2),
}


def build_wrn(name: str, num_classes: int = 100, in_chans: int = 3) -> WideResNet:
    depth, widen = WRN_CONFIGS[name]
    return WideResNet(depth, num_classes=num_classes, widen_factor=widen, in_chans=in_chans)
