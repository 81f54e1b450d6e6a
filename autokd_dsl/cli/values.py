"""Checks of command-line values that need the domain (model names, datasets, input sizes), run before any
work starts; their errors name the option (``--teacher: unknown model `vgg99` (command-line value)``)."""

from __future__ import annotations

from pathlib import Path

from .app import option_value


def input_size(text: str | None, kd_file: Path | None = None):
    """``--input-size`` (or the size of the search holding ``kd_file``); see
    :func:`~autokd_dsl.options.input_size_for`."""
    from ..options import input_size_for

    with option_value("--input-size"):
        return input_size_for(text, kd_file)


def model(option: str, name: str, num_classes: int, in_chans: int):
    """The model ``name`` (randomly initialised); an unknown name is an error about ``option``."""
    from ..models import create_model

    with option_value(option):
        return create_model(name, num_classes=num_classes, in_chans=in_chans)


def models(in_chans: int, **named: str) -> None:
    """Each model name is known (``teacher="resnet8"`` is checked as ``--teacher``), before any data is read."""
    for option, names in named.items():
        for name in names if isinstance(names, (list, tuple)) else [names]:
            model("--" + option.replace("_", "-") if option != "model" else "MODEL", name, 10, in_chans)


def one_or_list(values):
    """A repeatable option as the settings take it: None, one value, or a list of several."""
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)


def data_config(**fields):
    """A :class:`~autokd_dsl.data.DataConfig` from the command line (an unknown dataset names ``--data``)."""
    from ..data import DataConfig

    with option_value("--data"):
        return DataConfig(**fields)


def device(name: str) -> None:
    """``--device`` exists on this machine (``auto`` picks one)."""
    from ..training.runtime import resolve_device

    with option_value("--device"):
        resolve_device(name)
