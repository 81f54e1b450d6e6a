"""The immutable program representation shared by every stage.

Nodes are frozen dataclasses with structural equality. Source spans and comments ride along for error
messages and formatting but take no part in equality or in the content key, so a program read back from its
printed text equals the original.

>>> a = Call("softmax", (Arg("t", Num(4)),))
>>> b = Call("softmax", (Arg("t", Num(4)),), span=None)
>>> a == b and a.key == b.key
True
>>> len(a.key)
16
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

from ..errors import Span

_META = {"default": None, "compare": False, "hash": False, "repr": False}


def _structure(value: object) -> str:
    """A canonical, run-independent text of a value, skipping metadata fields."""
    if dataclasses.is_dataclass(value):
        parts = [
            f"{f.name}={_structure(getattr(value, f.name))}" for f in dataclasses.fields(value) if f.compare
        ]
        return f"{type(value).__name__}({','.join(parts)})"
    if isinstance(value, tuple):
        return "(" + ",".join(_structure(v) for v in value) + ")"
    if isinstance(value, float):
        return repr(float(value))
    return repr(value)


class Node:
    """Mixin: a stable content key (16 hex digits of sha256 over the structure)."""

    @cached_property
    def key(self) -> str:
        return hashlib.sha256(_structure(self).encode()).hexdigest()[:16]


# ---- expressions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num(Node):
    """A number literal; ints stay ints so they print back as written."""

    value: int | float
    span: Span | None = field(**_META)


@dataclass(frozen=True)
class Name(Node):
    """A bare name: a parameter, an op used without arguments, or a symbol such as `hw` or `none`."""

    id: str
    span: Span | None = field(**_META)


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # one of + - * / ^
    left: Expr
    right: Expr
    span: Span | None = field(**_META)


@dataclass(frozen=True)
class Neg(Node):
    operand: Expr
    span: Span | None = field(**_META)


@dataclass(frozen=True)
class Arg(Node):
    """One call argument; ``name`` is None for a positional argument before checking."""

    name: str | None
    value: Expr
    span: Span | None = field(**_META)


@dataclass(frozen=True)
class Call(Node):
    """An op call. ``side`` restricts a transform to one network (`student.adapt`)."""

    op: str
    args: tuple[Arg, ...] = ()
    side: str | None = None
    span: Span | None = field(**_META)

    def arg(self, name: str) -> Expr | None:
        return next((a.value for a in self.args if a.name == name), None)


@dataclass(frozen=True)
class Choice(Node):
    """Alternatives: only legal inside a `space`."""

    options: tuple[Expr, ...]
    span: Span | None = field(**_META)


Expr = Num | Name | BinOp | Neg | Call | Choice

# ---- taps, terms, blocks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Point(Node):
    """A tapped activation: a module path (or alias), its input or output, and which call of it."""

    path: str
    # "student", "teacher", "teacherN" (the N-th teacher, from 1), "teachers" (each teacher) or None (the same
    # point on the student and the teacher)
    side: str | None = None
    io: str = "out"
    call: int | None = None
    span: Span | None = field(**_META)

    @property
    def is_labels(self) -> bool:
        return self.path == "labels" and self.side is None

    @property
    def is_teacher(self) -> bool:
        """Does this point name a teacher's activation explicitly (`teacher.x`, `teacher2.x`, `teachers.x`)?"""
        return self.side is not None and self.side.startswith("teacher")

    @property
    def teacher_number(self) -> int | None:
        """Which teacher a teacher-side point names: 1 for `teacher.x` (and points without a side), N for
        `teacherN.x`, None for `teachers.x` (each teacher) and student points.

        >>> Point("stage3", "teacher2").teacher_number, Point("logits").teacher_number
        (2, 1)
        """
        if self.side in (None, "teacher"):
            return 1
        if self.side == "teachers" or not self.is_teacher:
            return None
        return int(self.side[len("teacher"):])


