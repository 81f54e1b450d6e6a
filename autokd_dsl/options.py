"""Small parsers for command-line values, shared by the commands."""

from __future__ import annotations

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
