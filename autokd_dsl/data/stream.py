"""Datasets for full-scale training, read through ``torch.utils.data`` (worker processes, per-rank shards).

:func:`open_data` gives a :class:`SetBundle` of three :class:`ImageSet` splits with the same split positions,
normalisation and labels as :func:`~autokd_dsl.data.load_data`, but decoded batch by batch:

* ImageFolder: only the file list is held; each image is decoded when its batch is drawn (RandomResizedCrop
  and flip when augmented, a plain resize otherwise), so a folder of any size streams from disk;
* CIFAR, MNIST, digits: the uint8 arrays are held (150 MB for CIFAR), converted per batch (crop 4 + flip).

An in-memory :class:`~autokd_dsl.data.Split` (the search's proxy data) becomes an :class:`ImageSet` with
:func:`as_sets`. Each epoch's order and each sample's augmentation are functions of (seed, epoch, sample), so
a run gives the same batches with any number of workers, after ``--resume``, and on any number of ranks (rank
``r`` of ``W`` takes the ``r``-th slice of every global batch of ``W × batch_size`` samples).

>>> from autokd_dsl.data import DataConfig
>>> sets = open_data(DataConfig(name="digits", input_size=(1, 8, 8)))
>>> x, y, idx = next(iter(epoch_loader(sets.train, 32, epoch=1, seed=0)))
>>> tuple(x.shape), len(sets.train)
((32, 1, 8, 8), 1294)
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .augment import crop_flip, resized_crop_params, stream_key, uniforms
from .config import IMAGEFOLDER_PREFIX, DataConfig
from .core import LUMINANCE, Bundle, DataBundle, Split, _matched, _stats, split_positions
from .sources import IMAGENET_MEAN, IMAGENET_STD, decode_image, list_imagefolder, read_raw, resize_image

_GREY = torch.tensor(LUMINANCE).view(3, 1, 1)
#: Worker processes start by fork where that is safe (Linux); elsewhere torch's default.
_FORK = "fork" if sys.platform.startswith("linux") else None


class ImageSet(Dataset):
    """A split: ``__getitems__(positions)`` → ``(images, labels, positions)``, one normalised batch.

    ``labels`` and ``origin`` (each sample's position in the dataset's files) are held as tensors; ``epoch``
    and ``seed`` select the augmentation (set by :func:`epoch_loader`).
    """

    def __init__(self, labels: torch.Tensor, origin: torch.Tensor, input_size, augment: bool) -> None:
        self.labels, self.origin = labels, origin
        self.input_size = tuple(int(v) for v in input_size)
        self.augment = bool(augment)
        self.epoch, self.seed = 0, 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int):
        x, y, idx = self.__getitems__([i])
        return x[0], y[0], idx[0]

    def __getitems__(self, positions):
        sel = torch.as_tensor(positions, dtype=torch.int64)
        return self.images_at(sel), self.labels[sel], sel

    def images_at(self, sel: torch.Tensor) -> torch.Tensor:  # pragma: no cover - every subclass has one
        raise NotImplementedError

    def without_augmentation(self) -> ImageSet:
        other = copy.copy(self)
        other.augment = False
        return other

    def take(self, rows: torch.Tensor) -> ImageSet:
        """The samples at ``rows`` of this split, as a split of their own (positions renumbered 0..)."""
        other = copy.copy(self)
        other.labels, other.origin = self.labels[rows].clone(), self.origin[rows].clone()
        return other


class TensorImages(ImageSet):
    """A normalised in-memory split; augmentation is the CIFAR recipe (crop with ``H // 8`` padding + flip)."""

    def __init__(self, split: Split, augment: bool) -> None:
        origin = split.origin if split.origin is not None else split.indices
        super().__init__(split.labels, origin, split.images.shape[1:], augment)
        self.images = split.images

    def take(self, rows):
        other = super().take(rows)
        other.images = self.images[rows.to(self.images.device)]
        return other

    def images_at(self, sel):
        x = self.images.index_select(0, sel.to(self.images.device))
        if self.augment:
            x = crop_flip(x, uniforms(self.seed, self.epoch, sel, 3).to(x.device), self.input_size[1] // 8)
        return x


class ArrayImages(ImageSet):
    """Raw uint8 images (CIFAR, MNIST, digits) held once, converted and normalised batch by batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, positions: np.ndarray, scale: float,
                 mean, std, input_size, augment: bool) -> None:
        pos = torch.from_numpy(np.asarray(positions, dtype=np.int64))
        super().__init__(labels[pos].clone(), pos, input_size, augment)
        self.raw, self.scale = images, float(scale)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def images_at(self, sel):
        c, h, w = self.input_size
        x = _matched(self.raw[self.origin[sel]], self.scale, self.mean.shape[1], (h, w))
        x = x.sub_(self.mean).div_(self.std)
        if x.shape[1] != c:
            x = x.expand(-1, c, -1, -1).contiguous()
        if self.augment:
            x = crop_flip(x, uniforms(self.seed, self.epoch, sel, 3), h // 8)
        return x


class FolderImages(ImageSet):
    """ImageFolder files decoded per sample: RandomResizedCrop + flip when augmented, else a plain resize."""

    def __init__(self, files: list[Path], labels: torch.Tensor, positions: np.ndarray, mean, std, input_size,
                 augment: bool) -> None:
        pos = torch.from_numpy(np.asarray(positions, dtype=np.int64))
        super().__init__(labels[pos].clone(), pos, input_size, augment)
        self.files = list(files)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def images_at(self, sel):
        c, h, w = self.input_size
        out = torch.empty(len(sel), c, h, w)
        u = uniforms(self.seed, self.epoch, sel, 41) if self.augment else None
        for k, i in enumerate(sel.tolist()):
            img = decode_image(self.files[int(self.origin[i])])
            if u is not None:
                top, left, bh, bw = resized_crop_params(img.shape[1], img.shape[2], u[k, :40])
                img = img[:, top:top + bh, left:left + bw]
            img = resize_image(img, (h, w))
            if u is not None and u[k, 40] < 0.5:
                img = img.flip(-1)
            if c == 1:
                img = (img * _GREY).sum(0, keepdim=True)
            out[k] = (img - self.mean) / self.std
        return out


@dataclass
class SetBundle(Bundle[ImageSet]):
    """Train, validation and test :class:`ImageSet` s of one dataset (the streamed :class:`DataBundle`)."""

    #: decoded by worker processes by default (everything but the tiny embedded digits)
    streamed: bool = False


def as_sets(bundle: DataBundle | SetBundle) -> SetBundle:
    """An in-memory bundle as :class:`ImageSet` s (a :class:`SetBundle` is returned as it is)."""
    if isinstance(bundle, SetBundle):
        return bundle
    return SetBundle(TensorImages(bundle.train, bundle.augment), TensorImages(bundle.val, False),
                     TensorImages(bundle.test, False), bundle.num_classes, bundle.mean, bundle.std, bundle.config,
                     bundle.augment, bundle.class_names)


def open_data(cfg: DataConfig) -> SetBundle:
    """The dataset ``cfg`` names as streamed splits (same positions and labels as ``load_data(cfg)``)."""
    if cfg.name.startswith(IMAGEFOLDER_PREFIX):
        return _open_folder(cfg)
    raw = read_raw(cfg)
    pos = split_positions(raw.train_labels.numpy(), None if raw.test_images is None else len(raw.test_labels),
                          raw.num_classes, cfg)
    c, h, w = cfg.input_size
    matched = 1 if (c == 1 or raw.train_images.shape[1] == 1) else 3
    if raw.mean is not None and raw.std is not None and len(raw.mean) == matched:
        mean, std = tuple(raw.mean), tuple(raw.std)
    else:
        mean, std = _stats(raw.train_images, pos.pool, raw.scale, matched, (h, w))
    augment = raw.default_augment if cfg.augment is None else bool(cfg.augment)
    test_x, test_y = (raw.train_images, raw.train_labels) if pos.test_carved else (raw.test_images, raw.test_labels)

    def make(images, labels, idx, aug):
        return ArrayImages(images, labels, idx, raw.scale, mean, std, cfg.input_size, aug)

    return SetBundle(make(raw.train_images, raw.train_labels, pos.train, augment),
                     make(raw.train_images, raw.train_labels, pos.val, False),
                     make(test_x, test_y, pos.test, False), raw.num_classes,
                     mean * (c // len(mean)), std * (c // len(std)), cfg, augment, raw.class_names,
                     streamed=cfg.name != "digits")


def _open_folder(cfg: DataConfig) -> SetBundle:
    listing = list_imagefolder(Path(cfg.name[len(IMAGEFOLDER_PREFIX):]).expanduser())
    labels = torch.tensor(listing.train_labels, dtype=torch.int64)
    test_count = None if listing.test_files is None else len(listing.test_files)
    pos = split_positions(labels.numpy(), test_count, len(listing.class_names), cfg)
    c = cfg.input_size[0]
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if c == 3 else ((0.449,), (0.226,))
    augment = True if cfg.augment is None else bool(cfg.augment)
    test_files, test_labels = ((listing.train_files, labels) if pos.test_carved
                               else (listing.test_files, torch.tensor(listing.test_labels, dtype=torch.int64)))

    def make(files, labs, idx, aug):
        return FolderImages(files, labs, idx, mean, std, cfg.input_size, aug)

    return SetBundle(make(listing.train_files, labels, pos.train, augment),
                     make(listing.train_files, labels, pos.val, False), make(test_files, test_labels, pos.test, False),
                     len(listing.class_names), mean, std, cfg, augment, listing.class_names, streamed=True)


# ------------------------------------------------------------------------------------------- loading


def shard_batches(n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  shuffle: bool = True) -> list[torch.Tensor]:
    """This rank's batches of one epoch: slice ``rank`` of every global batch of ``world × batch_size``.

    The last global batch is split evenly over the ranks (dropped if it has fewer samples than ranks).

    >>> [b.tolist() for b in shard_batches(10, 2, seed=0, epoch=1, rank=1, world=2, shuffle=False)]
    [[2, 3], [6, 7], [9]]
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(stream_key(seed, epoch))) if shuffle \
        else torch.arange(n)
    step = batch_size * world
    out = []
    for start in range(0, n, step):
        chunk = order[start:start + step]
        if len(chunk) == step:
            out.append(chunk[rank * batch_size:(rank + 1) * batch_size])
        elif len(chunk) >= world:
            out.append(chunk.tensor_split(world)[rank])
    return out


def _whole(batch):
    return batch


def epoch_loader(ds: ImageSet, batch_size: int, *, epoch: int, seed: int, shuffle: bool = True, rank: int = 0,
                 world: int = 1, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A ``DataLoader`` over this rank's shuffled batches of ``ds`` for ``epoch`` (1-based)."""
    ds.epoch, ds.seed = epoch, seed
    sampler = [b.tolist() for b in shard_batches(len(ds), batch_size, seed=seed, epoch=epoch, rank=rank,
                                                 world=world, shuffle=shuffle)]
    return DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=_whole, pin_memory=pin_memory,
                      multiprocessing_context=_FORK if workers else None)


def eval_loader(ds: ImageSet, batch_size: int = 500, *, rank: int = 0, world: int = 1, workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """Every ``world``-th sample of ``ds`` from ``rank`` on, in order, un-augmented."""
    ds = ds.without_augmentation()
    positions = list(range(rank, len(ds), world))
    sampler = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
    return DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=_whole, pin_memory=pin_memory,
                      multiprocessing_context=_FORK if workers else None)
