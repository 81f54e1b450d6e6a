"""The dataset configuration and the names of the datasets autokd-dsl knows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pydantic

from autokd_dsl.errors import KDError, did_you_mean

#: Built-in dataset names, in the order they are documented.
BUILTIN_NAMES: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "cifar10", "cifar100")
IMAGEFOLDER_PREFIX = "imagefolder:"

_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "cifar-100": "cifar100",
    "cifar_100": "cifar100",
}


def dataset_names() -> list[str]:
    """The dataset names ``DataConfig.name`` accepts (``imagefolder:PATH`` takes a folder)."""
    return [*BUILTIN_NAMES, IMAGEFOLDER_PREFIX + "PATH"]


def normalize_name(name: str) -> str:
    """The canonical spelling of a dataset name, or a :class:`KDError` for an unknown one."""
    raw = str(name).strip()
    if raw.lower().startswith(IMAGEFOLDER_PREFIX):
        path = raw[len(IMAGEFOLDER_PREFIX):].strip()
        if not path:
            raise KDError(
                "`imagefolder:` needs a folder after the colon",
                hint="write e.g. `imagefolder:/data/pets` (a folder with train/<class>/ and test/<class>/ images)",
            )
        return IMAGEFOLDER_PREFIX + path
    low = raw.lower()
    low = _ALIASES.get(low, low)
    if low in BUILTIN_NAMES:
        return low
    if low == "imagefolder":
        raise KDError(
            "dataset `imagefolder` needs a folder: write `imagefolder:PATH`",
            hint="PATH holds train/<class>/*.png and test/<class>/*.png (or just <class>/*.png)",
        )
    known = ", ".join(dataset_names())
    close = did_you_mean(low, [*BUILTIN_NAMES, "imagefolder"])
    hint = f"{close} known datasets: {known}" if close else f"known datasets: {known}"
    raise KDError(f"unknown dataset `{raw}`", hint=hint)


class DataConfig(pydantic.BaseModel):
    """Which dataset to load and how to split, resize and augment it."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    name: str = "digits"
    root: Path | None = None
    input_size: tuple[int, int, int] = (3, 32, 32)
    val_fraction: float = 0.1
    train_subset: int | None = None
    augment: bool | None = None
    seed: int = 0

    @pydantic.field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return normalize_name(value)

    @pydantic.field_validator("root")
    @classmethod
    def _check_root(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser()

    @pydantic.field_validator("input_size")
    @classmethod
    def _check_input_size(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = value
        if c not in (1, 3):
            raise KDError(
                f"input size {c}x{h}x{w} has {c} channels; only 1 (grey) or 3 (RGB) are supported",
                hint="use an input size such as (3, 32, 32) or (1, 28, 28)",
            )
        if h < 1 or w < 1:
            raise KDError(f"input size {c}x{h}x{w} has an empty side", hint="height and width must be at least 1")
        return (int(c), int(h), int(w))

    @pydantic.field_validator("val_fraction")
    @classmethod
    def _check_val_fraction(cls, value: float) -> float:
        if not (0.0 <= value <= 0.9):
            raise KDError(
                f"val_fraction {value} is outside [0, 0.9]",
                hint="the validation split is a fraction of the training set, e.g. 0.1",
            )
        return float(value)

    @pydantic.field_validator("train_subset")
    @classmethod
    def _check_train_subset(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise KDError(f"train_subset {value} must be at least 1",
                          hint="leave it unset to use the whole training set")
        return value

    def key(self) -> str:
        """A stable short hash of every field, for cache file names."""
        payload = self.model_dump(mode="json")
        if payload.get("root") is not None:
            payload["root"] = str(Path(payload["root"]).absolute())
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