@dataclass(frozen=True)
class Tap(Node):
    """``student`` paired with ``teacher``; ``teacher`` None means the same point on both networks."""

    student: Point
    teacher: Point | None = None
    span: Span | None = field(**_META)

    @property
    def teacher_point(self) -> Point:
        return self.teacher if self.teacher is not None else self.student

    @property
    def each_teacher(self) -> bool:
        """Is the teacher side every teacher (`student.x ~ teachers.y`)?"""
        return self.teacher is not None and self.teacher.side == "teachers"


@dataclass(frozen=True)
class TapGroup(Node):
    """Several taps chosen together in a space (`(stage1, stage2, stage3) | stage3`); a candidate lists them."""

    taps: tuple[Tap, ...]
    span: Span | None = field(**_META)


@dataclass(frozen=True)
class TapChoice(Node):
    options: tuple[Tap | TapGroup, ...]
    span: Span | None = field(**_META)


def option_taps(option: Tap | TapGroup) -> tuple[Tap, ...]:
    """The taps one option of a tap choice stands for."""
    return option.taps if isinstance(option, TapGroup) else (option,)


TapSlot = Tap | TapChoice


@dataclass(frozen=True)
class Term(Node):
    """``label: taps -> transform ... -> distance -> weight``."""

    taps: tuple[TapSlot, ...]
    steps: tuple[Expr, ...]
    label: str | None = None
    span: Span | None = field(**_META)
    comments: tuple[str, ...] = field(default=(), compare=False, hash=False, repr=False)
    trailing: str | None = field(**_META)

    @property
    def transforms(self) -> tuple[Expr, ...]:
        return self.steps[:-2]

    @property
    def distance(self) -> Expr:
        return self.steps[-2]

    @property
    def weight(self) -> Expr:
        return self.steps[-1]


def term_taps(term: Term) -> Iterator[Tap]:
    """Every tap of a term, the options of a tap choice included."""
    for slot in term.taps:
        for option in slot.options if isinstance(slot, TapChoice) else (slot,):
            yield from option.taps if isinstance(option, TapGroup) else (option,)


def teachers_used(block: Block) -> tuple[int, bool]:
    """(the highest teacher number a tap names, whether a term is applied to each teacher): what a distiller
    needs of the command's teachers.

    >>> t = Term((Tap(Point("logits"), Point("logits", "teachers")),), (Name("kl"), Num(1)))
    >>> teachers_used(Block("distiller", "d", (), (t,)))
    (1, True)
    """
    highest, each = 1, False
    for term in block.terms:
        for tap in term_taps(term):
            number = tap.teacher_point.teacher_number
            highest = max(highest, number or 1)
            each = each or tap.each_teacher
    return highest, each


@dataclass(frozen=True)
class Param(Node):
    name: str
    value: Expr
    span: Span | None = field(**_META)


@dataclass(frozen=True)
class Block(Node):
    """A `distiller` (no alternatives) or a `space` (alternatives allowed)."""

    kind: str  # "distiller" | "space"
    name: str
    params: tuple[Param, ...]
    terms: tuple[Term, ...]
    span: Span | None = field(**_META)
    name_span: Span | None = field(**_META)
    comments: tuple[str, ...] = field(default=(), compare=False, hash=False, repr=False)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


@dataclass(frozen=True)
class Program(Node):
    blocks: tuple[Block, ...]
    path: str | None = field(**_META)
    comments: tuple[str, ...] = field(default=(), compare=False, hash=False, repr=False)

    def block(self, name: str) -> Block | None:
        return next((b for b in self.blocks if b.name == name), None)


def walk(expr: Expr) -> Iterator[Expr]:
    """Every sub-expression of ``expr``, parents first.

    >>> [type(e).__name__ for e in walk(BinOp("*", Name("alpha"), Num(2)))]
    ['BinOp', 'Name', 'Num']
    """
    yield expr
    if isinstance(expr, BinOp):
        yield from walk(expr.left)
        yield from walk(expr.right)
    elif isinstance(expr, Neg):
        yield from walk(expr.operand)
    elif isinstance(expr, Call):
        for a in expr.args:
            yield from walk(a.value)
    elif isinstance(expr, Choice):
        for o in expr.options:
            yield from walk(o)
