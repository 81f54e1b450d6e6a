"""Splitting, resizing, normalising and batching of in-memory datasets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from autokd_dsl.errors import KDError

from .config import DataConfig
from .sources import RawData, read_raw

#: Test split carved from datasets without an official one, with a fixed seed so it never changes.
CARVED_TEST_FRACTION = 0.2
CARVED_TEST_SEED = 0
#: ITU-R BT.601 luminance weights, used to turn RGB into one grey channel.
LUMINANCE = (0.299, 0.587, 0.114)
_CHUNK = 4096


@dataclass
class Split:
    """One split held in memory.

    ``images`` are float32 (N, C, H, W), already resized, channel-matched and normalised; ``indices`` is each
    sample's stable position in this split (0..N-1); ``origin`` is its position in the dataset's own file
    order (the official train or test set; for datasets with a carved test split, the whole dataset).
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    origin: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(
            self.images.to(device),
            self.labels.to(device),
            self.indices.to(device),
            None if self.origin is None else self.origin.to(device),
        )


S = TypeVar("S")


@dataclass
class Bundle(Generic[S]):
    """A dataset's train, validation and test splits, with what describes them: the classes, the normalisation
    (per channel of the inputs), the data configuration and whether training augments."""

    train: S
    val: S
    test: S
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    config: DataConfig
    augment: bool
    class_names: tuple[str, ...] = field(default=())

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.config.input_size


@dataclass
class DataBundle(Bundle[Split]):
    """The splits held in memory (:class:`Split`)."""


# ------------------------------------------------------------------------------------------- splitting


def _rng(*parts: int) -> np.random.Generator:
    return np.random.default_rng([int(p) % (2**64) for p in parts])


