"""Property tests of the language.

(a) Any text — token soup from the grammar's own terminals and the op registry, mutated library files, random
    unicode and decoded random bytes — either checks or raises a KDError, never anything else; text that checks
    prints back to text that checks to the same program.
(b) Well-kinded programs built from the op registry (taps, transforms whose signature takes the current kind,
    a fitting distance, a weight expression) print, re-parse and re-check to an equal program with the same key.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from autokd_dsl.errors import KDError
from autokd_dsl.lang import ir
from autokd_dsl.lang.check import (
    apply_transform,
    check,
    check_text,
    distance_fits,
    drop_idle_temperature,
    idle_temperature,
    tap_kinds,
)
from autokd_dsl.lang.ops import OPS, names
from autokd_dsl.lang.parse import _parser
from autokd_dsl.lang.printer import print_program

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("library/*.kd")) + sorted(ROOT.glob("examples/*.kd"))
           + sorted(ROOT.glob("tests/fixtures/roundtrip/*.kd"))]
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- (a) arbitrary text ---------------------------------------------------------------------------------


def _terminal(term) -> st.SearchStrategy[str]:
    """Text one terminal of the grammar matches (lookaheads, which hypothesis cannot generate, dropped)."""
    if term.pattern.type == "str":
        return st.just(term.pattern.value)
    pattern = re.sub(r"\(\?[!=][^)]*\)", "", term.pattern.value)
    return st.from_regex(pattern, fullmatch=True).filter(lambda s: len(s) < 40)


TERMINALS = st.one_of(*[_terminal(t) for t in _parser().terminals])
WORDS = st.sampled_from(
    names() + ["none", "labels", "logits", "embedding", "stage1", "stage2", "stage3", "student.", "teacher.",
               "student.adapt", "layer3.0.conv1", "t", "alpha", "c", "hw", "chw", "n", "k", "->", "~", "|", "@1",
               ":in", "(", ")", ",", "=", "1e999", "0.5", "-", "^", "distiller", "space"])
LAYOUT = st.sampled_from([" ", "", "\n", "\n    ", "\n      -> ", "\t", "\r\n", "\f", "  # note\n    ", "\n\n"])
NOISE = st.one_of(
    st.characters(),
    st.text(max_size=4),
    st.binary(max_size=8).map(lambda b: b.decode("utf-8", "replace")),
    st.binary(max_size=8).map(lambda b: b.decode("latin-1")),
)
TOKEN = st.one_of(TERMINALS, WORDS, WORDS, LAYOUT, NOISE)
SOUP = st.lists(st.tuples(TOKEN, LAYOUT), max_size=40).map(lambda parts: "".join(a + b for a, b in parts))
HEADERS = st.sampled_from(["", "distiller kd:\n    ", "space s(t = 1 | 4):\n    ",
                           "distiller d(t = 4, alpha = 0.9):\n    "])
# terms of words and terminals between arrows: most parse, so the checker sees them
OPS_WORDS = st.sampled_from(names())
STEP = st.one_of(OPS_WORDS, OPS_WORDS, WORDS,
                 st.lists(st.one_of(WORDS, TERMINALS), min_size=2, max_size=4).map(" ".join),
                 st.tuples(OPS_WORDS, st.lists(WORDS, max_size=3)).map(lambda c: f"{c[0]}({', '.join(c[1])})"))
TAP_WORDS = st.sampled_from(["logits", "stage3", "stage1, stage2", "embedding", "logits ~ labels", "labels",
                             "student.layer1 ~ teacher.layer2", "stage3 | logits", "student.x", "x@0"])
TERMS = st.lists(st.tuples(TAP_WORDS, st.lists(STEP, min_size=1, max_size=5)).map(lambda t: " -> ".join([t[0], *t[1]])),
                 min_size=1, max_size=3).map("\n    ".join)
TEXTS = st.one_of(st.tuples(HEADERS, SOUP).map("".join), st.tuples(HEADERS.filter(bool), TERMS).map("".join))


SOURCE_TEXTS = st.sampled_from(SOURCES)
ACTIONS = st.sampled_from(["delete", "insert", "duplicate", "swap", "truncate"])


@st.composite
def mutated_sources(draw) -> str:
    """A library, example or fixture file with a few spans deleted, repeated or cut off, characters swapped and
    tokens inserted."""
    text = draw(SOURCE_TEXTS)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        end = min(len(text), at + draw(st.integers(0, 12)))
        action = draw(ACTIONS)
        if action == "delete":
            text = text[:at] + text[end:]
        elif action == "insert":
            text = text[:at] + draw(TOKEN) + text[at:]
        elif action == "duplicate":
            text = text[:end] + text[at:end] + text[end:]
        elif action == "swap" and end - at >= 2:
            text = text[:at] + text[at + 1] + text[at] + text[at + 2:]
        elif action == "truncate":
            text = text[:at]
    return text


def _check_or_kderror(text: str) -> None:
    try:
        program = check_text(text, "fuzz.kd")
    except KDError as err:
        err.render()  # rendering must not fail either
        return
    printed = print_program(program)
    again = check_text(printed)
    assert again == program and again.key == program.key, printed
    assert print_program(again) == printed


@SETTINGS
@given(TEXTS)
def test_token_soup_raises_only_kderror(text: str):
    _check_or_kderror(text)


@SETTINGS
@given(mutated_sources())
def test_mutated_sources_raise_only_kderror(text: str):
    _check_or_kderror(text)


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace"))))
def test_random_text_raises_only_kderror(text: str):
    _check_or_kderror(text)


def test_the_soup_reaches_the_checker():
    """The generators are only useful if some of their texts parse: the checker (or success) must be reached."""
    outcomes = set()

    @settings(max_examples=100, deadline=None, database=None, derandomize=True)
    @given(st.one_of(mutated_sources(), TEXTS))
    def probe(text):
        try:
            check_text(text)
            outcomes.add("ok")
        except KDError as err:
            outcomes.add("syntax" if "unexpected" in err.message else "check")

    probe()
    assert {"ok", "syntax", "check"} <= outcomes, outcomes


# ---- (b) well-kinded programs ---------------------------------------------------------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
IDENT = st.tuples(st.sampled_from(_LETTERS), st.text(_LETTERS + "0123456789", max_size=8)).map("".join)
PARAM_NAMES = st.one_of(st.sampled_from(["t", "alpha", "beta", "w", "gamma"]), IDENT)
STAGES = ["stage1", "stage2", "stage3"]
TRANSFORMS_OR_NONE = st.sampled_from(names("transform") + ["none"])
DISTANCES = st.sampled_from(names("distance"))
MODULE = st.tuples(st.sampled_from(["layer", "features", "blocks", "fc", "conv1"]),
                   st.lists(st.integers(0, 12), max_size=2)).map(lambda p: ".".join([p[0], *map(str, p[1])]))
IO = st.sampled_from(["out", "in"])
CALL = st.one_of(st.none(), st.integers(1, 4))
COMMENT = st.text(_LETTERS + " 0123456789.,:;()'!?*+=-#é", max_size=30).map(lambda s: ("#" + s).rstrip())


def _pick(draw, options):
    """``draw(st.sampled_from(options))`` without building (and validating) a strategy for each new list."""
    options = list(options)
    return options[draw(st.integers(0, len(options) - 1))]


def _number(draw, positive: bool = False) -> ir.Num:
    if draw(st.booleans()):
        return ir.Num(draw(st.integers(1 if positive else 0, 1000)))
    return ir.Num(draw(st.floats(0.001 if positive else 0, 1e6, allow_nan=False, allow_infinity=False)))


@st.composite
def constants(draw) -> ir.Expr:
    """A parameter value: a number, its negation, or a small sum or product of numbers."""
    value = _number(draw)
    shape = _pick(draw, ["num", "neg", "bin"])
    if shape == "neg":
        return ir.Neg(value)
    if shape == "bin":
        return ir.BinOp(_pick(draw, "+-*"), value, _number(draw))
    return value


def weights(params: list[str]) -> st.SearchStrategy[ir.Expr]:
    return _weights(tuple(params))


@cache
def _weights(params: tuple[str, ...]) -> st.SearchStrategy[ir.Expr]:
    leaves = [st.builds(ir.Num, st.integers(0, 100)),
              st.builds(ir.Num, st.floats(0, 1e4, allow_nan=False, allow_infinity=False))]
    if params:
        leaves.append(st.builds(ir.Name, st.sampled_from(params)))
    leaf = st.one_of(*leaves)
    schedule = st.one_of(
        st.builds(lambda e: ir.Call("warmup", (ir.Arg("epochs", e),)), leaf),
        st.builds(lambda e: ir.Call("after", (ir.Arg("epoch", e),)), leaf),
        st.builds(lambda a, b, c: ir.Call("linear", (ir.Arg("start", a), ir.Arg("end", b), ir.Arg("epochs", c))),
                  leaf, leaf, leaf),
    )
    return st.recursive(
        st.one_of(leaf, schedule),
        lambda inner: st.one_of(st.builds(ir.BinOp, st.sampled_from("+-*/^"), inner, inner), st.builds(ir.Neg, inner)),
        max_leaves=6,
    )


def _arg_value(draw, param, params: list[str]) -> ir.Expr:
    if param.choices:
        return ir.Name(_pick(draw, param.choices))
    if param.type == "int":
        return ir.Num(draw(st.integers(1, 8)))
    if param.type == "fraction":
        return ir.Num(_pick(draw, [0, 0.1, 0.25, 0.5, 0.65, 0.9]))
    if params and draw(st.integers(0, 3)) == 0:
        return ir.Name(_pick(draw, params))
    return _number(draw, positive=True)


def _call(draw, name: str, axis: str | None, side: str | None, params: list[str]) -> ir.Call:
    """A checked call of ``name``: arguments bound by name in the op's order, optional ones sometimes left out."""
    args = []
    for param in OPS[name].params:
        if param.name == "axis":
            if axis is not None:
                args.append(ir.Arg("axis", ir.Name(axis)))
        elif param.required or draw(st.booleans()):
            args.append(ir.Arg(param.name, _arg_value(draw, param, params)))
    return ir.Call(name, tuple(args), side)


