"""Checks of command-line values that need the domain (model names, datasets, input sizes), run before any
work starts; their errors name the option (``--teacher: unknown model `vgg99` (command-line value)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .app import option_value


def input_size(text: Optional[str], kd_file: Optional[Path] = None):
    """``--input-size`` (or the size of the search holding ``kd_file``); see :func:`~autokd_dsl.options.input_size_for`."""
    from ..options import input_size_for

    with option_value("--input-size"):
        return input_size_for(text, kd_file)


def models(in_chans: int, **named: str) -> None:
    """Each model name is known (``teacher="resnet8"`` is checked as ``--teacher``); builds small random nets."""
    from ..models import create_model

    for option, name in named.items():
        with option_value("--" + option.replace("_", "-") if option != "model" else "MODEL"):
            create_model(name, num_classes=10, in_chans=in_chans)


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