def stratified_take(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a class-stratified ``fraction`` of ``labels`` and of the rest, both sorted."""
    n = len(labels)
    total = int(np.floor(fraction * n + 0.5))
    if total <= 0:
        return np.empty(0, dtype=np.int64), np.arange(n, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = fraction * counts
    take = np.floor(quotas).astype(np.int64)
    extra = total - int(take.sum())
    if extra > 0:  # largest remainders first; ties go to the lower class
        order = np.argsort(-(quotas - take), kind="stable")
        take[order[:extra]] += 1
    chosen = []
    for cls, k in zip(classes, take):
        members = np.flatnonzero(labels == cls)
        chosen.append(rng.permutation(members)[:k])
    picked = np.sort(np.concatenate(chosen)).astype(np.int64)
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), picked, assume_unique=True)
    return picked, rest


def balanced_subset(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of ``size`` samples spread as evenly over the classes as their counts allow."""
    classes, counts = np.unique(labels, return_counts=True)
    alloc = np.zeros(len(classes), dtype=np.int64)
    remaining = size
    while remaining > 0:
        open_ = np.flatnonzero(alloc < counts)
        if len(open_) == 0:
            raise KDError(f"train_subset {size} is larger than the {len(labels)} images available")
        share = remaining // len(open_)
        if share == 0:
            lucky = rng.choice(open_, size=remaining, replace=False)
            alloc[lucky] += 1
            break
        add = np.minimum(share, counts[open_] - alloc[open_])
        alloc[open_] += add
        remaining -= int(add.sum())
    chosen = [rng.permutation(np.flatnonzero(labels == cls))[:k] for cls, k in zip(classes, alloc)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


# --------------------------------------------------------------------------------------- preprocessing


def _matched(chunk: torch.Tensor, scale: float, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Scale to [0, 1], reduce RGB to grey when one channel is wanted, and resize (not yet repeated)."""
    x = chunk.to(torch.float32, copy=True)
    if scale != 1.0:
        x.mul_(1.0 / scale)
    if channels == 1 and x.shape[1] == 3:
        w = torch.tensor(LUMINANCE, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * w).sum(dim=1, keepdim=True)
    elif x.shape[1] not in (1, 3):
        raise KDError(f"images have {x.shape[1]} channels; only grey or RGB images are supported")
    if tuple(x.shape[-2:]) != size and len(x):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x


def _stats(images: torch.Tensor, idx: np.ndarray, scale: float, channels: int, size: tuple[int, int]):
    total = None
    total_sq = None
    count = 0
    for start in range(0, len(idx), _CHUNK):
        x = _matched(images[torch.from_numpy(idx[start:start + _CHUNK])], scale, channels, size).double()
        s, sq = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _build(images, labels, idx, scale, input_size, mean, std) -> Split:
    c, h, w = input_size
    n = len(idx)
    out = torch.empty((n, c, h, w), dtype=torch.float32)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    native = len(mean)
    for start in range(0, n, _CHUNK):
        sel = torch.from_numpy(idx[start:start + _CHUNK])
        x = _matched(images[sel], scale, native, (h, w)).sub_(m).div_(s)
        out[start:start + len(sel)] = x.expand(-1, c, -1, -1) if x.shape[1] != c else x
    tidx = torch.from_numpy(idx.astype(np.int64))
    return Split(out, labels[tidx].clone(), torch.arange(n, dtype=torch.int64), tidx.clone())


# ------------------------------------------------------------------------------------------- load_data


def load_data(cfg: DataConfig) -> DataBundle:
    """Read, split, resize and normalise the dataset ``cfg`` names. Never downloads."""
    raw = read_raw(cfg)
    return build_bundle(raw, cfg)


@dataclass
class Positions:
    """Which images of the dataset's files form each split; ``test_carved``: the test split comes from the
    training files (datasets without an official test set). ``pool`` is train + val before any subset."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    pool: np.ndarray
    test_carved: bool


def split_positions(train_labels: np.ndarray, test_count: int | None, num_classes: int, cfg: DataConfig) -> Positions:
    """The fixed test split, the seeded validation split and the optional class-balanced subset."""
    if test_count is None:
        test_idx, pool_idx = stratified_take(train_labels, CARVED_TEST_FRACTION, _rng(CARVED_TEST_SEED))
    else:
        pool_idx = np.arange(len(train_labels), dtype=np.int64)
        test_idx = np.arange(test_count, dtype=np.int64)
    val_rel, train_rel = stratified_take(train_labels[pool_idx], cfg.val_fraction, _rng(cfg.seed, 1))
    val_idx, train_idx = pool_idx[val_rel], pool_idx[train_rel]
    if len(train_idx) == 0:
        raise KDError(
            f"dataset `{cfg.name}` leaves no training images after the validation split",
            hint="add images or lower val_fraction",
        )
    if cfg.train_subset is not None:
        n = cfg.train_subset
        if n > len(train_idx):
            raise KDError(
                f"train_subset {n} is larger than the training set "
                f"({len(train_idx)} images after the validation split)",
                hint=f"use at most {len(train_idx)}, or lower val_fraction",
            )
        if n < num_classes:
            raise KDError(
                f"train_subset {n} is smaller than the number of classes ({num_classes})",
                hint=f"use at least {num_classes} so every class has an example",
            )
        train_idx = train_idx[balanced_subset(train_labels[train_idx], n, _rng(cfg.seed, 2))]
    return Positions(train_idx, val_idx, test_idx, pool_idx, test_count is None)


def build_bundle(raw: RawData, cfg: DataConfig) -> DataBundle:
    c, h, w = cfg.input_size
    train_labels = raw.train_labels.numpy()
    pos = split_positions(train_labels, None if raw.test_images is None else len(raw.test_labels),
                          raw.num_classes, cfg)
    train_idx, val_idx, test_idx, pool_idx = pos.train, pos.val, pos.test, pos.pool
    if pos.test_carved:
        test_images, test_labels = raw.train_images, raw.train_labels
    else:
        test_images, test_labels = raw.test_images, raw.test_labels

    native = raw.train_images.shape[1]
    matched = 1 if (c == 1 or native == 1) else 3
    if raw.mean is not None and raw.std is not None and len(raw.mean) == matched:
        mean, std = tuple(raw.mean), tuple(raw.std)
    else:  # computed on the whole training pool (train + val, before any subset), so seeds don't move it
        mean, std = _stats(raw.train_images, pool_idx, raw.scale, matched, (h, w))

    def build(images, labels, idx):
        return _build(images, labels, idx, raw.scale, cfg.input_size, mean, std)

    bundle = DataBundle(
        train=build(raw.train_images, raw.train_labels, train_idx),
        val=build(raw.train_images, raw.train_labels, val_idx),
        test=build(test_images, test_labels, test_idx),
        num_classes=raw.num_classes,
        mean=mean * (c // len(mean)),
        std=std * (c // len(std)),
        config=cfg,
        augment=raw.default_augment if cfg.augment is None else bool(cfg.augment),
        class_names=raw.class_names,
    )
    return bundle


# ------------------------------------------------------------------------------------------- batching


def random_crop_flip(
    x: torch.Tensor, generator: torch.Generator | None = None, padding: int | None = None
) -> torch.Tensor:
    """Random crop with zero padding (``H // 8`` by default) and random horizontal flip, per sample."""
    b, c, h, w = x.shape
    p = h // 8 if padding is None else padding
    if p > 0:
        oy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        padded = F.pad(x, (p, p, p, p))
        rows = oy[:, None] + torch.arange(h, device=x.device)
        cols = ox[:, None] + torch.arange(w, device=x.device)
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    augment: bool = False,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels, indices)`` batches; copies, so callers may modify them."""
    if batch_size < 1:
        raise KDError(f"batch size {batch_size} must be at least 1", hint="use e.g. batch_size 128")
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        sel = order[start:start + batch_size]
        if drop_last and len(sel) < batch_size:
            break
        dev = split.images.device
        sel_dev = sel.to(dev)
        x = split.images.index_select(0, sel_dev)
        if augment:
            x = random_crop_flip(x, generator)
        yield (x, split.labels.index_select(0, sel.to(split.labels.device)),
               split.indices.index_select(0, sel.to(split.indices.device)))


def describe(bundle: DataBundle) -> str:
    """One line: dataset, split sizes, classes and input size."""
    c, h, w = bundle.config.input_size
    subset = f" (subset {bundle.config.train_subset})" if bundle.config.train_subset is not None else ""
    return (
        f"{bundle.config.name}: train {len(bundle.train)}{subset}, val {len(bundle.val)}, test {len(bundle.test)}, "
        f"{bundle.num_classes} classes, input {c}x{h}x{w}, augment {'on' if bundle.augment else 'off'}"
    )
