"""SGD settings and learning-rate schedules shared by teacher and student training, and seeding.

The defaults are RepDistiller's CIFAR recipe: SGD with momentum 0.9 (no Nesterov), weight decay 5e-4, lr 0.05,
batch 64, and the learning rate multiplied by 0.1 after 62.5 %, 75 % and 87.5 % of training (epochs 150, 180
and 210 of 240).

>>> s = SGDSettings(epochs=240, lr=0.05)
>>> [round(lr_factor(s, e), 6) for e in (1, 150, 151, 181, 211)]
[1.0, 1.0, 0.1, 0.01, 0.001]
"""

from __future__ import annotations

import math
import random
from typing import Literal

import numpy as np
import pydantic
import torch

from ..errors import KDError

#: RepDistiller's decay points as fractions of training (150/240, 180/240, 210/240).
REPDISTILLER_MILESTONES = (0.625, 0.75, 0.875)


class SGDSettings(pydantic.BaseModel):
    """Optimiser and schedule settings; ``milestones`` are fractions of ``epochs``."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    epochs: int = 240
    lr: float = 0.05
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: Literal["step", "cosine"] = "step"
    milestones: tuple[float, ...] = REPDISTILLER_MILESTONES
    gamma: float = 0.1
    seed: int = 0

    @pydantic.field_validator("epochs", "batch_size")
    @classmethod
    def _positive(cls, value: int, info) -> int:
        if value < 1:
            raise KDError(f"{info.field_name.replace('_', ' ')} {value} must be at least 1")
        return value

    @pydantic.field_validator("lr")
    @classmethod
    def _positive_lr(cls, value: float) -> float:
        if not value > 0:
            raise KDError(f"learning rate {value} must be positive", hint="e.g. --lr 0.05")
        return value

    @pydantic.field_validator("milestones")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < m < 1 for m in value):
            raise KDError(f"milestones {value} must be fractions of training between 0 and 1")
        return tuple(sorted(value))


def milestone_epochs(s: SGDSettings) -> list[int]:
    """The epochs after which the step schedule decays (``[150, 180, 210]`` for 240 epochs)."""
    return [round(m * s.epochs) for m in s.milestones]


def lr_factor(s: SGDSettings, epoch: int) -> float:
    """The learning-rate multiplier for 1-based ``epoch`` (constant within an epoch)."""
    if s.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / s.epochs))
    return s.gamma ** sum(epoch > m for m in milestone_epochs(s))


def make_optimizer(params, s: SGDSettings) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD over ``params`` and a scheduler stepped once per epoch (after the epoch)."""
    opt = torch.optim.SGD(list(params), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay,
                          nesterov=s.nesterov)
    # LambdaLR counts finished epochs from 0; epoch numbers here start at 1.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda done: lr_factor(s, done + 1))
    return opt, sched


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and python's ``random``; return a separate generator for data order and augmentation."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(data_generator: torch.Generator) -> dict:
    """Every random state a training run consumes, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "data": data_generator.get_state(),
    }


def set_rng_state(state: dict, data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    data_generator.set_state(state["data"])


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` in eval mode (its mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        out = model(images[start:start + batch_size])
        correct += int((out.argmax(1) == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(labels))
