"""Progress of long work: a bar over the batches of one epoch, a search's candidates, and the run's log file.

>>> from rich.console import Console
>>> with EpochBar(Console(quiet=True), "epoch 1/2", total=3) as bar:
...     bar.advance({"total": 1.0})
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.control import Control
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

LOG_FILE = "log.txt"
"""The plain-text log in a run folder: every line the command printed, with the time, appended run after run."""


@contextmanager
def run_log(console: Console, path: str | Path, what: str = "", enabled: bool = True):
    """While inside, whatever ``console`` prints also goes, as plain text after a ``HH:MM:SS`` time, to the file
    ``path`` (appended; the folder is made). The log starts with ``what`` and ends with how the work ended: done,
    interrupted, or the error that stopped it; a run that fails before anything else is in the log's folder
    leaves no log (nor the folders made for it). Logs nest: an inner run's lines reach every open log. With
    ``enabled`` false (a DDP rank other than 0) nothing is written.

    >>> import io, tempfile
    >>> from rich.console import Console
    >>> console = Console(file=io.StringIO())
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with run_log(console, Path(folder) / "log.txt", "test run"):
    ...         console.print("epoch 1/2  loss 0.5")
    ...     lines = (Path(folder) / "log.txt").read_text().splitlines()
    >>> [line[9:] for line in lines]
    ['started: test run', 'epoch 1/2  loss 0.5', 'done']
    """
    path = Path(path)
    if not enabled:
        yield path
        return
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _log_stream(console, path, what):
            yield path
    except BaseException:
        # a run that fails before it wrote anything else leaves nothing behind, as any failed command
        if not existed and [p.name for p in path.parent.iterdir()] == [path.name]:
            path.unlink()
            for folder in made:
                folder.rmdir()
        raise


@contextmanager
def _log_stream(console: Console, path: Path, what: str):
    with open(path, "a", encoding="utf-8", buffering=1) as stream:
        plain = Console(file=stream, width=200, soft_wrap=True, color_system=None, force_terminal=False,
                        markup=False, highlight=False, emoji=False)

        def write(text: str) -> None:
            stamp = time.strftime("%H:%M:%S")
            try:
                for line in text.rstrip("\n").splitlines() or [""]:
                    stream.write(f"{stamp} {line.rstrip()}\n")
            except OSError:  # a full disk loses log lines, never the run; the console still shows them
                pass

        def tee(*objects, **options) -> None:
            shown(*objects, **options)
            if objects and not all(isinstance(o, Control) for o in objects):  # a live bar's refresh is no line
                with plain.capture() as captured:
                    plain.print(*objects, **options)
                text = captured.get()
                if text.strip():  # a bar's closing newline, or a blank spacer line, is no line
                    write(text)

        had_own = "print" in vars(console)
        shown = console.print  # the console's own print, or the print of a log opened around this one
        console.print = tee
        logs = vars(console).setdefault("_run_logs", [])
        logs.append(write)
        write(f"started: {what}" if what else "started")
        try:
            yield path
        except KeyboardInterrupt:
            write("interrupted")
            raise
        except Exception as err:
            message = getattr(err, "message", None) or "".join(traceback.format_exception_only(err)).strip()
            write(f"stopped: {message}")
            raise
        else:
            write("done")
        finally:
            logs.remove(write)
            if had_own:
                console.print = shown
            else:
                del console.print


def log_only(console: Console, text: str) -> None:
    """Write ``text`` to the logs open on ``console`` without showing it (what a live bar shows on a terminal)."""
    for write in vars(console).get("_run_logs", ()):
        write(text)


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
    ...     bar.finished(0.5, "ok", "kd: logits -> softmax(c) -> kl -> 1")
    ...     bar.finished(None, "rejected", "kd: stage3 -> patches(4) -> softmax(hw) -> kl -> 1")
    >>> print(console.file.getvalue(), end="")
    candidate 1/2: reward 0.5000 (best 0.5000)  kd: logits -> softmax(c) -> kl -> 1
    candidate 2/2: rejected (best 0.5000)  kd: stage3 -> patches(4) -> softmax(hw) -> kl -> 1
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
        outcome = f"reward {reward:.4f}" if status == "ok" and reward is not None else status
        best = f" (best {self.best:.4f})" if self.best is not None else ""
        line = f"candidate {self.done}/{self.total}: {outcome}{best}" + (f"  {label}" if label else "")
        if self.console.is_terminal:  # the live bar shows it; the log keeps it
            log_only(self.console, line)
        else:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