@cache
def _transform_options(kinds: tuple) -> list[tuple[str, str | None, str | None]]:
    """Every (op, axis, side) whose signature takes the current kinds of all taps of the term."""
    found = []
    for name in names("transform"):
        op = OPS[name]
        axes = [None] + list(op.param("axis").choices if op.param("axis") else [])
        sides = [None] if op.side != "both" else [None, "student", "teacher"]
        for axis in axes:
            for side in sides:
                call = _call_skeleton(name, axis, side)
                if all(apply_transform(call, k) is not None for k in kinds):
                    found.append((name, axis, side))
    return found


def _call_skeleton(name: str, axis: str | None, side: str | None) -> ir.Call:
    return ir.Call(name, (ir.Arg("axis", ir.Name(axis)),) if axis else (), side)


@st.composite
def tap_groups(draw) -> tuple[ir.Tap, ...]:
    """Taps that share one pipeline: they start from the same kinds."""
    group = _pick(draw, ["maps", "vector", "logits", "labels", "modules"])
    if group == "maps":
        chosen = draw(st.lists(st.sampled_from(STAGES), min_size=1, max_size=3, unique=True))
        taps = []
        for stage in chosen:
            if draw(st.booleans()):
                taps.append(ir.Tap(ir.Point(stage)))
            else:
                taps.append(ir.Tap(ir.Point(stage, "student"), ir.Point(_pick(draw, STAGES), "teacher")))
        return tuple(taps)
    if group in ("vector", "logits"):
        alias = "embedding" if group == "vector" else "logits"
        if draw(st.booleans()):
            return (ir.Tap(ir.Point(alias)),)
        return (ir.Tap(ir.Point(alias, "student"), ir.Point(alias, "teacher")),)
    if group == "labels":
        return (ir.Tap(ir.Point("logits"), ir.Point("labels")),)
    student = ir.Point(draw(MODULE), "student", draw(IO), draw(CALL))
    teacher = ir.Point(draw(MODULE), "teacher", draw(IO), draw(CALL))
    return (ir.Tap(student, teacher),)


