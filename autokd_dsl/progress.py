"""A rich progress bar over the batches of one epoch, showing running loss terms.

>>> from rich.console import Console
>>> with EpochBar(Console(quiet=True), "epoch 1/2", total=3) as bar:
...     bar.advance({"total": 1.0})
"""

from __future__ import annotations

from typing import Mapping

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)


def format_terms(terms: Mapping[str, float]) -> str:
    """``{"soft": 0.5, "total": 0.7}`` → ``"soft 0.5000  total 0.7000"``."""
    return "  ".join(f"{name} {value:.4f}" for name, value in terms.items())


class EpochBar:
    """A transient bar: batches done / total, elapsed time and the latest running averages (terminals only)."""

    def __init__(self, console: Console, description: str, total: int) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[terms]}"),
            console=console,
            transient=True,
            disable=not console.is_terminal,  # logs get the per-epoch lines only
        )
        self._task = self._progress.add_task(description, total=total, terms="")

    def __enter__(self) -> "EpochBar":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def advance(self, terms: Mapping[str, float]) -> None:
        self._progress.update(self._task, advance=1, terms=format_terms(terms))
