"""Round trips of the language: canonical text prints back byte for byte, and every spelling of a program
normalises to one checked IR with one content key.

The fixtures in ``tests/fixtures/roundtrip/`` are an identity suite: each file is already canonical, so
``print_program(check(parse(text))) == text``. A fixture that stops printing back unchanged is a printer or
parser regression (or a deliberate change of the canonical form, in which case the fixture is rewritten by
hand, on purpose).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autokd_dsl.errors import KDError
from autokd_dsl.lang import ir
from autokd_dsl.lang.check import check, check_text
from autokd_dsl.lang.parse import parse
from autokd_dsl.lang.printer import print_program

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "roundtrip"
CANONICAL = sorted(FIXTURES.glob("*.kd"))
SHIPPED = sorted((ROOT / "library").glob("*.kd")) + sorted((ROOT / "examples").glob("*.kd"))


def _ids(paths):
    return [f"{p.parent.name}/{p.name}" for p in paths]


def _checked(text: str, path: str = "<string>") -> ir.Program:
    return check(parse(text, path))


def test_fixtures_exist():
    assert len(CANONICAL) >= 12, "the identity suite lost fixtures"
    assert SHIPPED, "no library/examples files found"


@pytest.mark.parametrize("path", CANONICAL, ids=_ids(CANONICAL))
def test_fixture_prints_back_unchanged(path: Path):
    text = path.read_text(encoding="utf-8")
    assert print_program(_checked(text, str(path))) == text


@pytest.mark.parametrize("path", CANONICAL + SHIPPED, ids=_ids(CANONICAL + SHIPPED))
def test_reparse_of_print_is_equal(path: Path):
    program = _checked(path.read_text(encoding="utf-8"), str(path))
    again = _checked(print_program(program))
    assert again == program
    assert again.key == program.key
    assert [b.key for b in again.blocks] == [b.key for b in program.blocks]


@pytest.mark.parametrize("path", SHIPPED, ids=_ids(SHIPPED))
def test_library_and_examples_are_canonical(path: Path):
    text = path.read_text(encoding="utf-8")
    assert print_program(_checked(text, str(path))) == text, f"run `autokd-dsl fmt {path}`"


# ---- what the fixtures cover --------------------------------------------------------------------------


def _all(kind):
    """Every node of a type over all fixtures."""
    found = []
    for path in CANONICAL:
        program = _checked(path.read_text(encoding="utf-8"))
        for block in program.blocks:
            found.append(block)
            for term in block.terms:
                found.append(term)
                for slot in term.taps:
                    found.append(slot)
                    found.extend(slot.options if isinstance(slot, ir.TapChoice) else [slot])
                for step in term.steps:
                    found.extend(ir.walk(step))
    return [n for n in found if isinstance(n, kind)]


def test_fixtures_cover_every_construct():
    blocks, terms, taps = _all(ir.Block), _all(ir.Term), _all(ir.Tap)
    exprs = _all((ir.BinOp, ir.Neg, ir.Call, ir.Choice, ir.Name, ir.Num))
    assert {b.kind for b in blocks} == {"distiller", "space"}
    assert any(len(_checked(p.read_text()).blocks) > 2 for p in CANONICAL), "several distillers per file"
    assert any(b.params for b in blocks) and any(not b.params for b in blocks)
    assert any(t.label for t in terms) and any(not t.label for t in terms)
    assert any(t.comments for t in terms) and any(t.trailing for t in terms) and any(b.comments for b in blocks)
    assert any(len(t.taps) >= 3 for t in terms), "several taps on one pipeline"
    assert any(t.teacher is not None and t.teacher.is_labels for t in taps)
    assert any(t.student.side == "student" and t.student.io == "in" and t.student.call for t in taps)
    assert {e.op for e in exprs if isinstance(e, ir.BinOp)} == set("+-*/^")
    assert any(isinstance(e, ir.Neg) for e in exprs)
    assert {e.side for e in exprs if isinstance(e, ir.Call)} >= {None, "student", "teacher"}
    assert any(isinstance(e, ir.Call) and e.op == "warmup" for e in exprs)
    assert any(isinstance(e, ir.Name) and e.id == "none" for e in exprs)
    assert _all(ir.TapChoice), "spaces with tap choices"
    choices_in_args = [a for e in exprs if isinstance(e, ir.Call) for a in e.args if isinstance(a.value, ir.Choice)]
    assert choices_in_args, "argument choices such as kl(t = 1 | 4 | 8)"
    wrapped = [p for p in CANONICAL if "\n      -> " in p.read_text()]
    assert wrapped, "long terms wrapped over continuation lines"


def test_comments_keep_their_places():
    program = _checked((FIXTURES / "comments.kd").read_text())
    first, second = program.blocks
    assert first.comments == (
        "# A file header comment.", "#", "# It has two paragraphs.", "", "# A comment just above the block.",
    )
    soft, hard = first.terms
    assert soft.comments == ("# Before the first term.",) and soft.trailing == "# trailing comment"
    assert hard.comments == ("# Before the second term,", "# over two lines.", "",
                             "# And a second group after a blank line.")
    assert hard.trailing == "# trailing again"
    assert second.comments == ("# Between the blocks.",)
    assert program.comments == ("# A comment at the end of the file.",)


# ---- non-canonical spellings --------------------------------------------------------------------------

# (fixture, a different spelling of the same program)
SPELLINGS = [
    ("kd.kd", ("distiller kd( t=4,alpha =0.9 ):\n  soft :  logits->softmax( t = t )->kl->alpha*t ^ 2\n"
              "  hard: logits~labels  ->ce->1-alpha")),
    ("kd.kd", ("distiller kd(t = 4, alpha = 0.9):\n    soft: logits -> softmax(t) -> kl -> (alpha) * (t^2)\n"
              "    hard: logits:out ~ labels -> ce() -> (1 - alpha)\n")),
    ("kd.kd", ("distiller kd(t = 4, alpha = .9):\r\n\tsoft: logits\r\n\t  -> softmax(t)\r\n\t  -> kl -> alpha * t^2\r\n"
              "\thard: logits ~ labels -> ce -> 1 - alpha\r\n")),
    ("kwargs.kd", ("distiller kwargs(t = 4):\n"
                  "    huber: stage3 -> smooth_l1(beta = .5) -> 1\n"
                  "    nst: stage3 -> mmd(c = 1, d = 3) -> 50\n"
                  "    kd: logits -> teacher.softmax(t = 4) -> ce(t = 4) -> 1\n"
                  "    kl: logits -> kl(t = t) -> t^2\n"
                  "    axes: stage2 -> softmax(axis = hw) -> normalize(axis = chw) -> l2 -> 1\n"
                  "    both: stage1 -> log_softmax(axis = c, t = t) -> kl -> 1\n"
                  "    scaled: stage1 -> scale(factor = 0.5) -> pow(e = 2) -> mse -> 1\n")),
    ("kwargs.kd", ("distiller kwargs(t = 4):\n"
                  "    huber: stage3 -> smooth_l1(beta = 0.5) -> 1\n"
                  "    nst: stage3 -> mmd(d = 3, c = 1) -> 50\n"
                  "    kd: logits -> teacher.softmax(4) -> ce(t = 4) -> 1\n"
                  "    kl: logits -> kl(t = t) -> t^2\n"
                  "    axes: stage2 -> softmax(hw) -> normalize(chw) -> l2 -> 1\n"
                  "    both: stage1 -> log_softmax(c, t) -> kl -> 1\n"
                  "    scaled: stage1 -> scale(0.5) -> pow(2) -> mse -> 1\n")),
    ("schedules.kd", ("distiller scheduled(alpha=0.9):\n"
                     " soft: logits -> softmax(4) -> kl -> alpha*warmup(epochs = 20)\n"
                     " late: stage3 -> spatial_attention() -> mse -> after(epoch = 10) * 0.5\n"
                     " ramp: embedding -> normalize() -> mse -> linear(epochs = 30, start = 0, end = 1)\n"
                     " mixed: stage2 -> channel_attention -> mse -> ((warmup(5) * linear(1, 0.1, 100)) + 1)\n")),
    ("space_ops.kd", ("space ops(t = 1 | 4, w = 0.5 | 1 | 2):\n"
                     "    kd: logits -> (none | softmax(t = t) | log_softmax(t)) -> (kl(t = 1 | 4 | 8) | js)"
                     " -> 0.1 | 1 | 10\n"
                     "    feat: stage3\n      -> (none | pool(size = 2 | 4))\n"
                     "      -> (mse | l1)\n      -> w * (1 | 2)\n"
                     "    fixed: stage2 -> spatial_attention -> mse -> w\n")),
    ("one_sided.kd", ("distiller connectors:\n"
                     "    fit: student.layer2 ~ teacher.layer3 -> student.adapt -> mse -> 1\n"
                     "    bare: stage3 -> student.adapt() -> normalize(axis = c) -> mse -> 1\n"
                     "    soft: logits -> student.softmax(t = 4) -> teacher.softmax(2) -> kl -> 1\n"
                     "    feat: embedding -> teacher.normalize() -> student.normalize(n) -> pairwise -> 1\n")),
    ("pairs.kd", ("distiller pairs:\n"
                 "    a: student.layer1.0:in@2 ~ teacher.layer2:out -> adapt -> mse -> 1\n"
                 "    b: student.blocks.11:out ~ teacher.blocks.23:in -> adapt() -> cosine -> 0.5\n"
                 "    c: features.3 @ 1 -> l1 -> 2\n"
                 "    d: student.fc : in ~ teacher.head.fc:in -> adapt -> mse -> 1\n"
                 "    e: logits ~ labels -> ce -> 1\n"
                 "    f: student.logits ~ teacher.logits -> softmax(t = 4) -> kl -> 16\n")),
]


@pytest.mark.parametrize("name, text", SPELLINGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SPELLINGS)])
def test_other_spellings_normalise_to_the_fixture(name: str, text: str):
    fixture = (FIXTURES / name).read_text(encoding="utf-8")
    canonical, other = _checked(fixture), check_text(text)
    assert other == canonical
    assert other.key == canonical.key
    assert print_program(other) == print_program(_checked(fixture)).replace(_comment_lines(fixture), "")


def _comment_lines(text: str) -> str:
    """The fixtures' header comments, which the other spellings leave out."""
    return "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))


