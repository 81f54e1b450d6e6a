"""Readers for the raw dataset files: they find the files, check them and return uint8 tensors.

Nothing here downloads anything; a missing dataset is a :class:`KDError` naming every folder searched.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autokd_dsl.errors import KDError

from .config import IMAGEFOLDER_PREFIX, DataConfig

CACHE_DIR = Path("~/.cache/autokd-dsl/data")
LOCAL_DIR = Path("data")

# Published per-channel statistics of the training sets (pixels scaled to [0, 1]).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
#: ImageFolder data is normalised with ImageNet's statistics: a streamed folder is never decoded whole.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class RawData:
    """A dataset as read from disk, before splitting, resizing and normalising.

    ``images / scale`` lies in [0, 1]. ``test_images`` is None when the dataset has no official test split.
    ``mean``/``std`` are the published statistics in the native channels, or None to compute them.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor | None
    test_labels: torch.Tensor | None
    num_classes: int
    class_names: tuple[str, ...]
    scale: float
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    default_augment: bool


def read_raw(cfg: DataConfig) -> RawData:
    name = cfg.name
    if name == "digits":
        return read_digits()
    if name in ("mnist", "fashion-mnist"):
        return read_mnist_like(name, cfg.root)
    if name in ("cifar10", "cifar100"):
        return read_cifar(name, cfg.root)
    if name.startswith(IMAGEFOLDER_PREFIX):
        return read_imagefolder(Path(name[len(IMAGEFOLDER_PREFIX):]).expanduser(), cfg.input_size[1:])
    raise KDError(f"unknown dataset `{name}`")  # unreachable: DataConfig checks the name


def _dedupe(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = p.expanduser()
        if p not in out:
            out.append(p)
    return out


# ---------------------------------------------------------------------------------------------- digits


def read_digits() -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32)).unsqueeze(1)  # values 0..16
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return _numbered((images, labels), None, 10, scale=16.0)


def _numbered(train: tuple, test: tuple | None, num_classes: int, *, scale: float, stats: tuple = (None, None),
              augment: bool = False) -> RawData:
    """The :class:`RawData` of a dataset whose classes are named by their numbers (``"0"`` … ``"K-1"``):
    ``train`` and ``test`` are (images, labels), ``test`` None without an official test split; ``stats`` the
    published (mean, std), or None to compute them."""
    test_images, test_labels = (None, None) if test is None else test
    return RawData(
        train_images=train[0],
        train_labels=train[1],
        test_images=test_images,
        test_labels=test_labels,
        num_classes=num_classes,
        class_names=tuple(str(i) for i in range(num_classes)),
        scale=scale,
        mean=stats[0],
        std=stats[1],
        default_augment=augment,
    )


# ----------------------------------------------------------------------------------------- IDX (MNIST)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_APT_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist", "mnist": "dataset-mnist"}


def idx_search_dirs(name: str, root: Path | None) -> list[Path]:
    if root is not None:
        tv = _TORCHVISION_FOLDERS[name]
        return _dedupe([root, root / name, root / name / "raw", root / tv / "raw", root / tv])
    return _dedupe([Path("/usr/share/datasets") / name, CACHE_DIR / name, LOCAL_DIR / name])


