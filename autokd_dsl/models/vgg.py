"""VGG with batch norm, as in RepDistiller's CIFAR zoo (Simonyan & Zisserman 2015).

The network is five conv groups ``block0`` .. ``block4`` (each ``conv3x3 + BN [+ ReLU]``, the group's
final ReLU split out of the ``nn.Sequential`` so the group ends in a BN) separated by 2x2 max pools,
then global average pooling and one linear ``classifier``. ``block0`` is the stem; the natural
stage count is **four** (``block1`` .. ``block4``). As in RepDistiller, ``pool3`` is only applied
to large inputs (64x64 and up); for CIFAR sizes ``block3`` and ``block4`` share a resolution.

Configurations (channels per conv): vgg8 ``64|128|256|512|512``, vgg11 ``64|128|256,256|512,512|512,512``,
vgg13 ``64,64|128,128|256,256|512,512|512,512``, vgg16 and vgg19 with 3 and 4 convs in the last three
groups. Parameter names follow RepDistiller (``block0.0``, ``block0.1``, ..., ``classifier``).
Differences that change neither parameters nor function: the group ReLUs are ``nn.ReLU`` modules
``relu0`` .. ``relu4`` (RepDistiller calls ``F.relu``), ReLUs are not in-place, ``in_chans`` sets the
first conv's input channels, ``forward`` returns the logits only.

========== =====================================
stem       ``relu0`` (block0 + relu)
stageK     ``reluK`` (K = 1..4)
stageK_pre ``reluK:in`` (= output of blockK, a BN)
embedding  ``classifier:in``
logits     ``classifier``
========== =====================================
"""

from __future__ import annotations

import torch
from torch import nn

from autokd_dsl.models.init import fan_out_init

__all__ = ["VGG", "build_vgg", "VGG_CONFIGS"]

VGG_CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _make_group(channels: list[int], in_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in channels:
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU())
        in_channels = v
    return nn.Sequential(*layers[:-1])  # the group's last ReLU lives outside (relu0..relu4)


class VGG(nn.Module):
    def __init__(self, cfg: list[list[int]], batch_norm: bool = True, num_classes: int = 100, in_chans: int = 3):
        super().__init__()
        self.block0 = _make_group(cfg[0], in_chans, batch_norm)
        self.block1 = _make_group(cfg[1], cfg[0][-1], batch_norm)
        self.block2 = _make_group(cfg[2], cfg[1][-1], batch_norm)
        self.block3 = _make_group(cfg[3], cfg[2][-1], batch_norm)
        self.block4 = _make_group(cfg[4], cfg[3][-1], batch_norm)
        self.relu0 = nn.ReLU()
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.relu3 = nn.ReLU()
        self.relu4 = nn.ReLU()
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(cfg[4][-1], num_classes)

        fan_out_init(self)

        self.kd_aliases = {"stem": "relu0", "embedding": "classifier:in", "logits": "classifier"}
        for k in (1, 2, 3, 4):
            self.kd_aliases[f"stage{k}"] = f"relu{k}"
            self.kd_aliases[f"stage{k}_pre"] = f"relu{k}:in"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        x = self.pool0(self.relu0(self.block0(x)))
        x = self.pool1(self.relu1(self.block1(x)))
        x = self.pool2(self.relu2(self.block2(x)))
        x = self.relu3(self.block3(x))
        if h >= 64:
            x = self.pool3(x)
        x = self.relu4(self.block4(x))
        return self.classifier(self.flatten(self.pool4(x)))


def build_vgg(name: str, num_classes: int = 100, in_chans: int = 3) -> VGG:
    return VGG(VGG_CONFIGS[name], batch_norm=True, num_classes=num_classes, in_chans=in_chans)