def test_different_programs_have_different_keys():
    keys = {_checked(p.read_text()).key for p in CANONICAL}
    assert len(keys) == len(CANONICAL)
    base = check_text("distiller kd:\n    logits -> softmax(4) -> kl -> 16\n")
    for other in ("distiller kd:\n    logits -> softmax(4.0) -> kl -> 16\n",  # 4.0 is written differently
                  "distiller kd:\n    logits -> student.softmax(4) -> teacher.softmax(4) -> kl -> 16\n",
                  "distiller kd:\n    logits -> softmax(4, k) -> kl -> 16\n",
                  "distiller kd:\n    k: logits -> softmax(4) -> kl -> 16\n",
                  "distiller kd2:\n    logits -> softmax(4) -> kl -> 16\n"):
        assert check_text(other).key != base.key, other


def test_comments_and_layout_take_no_part_in_equality():
    plain = check_text("distiller kd:\n    logits -> softmax(4) -> kl -> 16\n")
    commented = check_text("# header\ndistiller kd:\n    # lead\n    logits\n      -> softmax(4)  # x\n"
                           "      -> kl -> 16  # y\n# end\n")
    assert commented == plain and commented.key == plain.key
    assert commented.blocks[0].terms[0].trailing == "# x # y"


def test_comments_the_printer_has_no_place_for_move_up():
    text = ("distiller kd(t = 4,  # on the parameters\n"
            "             alpha = 0.9):  # on the header\n"
            "    logits\n"
            "      # inside a wrapped term\n"
            "      -> softmax(t) -> kl -> alpha\n")
    printed = print_program(check_text(text))
    assert printed == ("# on the parameters\n# on the header\ndistiller kd(t = 4, alpha = 0.9):\n"
                       "    # inside a wrapped term\n    logits -> softmax(t) -> kl -> alpha\n")
    assert print_program(check_text(printed)) == printed