def _find_idx_file(folder: Path, base: str) -> Path | None:
    # The official name, gzipped or not, and the "train-images.idx3-ubyte" spelling some mirrors use.
    dotted = base.replace("-idx", ".idx")
    for candidate in (base, base + ".gz", dotted, dotted + ".gz"):
        path = folder / candidate
        if path.is_file():
            return path
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (plain or gzipped) of unsigned bytes into an array."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise KDError(
            f"cannot read IDX file {path}: {exc}",
            hint="the file is truncated or corrupt; delete it and copy it again",
        ) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise KDError(
            f"{path} is not an IDX file (bad magic number)",
            hint="expected the MNIST-format files train-images-idx3-ubyte etc. (gzipped or not)",
        )
    if data[2] != 0x08:
        raise KDError(f"{path} holds IDX type 0x{data[2]:02x}, not unsigned bytes (0x08)",
                      hint="expected MNIST-format files")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim < 1 or len(data) < header:
        raise KDError(f"{path} has a truncated IDX header", hint="the file is corrupt; delete it and copy it again")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise KDError(
            f"{path} is truncated or corrupt: the header promises {expected} bytes of data, "
            f"the file has {len(data) - header}",
            hint="delete the file and copy it again",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_mnist_like(name: str, root: Path | None) -> RawData:
    dirs = idx_search_dirs(name, root)
    found: dict[str, Path] | None = None
    for folder in dirs:
        files = {key: _find_idx_file(folder, base) for key, base in IDX_FILES.items()}
        if all(files.values()):
            found = files  # type: ignore[assignment]
            break
    if found is None:
        searched = ", ".join(str(d) for d in dirs)
        expected = ", ".join(f"{b}[.gz]" for b in IDX_FILES.values())
        how = f"install them with `apt-get install {_APT_PACKAGES[name]}`, or " if root is None else ""
        raise KDError(
            f"{name} files not found; searched {searched}; expected {expected}",
            hint=f"{how}copy the four IDX files into one of those folders, or pass --data-root FOLDER",
        )
    arrays = {key: read_idx(path) for key, path in found.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise KDError(
                f"{name} {split} files have the wrong shape: images {images.shape}, labels {labels.shape}",
                hint="images must be an idx3 file and labels an idx1 file",
            )
        if len(images) != len(labels):
            raise KDError(
                f"{name} {split} files disagree: {len(images)} images but {len(labels)} labels",
                hint="the files come from different releases or one is corrupt",
            )
        if labels.size and int(labels.max()) >= 10:
            raise KDError(f"{name} {split} labels go up to {int(labels.max())}, expected 0..9",
                          hint="the label file is corrupt")
    mean, std = (FASHION_MEAN, FASHION_STD) if name == "fashion-mnist" else (MNIST_MEAN, MNIST_STD)
    def split(which: str) -> tuple:
        return (torch.from_numpy(arrays[f"{which}_images"].copy()).unsqueeze(1),
                torch.from_numpy(arrays[f"{which}_labels"].astype(np.int64)))

    return _numbered(split("train"), split("test"), 10, scale=255.0, stats=(mean, std))


# ----------------------------------------------------------------------------------------------- CIFAR

CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}

# The only globals a CIFAR pickle needs: numpy arrays (and their dtypes) and the codec numpy uses for bytes.
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def cifar_search_dirs(name: str, root: Path | None) -> list[Path]:
    folder = CIFAR_LAYOUT[name][0]
    if root is not None:
        return _dedupe([root, root / folder])
    return _dedupe([CACHE_DIR / folder, LOCAL_DIR / folder])


def _load_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - a broken pickle can raise almost anything
        raise KDError(
            f"cannot read CIFAR batch {path}: {type(exc).__name__}: {exc}",
            hint="the file is truncated or corrupt; delete it and unpack the archive again",
        ) from None
    if not isinstance(obj, dict):
        raise KDError(f"{path} is not a CIFAR batch (expected a dict)", hint="unpack the python version of the archive")

    def get(key: bytes) -> Any:
        if key in obj:
            return obj[key]
        return obj.get(key.decode())

    data, labels = get(b"data"), get(label_key)
    if data is None or labels is None:
        raise KDError(
            f"{path} lacks the keys b'data' and {label_key!r}",
            hint="use the python version of the CIFAR archive (cifar-10-python.tar.gz / cifar-100-python.tar.gz)",
        )
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise KDError(
            f"{path} has the wrong layout: data {data.dtype} {data.shape}, {len(labels)} labels",
            hint="expected uint8 data of shape (N, 3072) and N labels",
        )
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(name: str, root: Path | None) -> RawData:
    folder_name, train_files, test_files, label_key, num_classes = CIFAR_LAYOUT[name]
    dirs = cifar_search_dirs(name, root)
    folder = next((d for d in dirs if all((d / f).is_file() for f in train_files + test_files)), None)
    if folder is None:
        searched = ", ".join(str(d) for d in dirs)
        archive = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
        raise KDError(
            f"{name} files not found; searched {searched}; "
            f"expected {folder_name}/ with {', '.join(train_files + test_files)}",
            hint=f"unpack {archive} (from https://www.cs.toronto.edu/~kriz/cifar.html) into ~/.cache/autokd-dsl/data, "
            "or pass --data-root FOLDER",
        )

    def load(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_load_cifar_batch(folder / f, label_key) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise KDError(f"{name} labels in {folder} fall outside 0..{num_classes - 1}", hint="the files are corrupt")
        return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)

    train_x, train_y = load(train_files)
    test_x, test_y = load(test_files)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return _numbered((train_x, train_y), (test_x, test_y), num_classes, scale=255.0, stats=(mean, std), augment=True)


# ----------------------------------------------------------------------------------------- imagefolder


def _class_images(folder: Path) -> dict[str, list[Path]]:
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            classes[sub.name] = files
    return classes


def decode_image(path: Path) -> torch.Tensor:
    """One image file as a float (3, H, W) tensor in [0, 1]; a :class:`KDError` naming a broken file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise KDError(f"cannot read image {path}: {exc}", hint="delete or replace the broken file") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def resize_image(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of one (C, H, W) image to ``size``, clipped to [0, 1]."""
    if tuple(t.shape[-2:]) != tuple(size):
        t = torch.nn.functional.interpolate(t[None], size=tuple(size), mode="bilinear", antialias=True,
                                            align_corners=False)[0]
    return t.clamp_(0.0, 1.0)


def _read_images(files: list[Path], size: tuple[int, int]) -> torch.Tensor:
    out = torch.empty(len(files), 3, *size, dtype=torch.float32)
    for i, path in enumerate(files):
        out[i] = resize_image(decode_image(path), size)
    return out


@dataclass
class FolderListing:
    """The image files of an ImageFolder, in class order; ``test_files`` is None when a test split is carved."""

    train_files: list[Path]
    train_labels: list[int]
    test_files: list[Path] | None
    test_labels: list[int] | None
    class_names: tuple[str, ...]


def list_imagefolder(path: Path) -> FolderListing:
    """Find the class folders and image files of ``path`` (PATH/train + PATH/test, or PATH/<class>)."""
    if not path.is_dir():
        raise KDError(
            f"image folder {path} does not exist",
            hint="imagefolder:PATH needs PATH/train/<class>/*.png and PATH/test/<class>/*.png (or PATH/<class>/*.png)",
        )
    train_dir, test_dir = path / "train", path / "test"
    if test_dir.is_dir() and not train_dir.is_dir():
        raise KDError(
            f"image folder {path} has a test/ subfolder but no train/ subfolder",
            hint="add PATH/train/<class>/ images, or drop the test/ folder to carve a test split from PATH/<class>/",
        )
    has_split = train_dir.is_dir() and test_dir.is_dir()
    if train_dir.is_dir() and not has_split:
        path = train_dir  # only train/: the test split is carved from it
    train = _class_images(train_dir if has_split else path)
    if not train:
        exts = ", ".join(IMAGE_EXTENSIONS)
        raise KDError(
            f"image folder {train_dir if has_split else path} holds no images in class subfolders",
            hint=f"put images ({exts}) in one subfolder per class, e.g. {path}/train/cat/1.png",
        )
    names = tuple(train)
    index = {n: i for i, n in enumerate(names)}
    listing = FolderListing([f for n in names for f in train[n]], [index[n] for n in names for _ in train[n]],
                            None, None, names)
    if has_split:
        test = _class_images(test_dir)
        unknown = sorted(set(test) - set(names))
        if unknown:
            raise KDError(
                f"image folder {test_dir} has classes missing from {train_dir}: {', '.join(unknown)}",
                hint="every test class needs training images too",
            )
        if not test:
            raise KDError(f"image folder {test_dir} holds no images",
                          hint="put test images in test/<class>/ or remove the empty test folder")
        listing.test_files = [f for n in names for f in test.get(n, [])]
        listing.test_labels = [index[n] for n in names for _ in test.get(n, [])]
    return listing


def read_imagefolder(path: Path, size: tuple[int, int]) -> RawData:
    """Decode a whole (small) ImageFolder into memory; large ones stream (:mod:`autokd_dsl.data.stream`)."""
    listing = list_imagefolder(path)
    has_split = listing.test_files is not None
    return RawData(
        train_images=_read_images(listing.train_files, size),
        train_labels=torch.tensor(listing.train_labels, dtype=torch.int64),
        test_images=_read_images(listing.test_files, size) if has_split else None,
        test_labels=torch.tensor(listing.test_labels, dtype=torch.int64) if has_split else None,
        num_classes=len(listing.class_names),
        class_names=listing.class_names,
        scale=1.0,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        default_augment=True,
    )
