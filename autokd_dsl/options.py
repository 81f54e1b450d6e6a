"""Small parsers for command-line values, shared by the commands."""

from __future__ import annotations

import math

from .errors import KDError


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``"3x32x32"`` → ``(3, 32, 32)``; ``"16x16"`` means 3 channels.

    >>> parse_input_size("1x16x16"), parse_input_size("16x16")
    ((1, 16, 16), (3, 16, 16))
    """
    parts = text.lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) == 2:
        dims = (3, *dims)
    if len(dims) != 3 or min(dims) < 1 or dims[0] not in (1, 3):
        raise KDError(f"bad input size `{text}`", hint="write CxHxW with C = 1 or 3, e.g. 3x32x32 or 1x16x16")
    return dims


DEFAULT_INPUT_SIZE = "3x32x32"


def input_size_for(text: str | None, kd_file=None) -> tuple[tuple[int, int, int], str | None]:
    """The input size of a command: ``--input-size`` when given; else the size of the search whose folder holds
    ``kd_file`` (a search's ``best.kd``), so that its cached teacher is reused; else 3x32x32.

    Returns the size and, when it came from a search, a note saying so.
    """
    if text is not None:
        return parse_input_size(text), None
    if kd_file is not None:
        from pathlib import Path

        from .search.store import search_config

        config = search_config(Path(kd_file).parent) or {}
        size = config.get("input_size")
        if isinstance(size, list) and len(size) == 3:
            shown = "x".join(map(str, size))
            return parse_input_size(shown), f"input size {shown}, as in the search in {Path(kd_file).parent}"
    return parse_input_size(DEFAULT_INPUT_SIZE), None


class Number:
    """A parser for an int or finite float in a range, e.g. ``Number(float, 0, 1, low_open=True)`` for (0, 1].

    >>> Number(int, 1)("3"), Number(float, 0, 1, low_open=True)("1")
    (3, 1.0)
    """

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> None:
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.__name__ = kind.__name__.upper()

    def describe(self) -> str:
        if self.high is None:
            return f"{'a whole number' if self.kind is int else 'a number'} {'>' if self.low_open else '>='} " \
                   f"{self.low}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{'a whole number' if self.kind is int else 'a number'} in {left}{self.low}, {self.high}{right}"

    def __call__(self, value):
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = self.kind(str(value).strip())
            except ValueError:
                raise ValueError(f"`{value}` is not {self.describe()}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"`{value}` is not {self.describe()}")
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        too_high = self.high is not None and (number >= self.high if self.high_open else number > self.high)
        if too_low or too_high:
            raise ValueError(f"{value} is out of range: expected {self.describe()}")
        return number


# the ranges of numeric options and settings: the command-line parsers and the settings models both check these
AT_LEAST_1 = Number(int, 1)
AT_LEAST_0 = Number(int, 0)
AT_LEAST_2 = Number(int, 2)
NON_NEGATIVE = Number(float, 0)
POSITIVE = Number(float, 0, low_open=True)
FRACTION = Number(float, 0, 1, low_open=True)  # (0, 1]
DENSITY = Number(float, 0, 1, low_open=True, high_open=True)  # (0, 1): a density of 1 is a dense student
