"""User-facing errors.

Every mistake a user can make (bad `.kd` text, an unknown model, a missing dataset, a corrupt checkpoint)
raises a subclass of :class:`KDError`. The CLI prints ``err.render()`` and exits with status 2; anything else
that escapes is a bug in autokd-dsl.

>>> src = SourceText("x.kd", "distiller kd:\\n    logits -> sofmax -> kl -> 1\\n")
>>> err = KDError("unknown op `sofmax`", span=Span(2, 15, 2, 21), source=src, hint="did you mean `softmax`?")
>>> print(err.render())
x.kd:2:15: error: unknown op `sofmax`
    logits -> sofmax -> kl -> 1
              ^^^^^^
hint: did you mean `softmax`?
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A 1-based source range: ``line:col`` up to (not including) ``end_line:end_col``."""

    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


@dataclass(frozen=True)
class SourceText:
    """The text an error points into, and the name it is shown under."""

    path: str
    text: str

    def line(self, number: int) -> str | None:
        # only `\n` ends a line, as in the parser's line numbers (`str.splitlines` also splits on `\f`, `\x1c`, …)
        lines = self.text.split("\n") if self.text else []
        return lines[number - 1].rstrip("\r") if 0 < number <= len(lines) else None

    def is_printable(self) -> bool:
        return all(ch.isprintable() or ch in "\t\r\n" for ch in self.text)


class KDError(Exception):
    """Base class of every error meant for the user (never a bug).

    ``message`` is one short sentence; ``hint`` names the fix where one is known.
    """

    def __init__(
        self,
        message: str,
        *,
        span: Span | None = None,
        source: SourceText | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.source = source
        self.hint = hint

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def col(self) -> int | None:
        return self.span.col if self.span else None

    def located(self, source: SourceText) -> KDError:
        """Return this error with ``source`` attached when it has none yet."""
        if self.source is None:
            self.source = source
        return self

    def render(self) -> str:
        where = self.source.path if self.source else ""
        if self.span and where:
            where = f"{where}:{self.span}"
        head = f"{where}: error: {self.message}" if where else f"error: {self.message}"
        out = [head]
        out.extend(self._excerpt())
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)

    def _excerpt(self) -> list[str]:
        if not (self.span and self.source and self.source.is_printable()):
            return []
        text = self.source.line(self.span.line)
        if text is None:
            return []
        start = self.span.col - 1
        end = self.span.end_col - 1 if self.span.end_line == self.span.line else len(text)
        width = max(1, min(end, len(text)) - start)
        prefix = "".join(ch if ch == "\t" else " " for ch in text[:start])
        return [text, prefix + "^" * width]

    def __str__(self) -> str:
        return self.render()


class KDErrorGroup(KDError):
    """Several errors found in one pass (a checker reports all errors of a file, not only the first)."""

    def __init__(self, errors: Sequence[KDError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.message, span=first.span, source=first.source, hint=first.hint)

    def render(self) -> str:
        parts = [e.render() for e in self.errors]
        count = len(self.errors)
        parts.append(f"{count} error{'s' if count != 1 else ''}")
        return "\n".join(parts)


def raise_all(errors: Sequence[KDError]) -> None:
    """Raise nothing, the one error, or a group of them."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise KDErrorGroup(errors)


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A hint naming the closest choice, or None.

    >>> did_you_mean("sofmax", ["softmax", "mse"])
    'did you mean `softmax`?'
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None