@st.composite
def distiller_terms(draw, params: list[str]) -> ir.Term:
    taps = draw(tap_groups())
    kinds = [tap_kinds(t) for t in taps]
    steps: list[ir.Expr] = []
    for _ in range(draw(st.integers(0, 3))):
        options = _transform_options(tuple(kinds))
        if not options:
            break
        name, axis, side = _pick(draw, options)
        call = _call(draw, name, axis, side, params)
        kinds = [apply_transform(call, k) for k in kinds]
        steps.append(call)
    distances = [d for d in names("distance") if all(distance_fits(ir.Call(d), k) for k in kinds)]
    assume(distances)
    distance = _call(draw, _pick(draw, distances), None, None, params)
    if any(idle_temperature(distance, k) for k in kinds):  # `kl(t = 4)` on distributions is an error
        distance = drop_idle_temperature(distance)
    steps.append(distance)
    steps.append(draw(weights(params)))
    return ir.Term(taps, tuple(steps))


def _choice(draw, options: list[ir.Expr]) -> ir.Expr:
    return ir.Choice(tuple(options)) if len(options) > 1 else options[0]


@st.composite
def space_terms(draw, params: list[str]) -> ir.Term:
    """A term of a space: alternatives for taps, transforms (with `none`), arguments, distances and weights.
    Kinds are not checked in a space (the search checks each candidate), so any registered op goes."""
    taps = []
    for tap in draw(tap_groups()):
        if draw(st.booleans()):  # `stage3 | logits`
            other = draw(tap_groups())[0]
            taps.append(ir.TapChoice((tap, other)) if other != tap else tap)
        else:
            taps.append(tap)
    taps = tuple(taps)
    steps: list[ir.Expr] = []
    for _ in range(draw(st.integers(0, 2))):
        chosen = draw(st.lists(TRANSFORMS_OR_NONE, min_size=1, max_size=4, unique=True))
        options = [ir.Name("none") if n == "none" else _space_call(draw, n, params) for n in chosen]
        if len(options) == 1 and isinstance(options[0], ir.Name):
            options.append(_space_call(draw, "minmax", params))
        steps.append(_choice(draw, options))
    chosen = draw(st.lists(DISTANCES, min_size=1, max_size=3, unique=True))
    steps.append(_choice(draw, [_space_call(draw, n, params) for n in chosen]))
    steps.append(_choice(draw, draw(st.lists(weights(params), min_size=1, max_size=3))))
    return ir.Term(taps, tuple(steps))