def test_printing_is_idempotent_on_fixtures():
    for path in CANONICAL:
        once = print_program(_checked(path.read_text()))
        assert print_program(_checked(once)) == once, path.name


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_commented_out_continuation_line_stays_a_comment(newline: str):
    """`#  -> 5` between continuation lines is a comment, though it holds `->` (and `#  | x` though it holds `|`):
    commenting a step or an alternative out takes it out of the program."""
    steps = "distiller d:\n  kd: logits -> softmax(4) -> kl\n#  -> 5\n  -> 2\n".replace("\n", newline)
    term = check_text(steps).blocks[0].terms[0]
    assert term.steps[-1] == ir.Num(2) and len(term.steps) == 3
    assert term.comments == ("#  -> 5",)  # kept, as a comment leading the term
    printed = print_program(check_text(steps))
    assert check_text(printed) == check_text(steps) and "    #  -> 5\n" in printed
    options = "space s:\n  kd: logits\n#  | stage3\n  -> softmax(4) -> kl -> 1\n".replace("\n", newline)
    taps = check_text(options).blocks[0].terms[0].taps
    assert [t.student.path for t in taps] == ["logits"]
    # a term whose weight line is commented out has no weight: a located error, not the commented weight
    with pytest.raises(KDError, match="the term has no weight"):
        check_text("distiller d:\n  kd: logits -> softmax(4) -> kl\n#  -> 5\n".replace("\n", newline))
