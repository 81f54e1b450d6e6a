"""The distiller library: where it lives (inside the installed package, or `library/` in a source checkout)
and what each file holds.

>>> library_file("kd").name
'kd.kd'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import KDError, did_you_mean


def library_dir() -> Path:
    packaged = resources.files("autokd_dsl").joinpath("library")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "library"


def library_names() -> list[str]:
    return sorted(p.stem for p in library_dir().glob("*.kd"))


@dataclass(frozen=True)
class Entry:
    """One library distiller: its name, the paper in its header, and what its terms match."""

    name: str
    paper: str
    matches: str
    constructs: tuple[str, ...] = ()


def library_entries() -> list[Entry]:
    """Every library distiller, read from its file (the header's first line names the paper)."""
    return [describe(library_file(name)) for name in library_names()]


def describe(path: Path) -> Entry:
    """The paper line and a one-line summary of the terms (taps → transforms → distance) of a library file.

    >>> describe(library_file("at")).matches
    'stage1, stage2, stage3: attention → mse'
    """
    from .check import check_text
    from .printer import print_step, print_tap_slot

    text = path.read_text(encoding="utf-8")
    header = " ".join(ln[1:].strip() for ln in text.splitlines() if ln.startswith("#"))
    cited = re.search(r"^.*?\b(19|20)\d\d\.", header)  # the citation ends at its year
    first = cited.group(0) if cited else header
    paper = first.split(":", 1)[1].strip() if ":" in first.split(".")[0] else first
    block = check_text(text, str(path)).blocks[0]
    parts = []
    for term in block.terms:
        taps = ", ".join(print_tap_slot(t) for t in term.taps)
        if "labels" in taps:
            continue
        ops = [print_step(s).split("(")[0] for s in term.steps[:-1]]
        parts.append(f"{taps}: {' → '.join(ops)}")
    return Entry(path.stem, paper, "; ".join(parts), constructs_of(block))


def constructs_of(block) -> tuple[str, ...]:
    """What a distiller uses beyond pure transform → distance → weight: the ops' constructs (`Op.constructs`),
    pre-activation taps, different points per side, and epoch schedules.

    >>> from autokd_dsl.lang.check import check_text
    >>> constructs_of(check_text("distiller d:\\n    stage3_pre -> adapt -> mse -> warmup(5)").blocks[0])
    ('learnable', 'pre-activation taps', 'epoch schedule')
    """
    from . import ir
    from .ops import OPS

    found: list[str] = []
    for term in block.terms:
        for step in term.steps[:-1]:
            found += OPS[step.op].constructs() if isinstance(step, ir.Call) and step.op in OPS else []
        points = [p for tap in term.taps if isinstance(tap, ir.Tap) for p in (tap.student, tap.teacher) if p]
        if any(p.path.endswith("_pre") or p.io == "in" for p in points):
            found.append("pre-activation taps")
        calls = [e for e in ir.walk(term.weight) if isinstance(e, ir.Call) and e.op in OPS]
        if any(not OPS[c.op].per_teacher for c in calls):
            found.append("epoch schedule")
        found += [f"several teachers, weighted by `{c.op}`" for c in calls if OPS[c.op].per_teacher]
    return tuple(dict.fromkeys(found))


def library_file(name: str) -> Path:
    """The `.kd` file of library distiller ``name`` (a KDError with did-you-mean when there is none)."""
    path = library_dir() / f"{name}.kd"
    if not path.is_file():
        hint = did_you_mean(name, library_names()) or "run `autokd-dsl library` to list them"
        raise KDError(f"no library distiller `{name}`", hint=hint)
    return path
