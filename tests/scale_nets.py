"""A tiny CNN without BatchNorm for the data-parallel tests: its loss over a batch is the mean of per-sample
losses, so two ranks with batch b and one process with batch 2b take the same step (up to float rounding)."""

from torch import nn


def tiny(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, num_classes))
