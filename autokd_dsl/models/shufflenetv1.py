"""ShuffleNetV1 of RepDistiller ("shufflev1"; Zhang et al. 2018), groups 3, widths 240/480/960.

Stem: 1x1 conv to 24 channels + BN + ReLU (no stride, no max pool: CIFAR variant). Then **three
stages** ``layer1`` .. ``layer3`` of 4/8/4 bottlenecks; the first bottleneck of each stage has
stride 2 and concatenates its output with a 3x3 average-pooled shortcut, the others add an
identity shortcut. Global average pooling and ``linear`` finish the network.

Parameter names follow RepDistiller (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.bn3``,
``linear``). Differences that change neither parameters nor function: every ReLU is an ``nn.ReLU``
module (``relu`` in the stem; ``relu1``, ``relu2`` and ``relu_out`` in a bottleneck), ReLUs are not
in-place, pooling is adaptive, ``in_chans`` sets ``conv1``'s input channels, ``forward`` returns the
logits only.

========== ======================================
stem       ``relu``
stageK     ``layerK`` (K = 1..3)
stageK_pre ``layerK.<last>.relu_out:in`` (sum / concat before the final ReLU)
embedding  ``linear:in``
logits     ``linear``
========== ======================================
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ShuffleNetV1", "ShuffleBlock", "Bottleneck", "build_shufflev1"]


class ShuffleBlock(nn.Module):
    """Channel shuffle: view channels as (groups, C/groups), transpose, flatten."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.groups
        return x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


class Bottleneck(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        g = 1 if in_planes == 24 else groups  # the first 1x1 after the 24-channel stem is not grouped
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.relu1 = nn.ReLU()
        self.shuffle1 = ShuffleBlock(groups=g)
        self.conv2 = nn.Conv2d(
            mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1, groups=mid_planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle1(self.relu1(self.bn1(self.conv1(x))))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        preact = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return self.relu_out(preact)


class ShuffleNetV1(nn.Module):
    def __init__(
        self,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(out_planes[2], num_classes)

        self.kd_aliases = {"stem": "relu", "embedding": "linear:in", "logits": "linear"}
        for k, n in enumerate(num_blocks, start=1):
            self.kd_aliases[f"stage{k}"] = f"layer{k}"
            self.kd_aliases[f"stage{k}_pre"] = f"layer{k}.{n - 1}.relu_out:in"

    def _make_layer(self, out_planes: int, num_blocks: int, groups: int) -> nn.Sequential:
        layers = []
        for i in range(num_blocks):
            stride = 2 if i == 0 else 1
            cat_planes = self.in_planes if i == 0 else 0  # the stride-2 block concatenates its input
            layers.append(Bottleneck(self.in_planes, out_planes - cat_planes, stride=stride, groups=groups))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.flatten(self.avgpool(x)))


def build_shufflev1(name: str = "shufflev1", num_classes: int = 100, in_chans: int = 3) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes=num_classes, in_chans=in_chans)
