"""The epoch loop teachers and students share: batches from a loader, autocast, a (scaled) step, and metrics
summed over the ranks of a data-parallel run.

Every random draw of an epoch (data order, augmentation, dropout) is seeded from (seed, epoch, rank), so a
resumed run repeats exactly the epochs it would have run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console
from torch import nn

from ..data.augment import stream_key
from ..data.stream import ImageSet, epoch_loader, eval_loader
from ..errors import KDError
from ..progress import EpochBar
from .runtime import Dist, Precision, batch_to

#: ``forward(x, y, idx) -> (student output, {"total": loss, ...})``
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]]


@dataclass
class Loop:
    """What every epoch of one run shares."""

    device: torch.device
    channels_last: bool
    precision: Precision
    dist: Dist
    workers: int
    seed: int
    batch_size: int

    @property
    def pin(self) -> bool:
        return self.device.type == "cuda"


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed torch, numpy and ``random`` for one epoch of one rank (dropout, random connectors, user code)."""
    key = stream_key(seed, epoch, rank)
    torch.manual_seed(key)
    np.random.seed(key % 2**32)
    random.seed(key)


def train_epoch(loop: Loop, forward: Forward, train_set: ImageSet, opt: torch.optim.Optimizer, epoch: int,
                console: Console, label: str) -> tuple[dict[str, float], float, float]:
    """One epoch; returns (mean loss terms, training accuracy, seconds), every figure over all ranks."""
    seed_epoch(loop.seed, epoch, loop.dist.rank)
    start = time.perf_counter()
    loader = epoch_loader(train_set, loop.batch_size, epoch=epoch, seed=loop.seed, rank=loop.dist.rank,
                          world=loop.dist.world, workers=loop.workers, pin_memory=loop.pin)
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), dtype=torch.int64, device=loop.device)
    seen = 0
    live = console.is_terminal
    with EpochBar(console, label, len(loader)) as bar:
        for x, y, idx in loader:
            x = batch_to(x, loop.device, loop.channels_last)
            y = y.to(loop.device, non_blocking=True)
            with loop.precision.autocast():
                out, losses = forward(x, y, idx)
            total = losses["total"]
            if not loop.dist.agree(bool(torch.isfinite(total.detach())), loop.device):
                raise KDError(f"the loss became {float(total)} in epoch {epoch}",
                              hint="lower --lr, or check the distiller's weights")
            loop.precision.step(total.float(), opt)
            for name, value in losses.items():
                v = torch.as_tensor(value).detach().float() * len(y)
                sums[name] = sums[name] + v if name in sums else v
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
            bar.advance({k: float(v) / seen for k, v in sums.items()} if live else {})
    names = list(sums)
    reduced = loop.dist.sum([float(sums[k]) for k in names] + [float(correct), float(seen)], loop.device)
    total_seen = max(1.0, reduced[-1])
    terms = {k: v / total_seen for k, v in zip(names, reduced)}
    return terms, reduced[-2] / total_seen, time.perf_counter() - start


@torch.no_grad()
def evaluate(loop: Loop, model: nn.Module, ds: ImageSet, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (eval mode, restored after) over ``ds``, each rank scoring its share."""
    was_training = model.training
    model.eval()
    correct = seen = 0
    loader = eval_loader(ds, batch_size, rank=loop.dist.rank, world=loop.dist.world, workers=loop.workers,
                         pin_memory=loop.pin)
    for x, y, _ in loader:
        with loop.precision.autocast():
            out = model(batch_to(x, loop.device, loop.channels_last))
        correct += int((out.argmax(1) == y.to(loop.device)).sum())
        seen += len(y)
    model.train(was_training)
    c, n = loop.dist.sum([correct, seen], loop.device)
    return c / max(1.0, n)
