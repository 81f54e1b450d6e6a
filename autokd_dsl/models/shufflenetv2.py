"""ShuffleNetV2 1.0x of RepDistiller ("shufflev2"; Ma et al. 2018), widths 116/232/464, head 1024.

Stem: 1x1 conv to 24 channels + BN + ReLU (CIFAR variant: no stride, no max pool). Then **three
stages** ``layer1`` .. ``layer3``, each a stride-2 ``DownBlock`` followed by 3/7/3 ``BasicBlock`` s
(channel split in halves, one half through 1x1 -> depthwise 3x3 -> 1x1, concat, channel shuffle).
A 1x1 head conv ``conv2`` to 1024 channels + BN + ReLU, global average pooling and ``linear`` end
the network. Parameter names follow RepDistiller (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.1.bn3``, ``conv2``, ``bn2``, ``linear``).

Pre-activation: RepDistiller's basic block rectifies only the processed half, ``cat([x1, relu(b)])``.
The untouched half ``x1`` is a slice of the block input, which is always a ReLU output (the stem and
every block end in one), so ``x1 >= 0`` and ``cat([x1, relu(b)]) == relu(cat([x1, b]))``; a ReLU also
commutes with the channel shuffle. This module therefore computes ``relu_out(shuffle(cat([x1, b])))``,
numerically the same function, which makes ``relu_out:in`` a full-width pre-activation in the stage
output's channel order (RepDistiller's ``preact`` holds the same values, unshuffled).

Other differences that change neither parameters nor function: ReLUs are non in-place ``nn.ReLU``
modules, pooling is adaptive, ``in_chans`` sets ``conv1``'s input channels, ``forward`` returns the
logits only.

========== =========================================
stem       ``relu``
stageK     ``layerK`` (K = 1..3)
stageK_pre ``layerK.<last>.relu_out:in``
embedding  ``linear:in``
logits     ``linear``
========== =========================================
"""

from __future__ import annotations

import torch
from torch import nn

from autokd_dsl.models.shufflenetv1 import ShuffleBlock

__all__ = ["ShuffleNetV2", "BasicBlock", "DownBlock", "build_shufflev2", "SHUFFLEV2_CONFIGS"]


class SplitBlock(nn.Module):
    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = int(x.size(1) * self.ratio)
        return x[:, :c], x[:, c:]


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, split_ratio: float = 0.5) -> None:
        super().__init__()
        self.split = SplitBlock(split_ratio)
        c = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, stride=1, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shuffle = ShuffleBlock(2)
        self.relu_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.split(x)
        out = self.relu1(self.bn1(self.conv1(x2)))
        out = self.bn3(self.conv3(self.bn2(self.conv2(out))))
        # x1 >= 0 (see the module docstring), so this equals shuffle(cat([x1, relu(out)])).
        return self.relu_out(self.shuffle(torch.cat([x1, out], 1)))


class DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        # left branch: depthwise 3x3 stride 2 -> 1x1
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU()
        # right branch: 1x1 -> depthwise 3x3 stride 2 -> 1x1
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.relu3 = nn.ReLU()
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.relu5 = nn.ReLU()
        self.shuffle = ShuffleBlock(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.relu2(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.relu3(self.bn3(self.conv3(x)))
        right = self.relu5(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


SHUFFLEV2_CONFIGS: dict[float, dict[str, tuple[int, ...]]] = {
    0.5: {"out_channels": (48, 96, 192, 1024), "num_blocks": (3, 7, 3)},
    1.0: {"out_channels": (116, 232, 464, 1024), "num_blocks": (3, 7, 3)},
    1.5: {"out_channels": (176, 352, 704, 1024), "num_blocks": (3, 7, 3)},
    2.0: {"out_channels": (224, 488, 976, 2048), "num_blocks": (3, 7, 3)},
}


class ShuffleNetV2(nn.Module):
    def __init__(self, net_size: float = 1.0, num_classes: int = 100, in_chans: int = 3) -> None:
        super().__init__()
        out_channels = SHUFFLEV2_CONFIGS[net_size]["out_channels"]
        num_blocks = SHUFFLEV2_CONFIGS[net_size]["num_blocks"]
        self.conv1 = nn.Conv2d(in_chans, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.relu2 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(out_channels[3], num_classes)

        self.kd_aliases = {"stem": "relu", "embedding": "linear:in", "logits": "linear"}
        for k, n in enumerate(num_blocks, start=1):
            self.kd_aliases[f"stage{k}"] = f"layer{k}"
            # layerK holds the DownBlock at index 0, then n basic blocks at 1..n
            self.kd_aliases[f"stage{k}_pre"] = f"layer{k}.{n}.relu_out:in"

    def _make_layer(self, out_channels: int, num_blocks: int) -> nn.Sequential:
        layers: list[nn.Module] = [DownBlock(self.in_channels, out_channels)]
        layers += [BasicBlock(out_channels) for _ in range(num_blocks)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.linear(self.flatten(self.avgpool(x)))


def build_shufflev2(name: str = "shufflev2", num_classes: int = 100, in_chans: int = 3) -> ShuffleNetV2:
    return ShuffleNetV2(net_size=1.0, num_classes=num_classes, in_chans=in_chans)