def _space_call(draw, name: str, params: list[str]) -> ir.Call:
    op = OPS[name]
    axis_param = op.param("axis")
    axis = _pick(draw, [None, *axis_param.choices]) if axis_param else None
    call = _call(draw, name, axis, None, params)
    if call.args and draw(st.integers(0, 3)) == 0:  # an argument with alternatives: kl(t = 1 | 4 | 8)
        first = call.args[0]
        other = _arg_value(draw, op.param(first.name), params)
        assume(other != first.value)
        call = ir.Call(name, (ir.Arg(first.name, ir.Choice((first.value, other))),) + call.args[1:], call.side)
    return call


@st.composite
def blocks(draw, name: str) -> ir.Block:
    kind = _pick(draw, ["distiller", "space"])
    param_names = draw(st.lists(PARAM_NAMES, max_size=3, unique=True))
    params = []
    for p in param_names:
        value = draw(constants())
        if kind == "space" and draw(st.integers(0, 3)) == 0:
            value = ir.Choice((value, draw(constants())))
        params.append(ir.Param(p, value))
    make = distiller_terms if kind == "distiller" else space_terms
    terms = draw(st.lists(make(param_names), min_size=1, max_size=3))
    labels = draw(st.lists(st.one_of(st.none(), IDENT), min_size=len(terms), max_size=len(terms)))
    seen = set()
    labelled = []
    for term, label in zip(terms, labels):
        label = None if label in seen else label
        seen.add(label)
        comments = tuple(draw(st.lists(COMMENT, max_size=2)))
        trailing = draw(st.one_of(st.none(), COMMENT.filter(bool)))
        labelled.append(ir.Term(term.taps, term.steps, label, comments=comments, trailing=trailing))
    lead = tuple(draw(st.lists(COMMENT, max_size=2)))
    return ir.Block(kind, name, tuple(params), tuple(labelled), comments=lead)


@st.composite
def programs(draw) -> ir.Program:
    block_names = draw(st.lists(IDENT, min_size=1, max_size=2, unique=True))
    trailer = tuple(draw(st.lists(COMMENT, max_size=2)))
    return ir.Program(tuple(draw(blocks(n)) for n in block_names), comments=trailer)


def _depth(expr: ir.Expr) -> int:
    children = {ir.BinOp: lambda e: (e.left, e.right), ir.Neg: lambda e: (e.operand,),
                ir.Call: lambda e: tuple(a.value for a in e.args), ir.Choice: lambda e: e.options}
    kids = children.get(type(expr), lambda e: ())(expr)
    return 1 + max((_depth(k) for k in kids), default=0)


_NUMERIC_FAULTS = ("too large", "division by zero", "negative power", "no real value", "must be above 0")


@SETTINGS
@given(programs())
def test_generated_programs_round_trip(program: ir.Program):
    assume(all(_depth(s) < 60 for b in program.blocks for t in b.terms for s in t.steps))
    try:
        checked = check(program)
    except KDError as err:  # the generator's arithmetic may fault (`x / 0`, `1e4 ^ 1e4`, a temperature <= 0)
        assume(not any(word in str(err) for word in _NUMERIC_FAULTS))
        raise
    assert checked == program  # the generator builds checked, normalised IR
    text = print_program(program)
    again = check_text(text, "generated.kd")
    assert again == program, text
    assert again.key == program.key
    assert print_program(again) == text  # comments and layout come back too
