"""Where the distiller library lives: inside the installed package, or `library/` in a source checkout.

>>> library_file("kd").name
'kd.kd'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import KDError, did_you_mean


def library_dir() -> Path:
    packaged = resources.files("autokd_dsl").joinpath("library")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "library"


def library_names() -> list[str]:
    return sorted(p.stem for p in library_dir().glob("*.kd"))


def library_file(name: str) -> Path:
    """The `.kd` file of library distiller ``name`` (a KDError with did-you-mean when there is none)."""
    path = library_dir() / f"{name}.kd"
    if not path.is_file():
        hint = did_you_mean(name, library_names()) or "run `autokd-dsl library` to list them"
        raise KDError(f"no library distiller `{name}`", hint=hint)
    return path
