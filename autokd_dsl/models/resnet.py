"""CIFAR ResNets of RepDistiller (He et al. 2016, CIFAR variant; Tian et al. 2020 model zoo).

``resnet{8,14,20,32,44,56,110}`` use widths 16/32/64 (after a 16-channel stem); ``resnet8x4`` and
``resnet32x4`` use widths 64/128/256 after a 32-channel stem. Depth ``d`` gives ``(d - 2) / 6``
basic blocks per stage. All of them have **three stages** (``layer1`` .. ``layer3``); the
"x4" variants are wider, not deeper, so they also have three.

Parameter names follow RepDistiller (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
``fc``) so its checkpoints load with ``load_state_dict``. Differences from RepDistiller, none of
which changes the parameters or the function computed:

* the classifier is preceded by adaptive average pooling (so 16x16 and 8x8 inputs work);
* every ReLU is a (non in-place) ``nn.ReLU`` module so forward hooks can tap its input and output.
  A basic block calls its ``relu`` twice: ``@1`` after ``bn1``, ``@2`` on the residual sum, so
  ``layerK.<last>.relu:in@2`` is the pre-activation of the stage output (what OFD / AB need);
* ``in_chans`` sets the input channels of ``conv1``; ``forward`` returns the logits only.

Aliases (``kd_aliases``):

========== ===================================
stem       ``relu`` (conv1 + bn1 + relu)
stageK     ``layerK`` (K = 1..3)
stageK_pre ``layerK.<n-1>.relu:in@2``
embedding  ``fc:in``
logits     ``fc``
========== ===================================
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "build_resnet", "RESNET_CONFIGS"]


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1
    # number of times ``relu`` runs per forward; the last call is the block's output nonlinearity
    relu_calls = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """Bottleneck block (kept for RepDistiller parity; no registered zoo model uses it)."""

    expansion = 4
    relu_calls = 3

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        num_filters: list[int],
        block_name: str = "basicblock",
        num_classes: int = 100,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if block_name.lower() == "basicblock":
            if (depth - 2) % 6 != 0:
                raise ValueError("basic-block ResNet depth must be 6n + 2")
            n, block = (depth - 2) // 6, BasicBlock
        elif block_name.lower() == "bottleneck":
            if (depth - 2) % 9 != 0:
                raise ValueError("bottleneck ResNet depth must be 9n + 2")
            n, block = (depth - 2) // 9, Bottleneck
        else:
            raise ValueError(f"unknown block {block_name!r}")
        self.blocks_per_stage = n
        self.block = block
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(in_chans, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(block, num_filters[1], n)
        self.layer2 = self._make_layer(block, num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(block, num_filters[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(num_filters[3] * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

        last = n - 1
        self.kd_aliases = {
            "stem": "relu",
            "embedding": "fc:in",
            "logits": "fc",
        }
        for k in (1, 2, 3):
            self.kd_aliases[f"stage{k}"] = f"layer{k}"
            self.kd_aliases[f"stage{k}_pre"] = f"layer{k}.{last}.relu:in@{block.relu_calls}"

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


_THIN = [16, 16, 32, 64]
_WIDE = [32, 64, 128, 256]

#: name -> (depth, filters)
RESNET_CONFIGS: dict[str, tuple[int, list[int]]] = {
    "resnet8": (8, _THIN),
    "resnet14": (14, _THIN),
    "resnet20": (20, _THIN),
    "resnet32": (32, _THIN),
    "resnet44": (44, _THIN),
    "resnet56": (56, _THIN),
    "resnet110": (110, _THIN),
    "resnet8x4": (8, _WIDE),
    "resnet32x4": (32, _WIDE),
}


def build_resnet(name: str, num_classes: int = 100, in_chans: int = 3) -> ResNet:
    depth, filters = RESNET_CONFIGS[name]
    return ResNet(depth, list(filters), "basicblock", num_classes=num_classes, in_chans=in_chans)
