"""Augmentation whose randomness is a function of (seed, epoch, sample), not of a stream of draws.

A sample's crop and flip depend only on the run's seed, the epoch and the sample's position in its split, so
they are the same whichever worker process decodes it, whichever rank of a data-parallel run sees it, and
whether the run was resumed. The standard recipes:

* CIFAR-style (:func:`crop_flip`): random crop with zero padding (4 pixels at 32×32) and horizontal flip;
* ImageNet-style (:func:`resized_crop_params`): RandomResizedCrop (area 8–100 %, aspect 3/4–4/3) and flip.

>>> u = uniforms(0, 1, torch.arange(3), 2)
>>> u.shape, bool((u >= 0).all() and (u < 1).all()), torch.equal(u, uniforms(0, 1, torch.arange(3), 2))
(torch.Size([3, 2]), True, True)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of 64-bit words."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64, copy=True)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def stream_key(*parts: int) -> int:
    """One 63-bit integer from several (a torch generator seed for, e.g., one epoch's order).

    >>> stream_key(0, 1) == stream_key(0, 1) != stream_key(0, 2)
    True
    """
    h = np.uint64(0x243F6A8885A308D3)
    with np.errstate(over="ignore"):
        for p in parts:
            h = _mix(np.asarray([h ^ (np.uint64(int(p) % 2**64) + _GOLDEN)], dtype=np.uint64))[0]
    return int(h >> np.uint64(1))


def uniforms(seed: int, epoch: int, samples: torch.Tensor, k: int) -> torch.Tensor:
    """``(len(samples), k)`` floats in [0, 1), a fixed function of ``(seed, epoch, sample, j)``."""
    base = np.uint64(stream_key(seed, epoch))
    ids = np.asarray(samples.cpu(), dtype=np.uint64)[:, None] * np.uint64(k) + np.arange(k, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = _mix(ids * _GOLDEN ^ base)
    return torch.from_numpy((bits >> np.uint64(11)).astype(np.float64) / float(2**53)).float()


def crop_flip(x: torch.Tensor, u: torch.Tensor, padding: int) -> torch.Tensor:
    """Per-sample random crop of ``x`` (B, C, H, W) zero-padded by ``padding``, then a random horizontal flip.

    ``u`` holds three uniforms per sample (row offset, column offset, flip).
    """
    b, c, h, w = x.shape
    if padding > 0:
        oy = (u[:, 0] * (2 * padding + 1)).long().clamp_(max=2 * padding)
        ox = (u[:, 1] * (2 * padding + 1)).long().clamp_(max=2 * padding)
        padded = F.pad(x, (padding, padding, padding, padding))
        rows = oy[:, None] + torch.arange(h)
        cols = ox[:, None] + torch.arange(w)
        bi = torch.arange(b)[:, None, None, None]
        ci = torch.arange(c)[None, :, None, None]
        x = padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
    flip = u[:, 2] < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


#: RandomResizedCrop's defaults (Szegedy et al. 2015, as in torchvision).
RRC_SCALE, RRC_RATIO, RRC_TRIES = (0.08, 1.0), (3 / 4, 4 / 3), 10


def resized_crop_params(height: int, width: int, u: torch.Tensor) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a RandomResizedCrop box from ``4 * RRC_TRIES`` uniforms ``u``.

    Tries an area fraction in ``RRC_SCALE`` and a log-uniform aspect ratio in ``RRC_RATIO``; when no try
    fits, the whole image clipped to the ratio range, centred.

    >>> resized_crop_params(100, 100, torch.zeros(40))  # the smallest area, the narrowest aspect
    (0, 0, 33, 24)
    """
    area = height * width
    lo, hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    for t in range(RRC_TRIES):
        a, r, y, x = (float(v) for v in u[4 * t:4 * t + 4])
        target = area * (RRC_SCALE[0] + a * (RRC_SCALE[1] - RRC_SCALE[0]))
        ratio = math.exp(lo + r * (hi - lo))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(y * (height - h + 1)), int(x * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < RRC_RATIO[0]:
        w, h = width, round(width / RRC_RATIO[0])
    elif in_ratio > RRC_RATIO[1]:
        h, w = height, round(height * RRC_RATIO[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
