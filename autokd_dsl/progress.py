"""A rich progress bar over the batches of one epoch, showing running loss terms.

>>> from rich.console import Console
>>> with EpochBar(Console(quiet=True), "epoch 1/2", total=3) as bar:
...     bar.advance({"total": 1.0})
"""

from __future__ import annotations

from collections.abc import Mapping

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

    def __enter__(self) -> EpochBar:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def advance(self, terms: Mapping[str, float]) -> None:
        self._progress.update(self._task, advance=1, terms=format_terms(terms))


class SearchProgress:
    """A search's candidates done / budget and the best reward so far.

    On a terminal it is a live bar; otherwise (a CI log, ``nohup``) it prints one line per finished candidate,
    as the training loops print one line per epoch.

    >>> from rich.console import Console
    >>> console = Console(file=__import__("io").StringIO(), force_terminal=False)
    >>> with SearchProgress(console, total=2) as bar:
    ...     bar.finished(0.5, "ok", "1a2b3c4d")
    ...     bar.finished(None, "failed", "5e6f7a8b")
    >>> print(console.file.getvalue(), end="")
    candidate 1/2 1a2b3c4d: reward 0.5000 (best 0.5000)
    candidate 2/2 5e6f7a8b: failed (best 0.5000)
    """

    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total, self.done, self.best = console, total, 0, None
        self._progress = Progress(
            TextColumn("[bold]search"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[best]}"),
            console=console,
            transient=False,
            disable=not console.is_terminal,
        )
        self._task = self._progress.add_task("search", total=total, best="")

    def __enter__(self) -> SearchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def finished(self, reward: float | None, status: str, label: str = "") -> None:
        """One candidate is done (trained now, or replayed from the store)."""
        self.done += 1
        if status == "ok" and reward is not None and (self.best is None or reward > self.best):
            self.best = reward
            self._progress.update(self._task, best=f"best reward {reward:.4f}")
        self._progress.advance(self._task)
        if not self.console.is_terminal:
            outcome = f"reward {reward:.4f}" if status == "ok" and reward is not None else status
            best = f" (best {self.best:.4f})" if self.best is not None else ""
            name = f" {label}" if label else ""
            self.console.print(f"candidate {self.done}/{self.total}{name}: {outcome}{best}", markup=False,
                               highlight=False)
