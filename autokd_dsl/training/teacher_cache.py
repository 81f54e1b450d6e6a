"""Offline teacher outputs: the teacher's tapped activations and logits for one dataset split, on disk.

One teacher pass (batch-wise, forward hooks) writes one ``.npy`` file per tap spec, plus the teacher's output
(its logits) under the key :data:`OUTPUT`, into a folder named by a hash of everything that determines the
values: the teacher's content hash, the dataset key, which images the split holds, the input size, the
augmentation flag and the tap specs. Training without augmentation (``--offline-teacher``) and the search then
read rows by sample index instead of running the teacher::

    cache = TeacherCache.open(teacher, bundle.train, ["layer3", "fc"], root, data_key=bundle.config.key())
    acts = cache.batch(indices)          # {"layer3": (B, 64, 8, 8) tensor, "fc": ..., "output": ...}

A folder is complete once its ``manifest.json`` exists (it is built under a temporary name and renamed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from ..data import Split, batches
from ..errors import KDError
from ..standalone.attach import TapCapture, parse_spec
from .teacher import state_hash

FORMAT = "autokd-dsl/teacher-outputs/1"
#: The key of the teacher's own output (its logits) in every cache.
OUTPUT = "output"
MANIFEST = "manifest.json"


def split_fingerprint(split: Split) -> str:
    """A hash of which images a split holds (their positions in the dataset's files), in order."""
    h = hashlib.sha256()
    ids = split.origin if split.origin is not None else split.images
    h.update(str(tuple(ids.shape)).encode())
    h.update(ids.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_hash(teacher: nn.Module) -> str:
    """The content hash of a teacher loaded with :func:`~autokd_dsl.training.teacher.load_teacher`, else computed."""
    meta = getattr(teacher, "kd_teacher", None) or {}
    return meta.get("content_hash") or state_hash(teacher.state_dict())


def cache_fields(teacher: nn.Module, split: Split, specs: Iterable[str], data_key: str, augment: bool) -> dict:
    """Everything the cached values depend on (hashed into the folder name)."""
    return {
        "format": FORMAT,
        "teacher": teacher_hash(teacher),
        "data": data_key,
        "split": split_fingerprint(split),
        "rows": len(split),
        "input_size": list(_input_size(split)),
        "augment": bool(augment),
        "specs": sorted(set(specs)),
    }


def _input_size(split) -> tuple[int, ...]:
    return tuple(split.images.shape[1:]) if isinstance(split, Split) else tuple(split.input_size)


def _in_order(split, batch_size: int):
    """``(images, labels, positions)`` over a split held in memory or streamed (:class:`ImageSet`), in order."""
    if isinstance(split, Split):
        return batches(split, batch_size, shuffle=False)
    from ..data.stream import eval_loader

    return eval_loader(split, batch_size)


def cache_folder(root: str | Path, fields: Mapping) -> Path:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return Path(root).expanduser() / hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


class TeacherCache:
    """Read-only memory-mapped teacher outputs; ``batch(indices)`` gives ``{spec: tensor}``."""

    def __init__(self, folder: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
        self.folder = folder
        self.manifest = manifest
        self.arrays = arrays

    def __len__(self) -> int:
        return int(self.manifest["fields"]["rows"])

    @property
    def specs(self) -> list[str]:
        return list(self.manifest["fields"]["specs"])

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """The cached rows for the split positions ``indices`` (a tensor or sequence of ints)."""
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
        return {spec: torch.from_numpy(np.ascontiguousarray(arr[idx])) for spec, arr in self.arrays.items()}

    # ------------------------------------------------------------------------------------ opening

    @classmethod
    def load(cls, folder: str | Path) -> TeacherCache:
        """Open a complete cache folder; a :class:`KDError` when it is missing or damaged."""
        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT:
                raise ValueError(f"format {manifest.get('format')!r}")
            arrays = {spec: np.load(folder / name, mmap_mode="r") for spec, name in manifest["files"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KDError(f"cannot read the teacher-output cache {folder}: {exc}",
                          hint="delete the folder; it is rebuilt on the next run") from None
        rows = int(manifest["fields"]["rows"])
        if any(arr.shape[0] != rows for arr in arrays.values()):
            raise KDError(f"the teacher-output cache {folder} is damaged (row counts differ)",
                          hint="delete the folder; it is rebuilt on the next run")
        return cls(folder, manifest, arrays)

    @classmethod
    def open(cls, teacher: nn.Module, split: Split, specs: Iterable[str], root: str | Path, *, data_key: str,
             augment: bool = False, batch_size: int = 256, console: Console | None = None) -> TeacherCache:
        """Load the cache for these arguments if it exists, else build it."""
        specs = list(specs)
        folder = cache_folder(root, cache_fields(teacher, split, specs, data_key, augment))
        if (folder / MANIFEST).is_file():
            return cls.load(folder)
        return cls.build(teacher, split, specs, root, data_key=data_key, augment=augment,
                         batch_size=batch_size, console=console)

    @classmethod
    def build(cls, teacher: nn.Module, split: Split, specs: Iterable[str], root: str | Path, *, data_key: str,
              augment: bool = False, batch_size: int = 256, console: Console | None = None) -> TeacherCache:
        """Run the teacher once over ``split`` (in order, eval mode) and write its tapped outputs."""
        if augment:
            raise KDError("teacher outputs can only be cached for un-augmented data",
                          hint="turn augmentation off, or train with the live teacher")
        specs = sorted(set(specs) - {OUTPUT})
        fields = cache_fields(teacher, split, specs, data_key, augment)
        folder = cache_folder(root, fields)
        tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if console is not None:
            console.print(f"caching teacher outputs ({len(split)} images, taps {', '.join(specs) or 'none'}) "
                          f"in {folder}")
        try:
            files = _teacher_pass(teacher, split, specs, tmp, batch_size)
            manifest = {"format": FORMAT, "fields": fields, "files": files}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            try:
                os.rename(tmp, folder)
            except OSError:  # another process finished the same cache first
                if not (folder / MANIFEST).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cls.load(folder)


def _teacher_pass(teacher: nn.Module, split: Split, specs: list[str], folder: Path, batch_size: int) -> dict:
    """Write one ``.npy`` per spec (``t0.npy`` …) and ``output.npy``; return ``{spec: file name}``."""
    names = {f"t{i}": spec for i, spec in enumerate(specs)}
    modules = dict(teacher.named_modules())
    unknown = [spec for spec in specs if parse_spec(spec)[0] not in modules]
    if unknown:
        raise KDError(f"`{unknown[0]}` is not a module of the teacher",
                      hint="tap specs are module paths with an optional `:in`/`:out` and `@N`")
    files = {spec: f"{name}.npy" for name, spec in names.items()} | {OUTPUT: "output.npy"}
    capture = TapCapture(teacher, names, detach=True)
    arrays: dict[str, np.ndarray] = {}
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.inference_mode():
            device = next(teacher.parameters()).device
            for x, _, idx in _in_order(split, batch_size):
                out = teacher(x.to(device))
                missing = [spec for name, spec in names.items() if name not in capture.values]
                if missing:
                    raise KDError(f"tap `{missing[0]}` was not reached in a forward pass of the teacher")
                values = {spec: capture.values[name] for name, spec in names.items()} | {OUTPUT: out}
                for spec, value in values.items():
                    if spec not in arrays:
                        arrays[spec] = np.lib.format.open_memmap(
                            folder / files[spec], mode="w+", dtype=np.float32, shape=(len(split), *value.shape[1:]))
                    arrays[spec][idx.cpu().numpy()] = value.float().cpu().numpy()
    finally:
        capture.remove()
        teacher.train(was_training)
    for arr in arrays.values():
        arr.flush()
    return files
