"""``--config run.toml``: the settings of a ``train``, ``teacher`` or ``search`` run in a TOML file.

Keys are the command's option names (``batch_size`` or ``batch-size``), validated by the same pydantic model as
the options; flags given on the command line override the file. A key the command does not know, or a value
it refuses, is an error located in the file::

    run.toml:3:1: error: unknown setting `epoch` for `train`
    epoch = 240
    ^^^^^
    hint: did you mean `epochs`?

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "run.toml"
>>> _ = path.write_text('epochs = 3\\nbatch-size = 32\\n')
>>> read_config(path)
{'epochs': 3, 'batch_size': 32}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pydantic
import tomllib

from .errors import KDError, SourceText, Span, did_you_mean

#: Settings that are positional arguments on the command line.
POSITIONAL = ("file", "model", "space_file")


def read_config(path: str | Path) -> dict[str, Any]:
    """The file's keys (dashes read as underscores) and values; a located :class:`KDError` for bad TOML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KDError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        span = Span(int(m[1]), int(m[2]), int(m[1]), int(m[2]) + 1) if m else None
        raise KDError(f"invalid TOML: {str(exc).split(' (at line')[0]}", span=span,
                      source=SourceText(str(path), text)) from None
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            raise _at(path, text, key, f"`[{key}]` tables are not settings",
                      "write the settings as top-level `key = value` lines")
        out[key.replace("-", "_")] = value
    return out


def _key_span(text: str, key: str) -> Span | None:
    for number, line in enumerate(text.split("\n"), 1):
        m = re.match(r"\s*(?:\[\s*)?([\"']?)(" + re.escape(key) + r")\1\s*[=\]]", line)
        if m:
            return Span(number, m.start(2) + 1, number, m.end(2) + 1)
    return None


def _at(path: Path, text: str, key: str, message: str, hint: str | None = None) -> KDError:
    return KDError(message, span=_key_span(text, key), source=SourceText(str(path), text), hint=hint)


def _spelled(text: str, key: str) -> str:
    """The key as written in the file (``batch-size`` for ``batch_size``)."""
    return key if _key_span(text, key) or "_" not in key else key.replace("_", "-")


def settings_from(model: type[pydantic.BaseModel], command: str, path: Path | None, flags: dict[str, Any],
                  origin: str | None = None):
    """``model`` from the config file at ``path`` (if any) overridden by ``flags``; errors located in the file,
    or, for a flag's value, naming the option and ``origin`` (``command-line value``)."""
    values = read_config(path) if path is not None else {}
    text = Path(path).read_text(encoding="utf-8") if path is not None else ""
    fields = model.model_fields
    for key in values:
        if key not in fields:
            raise _at(path, text, _spelled(text, key), f"unknown setting `{key}` for `{command}`",
                      did_you_mean(key, list(fields)) or "settings: " + ", ".join(fields))
    merged = {**values, **flags}
    try:
        return model(**merged)
    except KDError as err:
        bad = _offending_key(err.message, values, flags)
        if bad is not None:
            raise _at(path, text, _spelled(text, bad), err.message, err.hint) from None
        if origin and err.span is None and f"({origin})" not in err.message:
            err.message = f"{err.message} ({origin})"
        raise
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else None
        if first["type"] == "missing" and key is not None:
            where = f"{key.upper()} argument" if key in POSITIONAL else f"--{key.replace('_', '-')}"
            raise KDError(f"`{command}` needs {where}",
                          hint=f"give it on the command line, or as `{key} = …` in a --config file") from None
        reason = str(first["msg"]).removeprefix("Value error, ")
        message = f"setting `{key}`: {reason}" if key else reason
        if key is not None and key in values and key not in flags:
            raise _at(path, text, _spelled(text, key), message) from None
        if origin and key in flags:
            message = f"--{key.replace('_', '-')}: {reason} ({origin})"
        raise KDError(message) from None


def _offending_key(message: str, values: dict, flags: dict) -> str | None:
    for key in values:
        if key not in flags and (key.replace("_", " ") in message or key in message):
            return key
    return None
