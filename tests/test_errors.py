"""Every mistake in a `.kd` file is a located KDError: message, line, column, a caret under the right
characters and, where a fix is known, a hint. The CLI prints them without a traceback and exits 2."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from autokd_dsl.errors import KDError, KDErrorGroup
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.parse import MAX_DEPTH, parse_file
from autokd_dsl.lang.printer import print_program

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "library").glob("*.kd")) + sorted((ROOT / "examples").glob("*.kd"))

# id, text, message (substring), line, col, the characters the caret marks (None: just past the end of the
# line), hint (substring; None: no hint)
BAD = [
    ("eof-mid-term", "distiller kd:\n    logits -> softmax(4) ->",
     "unexpected end of file", 2, 28, None, "the last term is unfinished"),
    ("eof-in-parens", "distiller kd:\n    logits -> softmax(4",
     "unexpected end of file", 2, 24, None, "`)`"),
    ("misspelled-transform", "distiller kd:\n    logits -> sofmax(4) -> kl -> 1\n",
     "unknown transform `sofmax`", 2, 15, "sofmax(4)", "did you mean `softmax`?"),
    ("misspelled-distance", "distiller kd:\n    logits -> softmax(4) -> kll -> 1\n",
     "unknown distance `kll`", 2, 29, "kll", "did you mean `kl`?"),
    ("misspelled-weight", "distiller kd:\n    logits -> softmax(4) -> kl -> warmpu(20)\n",
     "unknown weight function `warmpu`", 2, 35, "warmpu(20)", "did you mean `warmup`?"),
    ("kind-distance", "distiller bad:\n    stage3 -> kl -> 1\n",
     "`kl` does not take a feature map (N,C,H,W)", 2, 15, "kl", "add `softmax(c)` or `softmax(hw)`"),
    ("kind-transform", "distiller bad:\n    stage3 -> softmax(4) -> kl -> 1\n",
     "`softmax` does not take a feature map (N,C,H,W) (from `stage3`)", 2, 15, "softmax(4)",
     "softmax(c) or softmax(hw)"),
    ("kind-pair", "distiller bad:\n    student.stage3 ~ teacher.logits -> mse -> 1\n",
     "`mse` does not take a feature map (N,C,H,W) with logits (N,K)", 2, 40, "mse", "adapt"),
    ("unknown-param-in-weight", "distiller kd(t = 4, alpha = 0.9):\n    logits -> softmax(t) -> kl -> alpah * t\n",
     "unknown name `alpah` in a weight", 2, 35, "alpah", "did you mean `alpha`?"),
    ("unknown-name-in-arg", "distiller kd:\n    logits -> mse -> warmup(e)\n",
     "unknown name `e` in `warmup`'s `epochs`", 2, 29, "e", "parameters are declared in the block header"),
    ("unknown-keyword", "distiller kd:\n    logits -> softmax(temp = 4) -> kl -> 1\n",
     "`softmax` has no argument `temp`", 2, 23, "temp = 4", "it takes: t, axis"),
    ("misspelled-keyword", "distiller kd:\n    stage3 -> smooth_l1(bta = 2) -> 1\n",
     "`smooth_l1` has no argument `bta`", 2, 25, "bta = 2", "did you mean `beta`?"),
    ("too-many-positional", "distiller kd:\n    stage3 -> pool(2, 3) -> mse -> 1\n",
     "too many arguments for `pool`: it takes 1 positional (size)", 2, 23, "3", None),
    ("positional-for-keyword-only", "distiller kd:\n    logits -> kl(4) -> 1\n",
     "too many arguments for `kl`: it takes 0 positional", 2, 18, "4", "keyword arguments: t = …"),
    ("no-arguments", "distiller kd:\n    stage3 -> gap(2) -> mse -> 1\n",
     "`gap` takes no arguments", 2, 19, "2", None),
    ("argument-twice", "distiller kd:\n    logits -> softmax(4, t = 2) -> kl -> 1\n",
     "`softmax` got `t` twice", 2, 26, "t = 2", None),
    ("missing-required", "distiller kd:\n    stage3 -> pool -> mse -> 1\n",
     "`pool` needs its `size` argument", 2, 15, "pool", "write `pool(size)`"),
    ("axis-for-number", "distiller kd:\n    stage3 -> pool(c) -> mse -> 1\n",
     "`pool`'s `size` must be a number, not the axis `c`", 2, 20, "c", None),
    ("number-for-axis", "distiller kd:\n    stage3 -> normalize(2) -> mse -> 1\n",
     "`normalize`'s `axis` is one of c, hw", 2, 25, "2", None),
    ("misspelled-axis", "distiller kd:\n    stage3 -> softmax(hww) -> mse -> 1\n",
     "`softmax`'s `axis` is one of", 2, 23, "hww", "did you mean `hw`?"),
    ("fraction-too-big", "distiller kd:\n    stage3 -> mask(1.5) -> mse -> 1\n",
     "`mask`'s `ratio` must be at least 0 and below 1", 2, 20, "1.5", None),
    ("fraction-negative", "distiller kd:\n    stage3 -> dropout(-0.1) -> mse -> 1\n",
     "`dropout`'s `p` must be at least 0 and below 1", 2, 23, "-0.1", None),
    ("pool-not-integer", "distiller kd:\n    stage3 -> pool(2.5) -> mse -> 1\n",
     "`pool`'s `size` must be a positive whole number", 2, 20, "2.5", None),
    ("pool-negative", "distiller kd:\n    stage3 -> patches(1 - 3) -> mse -> 1\n",
     "`patches`'s `n` must be a positive whole number", 2, 23, "1 - 3", None),
    ("call-as-number", "distiller kd:\n    stage3 -> pool(gap) -> mse -> 1\n",
     "unknown name `gap` in `pool`'s `size`", 2, 20, "gap", "parameters are declared"),
    ("distance-as-transform", "distiller kd:\n    logits -> mse -> kl -> 1\n",
     "`mse` is a distance; before the distance a transform is expected", 2, 15, "mse",
     "taps -> transforms -> distance -> weight"),
    ("transform-as-distance", "distiller kd:\n    logits -> softmax -> 1\n",
     "`softmax` is a transform; just before the weight a distance is expected", 2, 15, "softmax",
     "taps -> transforms -> distance -> weight"),
    ("number-as-transform", "distiller kd:\n    logits -> 2 -> mse -> 1\n",
     "expected a transform here, not a number or an expression", 2, 15, "2", "the weight comes last"),
    ("transform-as-weight", "distiller kd:\n    logits -> mse -> softmax\n",
     "`softmax` is a transform; in the weight a weight is expected", 2, 22, "softmax", "-> 1"),
    ("term-without-weight", "distiller kd:\n    logits -> softmax(4) -> kl\n",
     "the term has no weight", 2, 29, "kl", "`-> kl -> 1`"),
    ("term-with-one-step", "distiller kd:\n    logits -> softmax(4)\n",
     "a term needs a distance and then a weight", 2, 15, "softmax(4)", "-> mse -> 1"),
    ("alternatives-in-distiller", "distiller kd:\n    logits -> (softmax(4) | softmax(1)) -> kl -> 1\n",
     "alternatives (`|`) are only allowed in a `space`", 2, 16, "softmax(4) | softmax(1)", "space NAME:"),
    ("tap-alternatives-in-distiller", "distiller kd:\n    logits | stage3 -> mse -> 1\n",
     "alternatives (`|`) are only allowed in a `space`", 2, 5, "logits | stage3", "pick one tap"),
    ("weight-alternatives-in-distiller", "distiller kd:\n    logits -> mse -> 1 | 2\n",
     "alternatives (`|`) are only allowed in a `space`", 2, 22, "1 | 2", "space NAME:"),
    ("none-outside-space", "distiller kd:\n    logits -> none -> 1\n",
     "unknown distance `none`", 2, 15, "none", "`none` is an alternative of an optional slot"),
    ("duplicate-block", "distiller kd:\n    logits -> mse -> 1\ndistiller kd:\n    logits -> l1 -> 1\n",
     "`kd` is defined twice", 3, 11, "kd", "the first `kd` is on line 1"),
    ("duplicate-param", "distiller kd(t = 1, t = 2):\n    logits -> softmax(t) -> kl -> 1\n",
     "parameter `t` is given twice", 1, 21, "t = 2", None),
    ("param-not-a-number", "distiller kd(t = softmax):\n    logits -> softmax(t) -> kl -> 1\n",
     "parameter `t` must be a number", 1, 18, "softmax", None),
    ("duplicate-label", "distiller kd:\n    a: logits -> mse -> 1\n    a: stage3 -> mse -> 1\n",
     "term label `a` is used twice in `kd`", 3, 5, "a", "the first `a` is on line 2"),
    ("labels-on-the-left", "distiller kd:\n    labels ~ logits -> ce -> 1\n",
     "the left side of `~` is the student's point", 2, 5, "labels", "logits ~ labels"),
    ("labels-alone", "distiller kd:\n    labels -> ce -> 1\n",
     "`labels` can only be the right side of a pair", 2, 5, "labels", "write `logits ~ labels`"),
    ("labels-of-a-network", "distiller kd:\n    logits ~ teacher.labels -> ce -> 1\n",
     "`labels` belong to the batch", 2, 14, "teacher.labels", "without `student.` or `teacher.`"),
    ("teacher-on-the-left", "distiller kd:\n    teacher.layer1 ~ teacher.layer2 -> mse -> 1\n",
     "the left side of `~` is the student's point", 2, 5, "teacher.layer1", "student.A ~ teacher.B"),
    ("student-on-the-right", "distiller kd:\n    student.layer1 ~ student.layer2 -> mse -> 1\n",
     "the right side of `~` is the teacher's point", 2, 22, "student.layer2", "student.A ~ teacher.B"),
    ("one-sided-tap", "distiller kd:\n    student.layer1 -> mse -> 1\n",
     "`student.layer1` needs a teacher point to pair with", 2, 5, "student.layer1", "drop `student.`"),
    ("call-zero", "distiller kd:\n    layer1@0 -> mse -> 1\n",
     "call numbers count from 1", 2, 5, "layer1@0", "write `@1`"),
    ("teacher-side-connector", "distiller kd:\n    stage3 -> teacher.adapt -> mse -> 1\n",
     "`adapt` is a student-side op", 2, 15, "teacher.adapt", "write `adapt` or `student.adapt`"),
    ("one-sided-distance", "distiller kd:\n    stage3 -> student.mse -> 1\n",
     "`mse` is a distance; only transforms can be one-sided", 2, 15, "student.mse", "without `student.`"),
    ("one-sided-weight", "distiller kd:\n    stage3 -> mse -> teacher.warmup(5)\n",
     "a weight cannot be one-sided", 2, 22, "teacher.warmup(5)", "without `teacher.`"),
    ("empty-distiller", "distiller kd:\n# nothing here\n",
     "distiller `kd` has no terms", 1, 11, "kd", "add a term"),
    ("unexpected-character", "distiller kd:\n    logits -> softmax(4) -> kl -> 1 $\n",
     "unexpected character `$`", 2, 37, "$", None),
    ("unexpected-character-in-name", "distiller kd:\n    logits -> soft€max(4) -> kl -> 1\n",
     "unexpected character `€`", 2, 19, "€", None),
    ("control-character", "distiller kd:\n    logits -> mse\x07 -> 1\n",
     "unexpected character `\\x07`", 2, 18, None, None),
    ("unclosed-parenthesis", "distiller kd:\n    logits -> softmax((4) -> kl -> 1\n",
     "unexpected `->`", 2, 27, "->", "`)`"),
    ("extra-parenthesis", "distiller kd:\n    logits -> softmax(4)) -> kl -> 1\n",
     "unexpected `)`", 2, 25, ")", "expected `->`, end of line"),
    ("missing-argument-before-arrow", "distiller kd:\n    logits -> softmax( -> kl -> 1\n",
     "unexpected `->`", 2, 24, "->", "is a `)` missing"),
    ("double-arrow", "distiller kd:\n    logits -> -> kl -> 1\n",
     "unexpected `->`", 2, 15, "->", "between two arrows"),
    ("missing-colon", "distiller kd\n    logits -> mse -> 1\n",
     "unexpected end of line", 1, 13, None, "`:`"),
    ("label-without-space", "distiller kd:\n    hard:logits ~ labels -> ce -> 1\n",
     "unexpected `logits`", 2, 10, "logits", "`in`, `out`"),
    ("unexpected-arrow-at-line-start", "distiller kd:\n    -> mse -> 1\n",
     "unexpected `->`", 2, 5, "->", None),
    ("term-outside-block", "logits -> mse -> 1\n",
     "unexpected `logits`", 1, 1, "logits", "`distiller`"),
    ("number-too-large", "distiller kd:\n    logits -> mse -> 1e999\n",
     "number `1e999` is too large", 2, 22, "1e999", "1e308"),
]


# rows whose table entry gives no hint although the error has one (the hint only lists what is expected)
HINTED_ANYWAY = {"unexpected-character", "unexpected-character-in-name", "control-character",
                 "unexpected-arrow-at-line-start"}


def _error(text: str, path: str = "x.kd") -> KDError:
    with pytest.raises(KDError) as info:
        check_text(text, path)
    return info.value


def _caret(err: KDError) -> str:
    line = err.source.line(err.line)
    width = (err.span.end_col if err.span.end_line == err.line else len(line) + 1) - err.col
    return line[err.col - 1: err.col - 1 + max(1, width)]


@pytest.mark.parametrize("name, text, message, line, col, marked, hint", BAD, ids=[b[0] for b in BAD])
def test_error_is_located(name, text, message, line, col, marked, hint):
    err = _error(text)
    assert not isinstance(err, KDErrorGroup), [e.render() for e in err.errors]
    assert message in err.message
    assert (err.line, err.col) == (line, col), err.render()
    if marked is not None:
        assert _caret(err) == marked, err.render()
    else:  # one column: just past the end of the line, or an unprintable character
        assert (err.span.end_line, err.span.end_col - err.span.col) == (line, 1), err.span
    if hint is None:
        assert err.hint is None or name in HINTED_ANYWAY, err.hint
    else:
        assert err.hint is not None and hint in err.hint, err.hint


RENDERED = [b for b in BAD if b[5] is not None]


@pytest.mark.parametrize("name, text, message, line, col, marked, hint", RENDERED, ids=[b[0] for b in RENDERED])
def test_rendered_error_shows_the_line_and_a_caret(name, text, message, line, col, marked, hint):
    err = _error(text, "dir/bad.kd")
    lines = err.render().split("\n")
    assert lines[0] == f"dir/bad.kd:{line}:{col}: error: {err.message}"
    assert lines[1] == text.split("\n")[line - 1]
    assert lines[2] == " " * (col - 1) + "^" * len(marked)
    if hint is not None:
        assert lines[3] == f"hint: {err.hint}"
    assert len(lines) == (4 if err.hint else 3)


def test_end_of_file_caret_is_one_past_the_last_character():
    err = _error("distiller kd:\n    logits -> softmax(4) ->", "a.kd")
    assert err.render().split("\n")[1:3] == ["    logits -> softmax(4) ->", " " * 27 + "^"]


def test_caret_keeps_tabs_so_it_lines_up():
    err = _error("distiller kd:\n\tlogits ->\tsofmax -> kl -> 1\n")
    excerpt = err.render().split("\n")[1:3]
    assert excerpt == ["\tlogits ->\tsofmax -> kl -> 1", "\t         \t^^^^^^"]


def test_crlf_line_shows_without_carriage_return():
    err = _error("distiller kd:\r\n    logits -> sofmax -> kl -> 1\r\n")
    assert (err.line, err.col) == (2, 15)
    assert err.render().split("\n")[1] == "    logits -> sofmax -> kl -> 1"


def test_form_feed_does_not_shift_lines():
    # str.splitlines() splits on \f; the parser does not, so the excerpt must not either
    err = _error("distiller kd:\n  \f logits -> sofmax -> kl -> 1\n    stage3 -> kl -> 1\n")
    assert isinstance(err, KDErrorGroup) and [(e.line, e.col) for e in err.errors] == [(2, 15), (3, 15)]


@pytest.mark.parametrize("deep", ["-" * 5000 + "1", "1+" * 5000 + "1", "2^" * 5000 + "1", "1*-" * 2000 + "1",
                                  "warmup(" * 3000 + "1" + ")" * 3000])
def test_deep_nesting_is_an_error_not_a_crash(deep: str):
    text = f"distiller kd:\n    logits -> mse -> {deep}\n"
    err = _error(text)
    if deep.startswith(("1+", "1*")):  # a flat chain nests one level, however long; its length has its own limit
        assert "operators in a row" in err.message
    else:
        assert f"nested more than {MAX_DEPTH} levels deep" in err.message
    assert err.line == 2 and 22 <= err.col <= len(text.split("\n")[1])


def test_nesting_within_the_limit_is_fine():
    depth = MAX_DEPTH - 10
    program = check_text(f"distiller kd:\n    logits -> mse -> {'-' * depth}1\n")
    assert print_program(program).count("-") == depth + 2  # and the printer copes with it


# ---- several errors ------------------------------------------------------------------------------------

GROUPS = [
    ("syntax-errors-in-two-blocks",
     ("distiller a:\n    logits -> -> kl -> 1\ndistiller b:\n    logits -> mse -> 1\n"
     "space c:\n    logits -> softmax( -> kl -> 1\n"),
     [("unexpected `->`", 2, 15), ("unexpected `->`", 6, 24)]),
    ("checker-errors-in-one-block",
     ("distiller a(t = 4, t = 5):\n"
     "    x: logits -> sofmax -> kll -> alpah\n"
     "    x: labels -> ce -> 1\n"
     "    stage3 -> pool(2.5) -> mse -> warmup(y)\n"
     "    stage2 -> kl -> 1\n"),
     [("parameter `t` is given twice", 1, 20), ("unknown transform `sofmax`", 2, 18),
      ("unknown distance `kll`", 2, 28), ("unknown name `alpah` in a weight", 2, 35),
      ("term label `x` is used twice", 3, 5), ("`labels` can only be the right side", 3, 8),
      ("`pool`'s `size` must be a positive whole number", 4, 20),
      ("unknown name `y` in `warmup`'s `epochs`", 4, 42), ("`kl` does not take a feature map", 5, 15)]),
    ("checker-errors-in-two-blocks",
     "distiller a:\n    stage3 -> kl -> 1\ndistiller a:\n    teacher.x ~ student.y -> mse -> 1\n",
     [("`kl` does not take", 2, 15), ("`a` is defined twice", 3, 11),
      ("the left side of `~` is the student's point", 4, 5), ("the right side of `~` is the teacher's point", 4, 17)]),
    ("misplaced-distance-and-transform", "distiller kd:\n    logits -> kl -> softmax -> 1\n",
     [("`kl` is a distance", 2, 15), ("`softmax` is a transform", 2, 21)]),
]


@pytest.mark.parametrize("name, text, expected", GROUPS, ids=[g[0] for g in GROUPS])
def test_every_error_is_reported(name, text, expected):
    err = _error(text, "many.kd")
    assert isinstance(err, KDErrorGroup)
    got = [(e.message, e.line, e.col) for e in err.errors]
    assert len(got) == len(expected), "\n".join(e.render() for e in err.errors)
    for (message, line, col), (want, want_line, want_col) in zip(got, expected):
        assert want in message and (line, col) == (want_line, want_col), (message, line, col)
    rendered = err.render()
    for e in err.errors:
        assert f"many.kd:{e.line}:{e.col}: error: {e.message}" in rendered
    assert rendered.endswith(f"\n{len(expected)} errors")


def test_group_takes_the_first_error_as_its_own():
    err = _error(GROUPS[1][1])
    assert (err.message, err.line, err.col) == (err.errors[0].message, 1, 20)


# ---- files -----------------------------------------------------------------------------------------------


def test_not_utf8_is_located_without_excerpt(tmp_path: Path):
    path = tmp_path / "latin1.kd"
    path.write_bytes("distiller kd:\n    logits -> mse -> 1  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(KDError) as info:
        parse_file(path)
    err = info.value
    assert "not UTF-8" in err.message and (err.line, err.col) == (2, 30)
    assert err.render().split("\n")[0] == f"{path}:2:30: error: file is not UTF-8 text"
    assert "^" not in err.render()


def test_nul_bytes_are_not_text():
    err = _error("distiller kd:\n    logits -> mse -> 1\x00\n")
    assert "NUL" in err.message and "^" not in err.render()


def test_missing_file(tmp_path: Path):
    with pytest.raises(KDError, match="no such file"):
        parse_file(tmp_path / "absent.kd")


# ---- the command line ------------------------------------------------------------------------------------


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    proc = _cli(*args, cwd=cwd)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_cli_check_accepts_library_and_examples():
    result = _run("-m", "autokd_dsl", "check", *map(str, SHIPPED))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {len(SHIPPED)} files")


def _bad_files(folder: Path) -> list[tuple[Path, str, int, int | None]]:
    """The table's texts as files, plus 300 random bytes: (path, message, line, col)."""
    files = []
    for name, text, message, line, col, *_ in BAD:
        path = folder / f"{name}.kd"
        path.write_text(text, encoding="utf-8", newline="")
        files.append((path, message, line, col))
    binary = folder / "random.kd"
    binary.write_bytes(random.Random(0).randbytes(300))
    files.append((binary, "file is not UTF-8 text", 1, None))
    return files


def test_cli_check_reports_every_bad_file_without_traceback(tmp_path: Path):
    files = _bad_files(tmp_path)
    result = _run("-m", "autokd_dsl", "check", *(str(f[0]) for f in files), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and not result.stdout
    heads = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(heads) == len(files), result.stderr
    for (path, message, line, col), head in zip(files, heads):
        where = f"{path}:{line}:{col}" if col is not None else f"{path}:"
        assert head.startswith(where) and f": error: {message}" in head, head


@pytest.mark.parametrize("index", range(len(BAD) + 1), ids=[b[0] for b in BAD] + ["random-bytes"])
def test_cli_check_exits_2_for_each_bad_file(tmp_path: Path, index: int):
    from typer.testing import CliRunner

    from autokd_dsl.cli import app

    path, message, _line, _col = _bad_files(tmp_path)[index]
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"error: {message}" in result.output


def test_cli_binary_file_has_no_excerpt(tmp_path: Path):
    path = tmp_path / "random.kd"
    path.write_bytes(random.Random(1).randbytes(300))
    result = _run("-m", "autokd_dsl", "check", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}:" in result.stderr and "error: file is not UTF-8 text" in result.stderr
    assert not any(set(line.strip()) == {"^"} for line in result.stderr.splitlines())


def test_cli_reports_every_file_and_still_fails(tmp_path: Path):
    bad, good = tmp_path / "bad.kd", tmp_path / "good.kd"
    bad.write_text("distiller kd:\n    stage3 -> kl -> 1\n")
    good.write_text("distiller kd:\n    logits -> mse -> 1\n")
    other = tmp_path / "other.kd"
    other.write_text("distiller kd:\n    logits -> sofmax -> kl -> 1\n")
    result = _run("-m", "autokd_dsl", "check", str(bad), str(good), str(other))
    assert result.returncode == 2
    assert f"{bad}:2:15: error:" in result.stderr and f"{other}:2:15: error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_debug_shows_the_traceback(tmp_path: Path):
    path = tmp_path / "bad.kd"
    path.write_text("distiller kd:\n    stage3 -> kl -> 1\n")
    result = _run("-m", "autokd_dsl", "--debug", "check", str(path))
    assert result.returncode not in (0, 2)
    assert "Traceback (most recent call last)" in result.stderr
    assert "KDError" in result.stderr


def test_cli_fmt_check_then_fmt(tmp_path: Path):
    path = tmp_path / "messy.kd"
    path.write_text("distiller kd( t=4 ):\n  logits->softmax( t )->kl->t ^ 2  # keep me\n")
    first = _run("-m", "autokd_dsl", "fmt", "--check", str(path))
    assert first.returncode == 1 and "would reformat" in first.stdout
    assert path.read_text() == "distiller kd( t=4 ):\n  logits->softmax( t )->kl->t ^ 2  # keep me\n"
    rewrite = _run("-m", "autokd_dsl", "fmt", str(path))
    assert rewrite.returncode == 0, rewrite.stderr
    assert path.read_text() == "distiller kd(t = 4):\n    logits -> softmax(t) -> kl -> t^2  # keep me\n"
    again = _run("-m", "autokd_dsl", "fmt", "--check", str(path))
    assert again.returncode == 0, again.stdout + again.stderr


def test_cli_fmt_refuses_a_bad_file(tmp_path: Path):
    path = tmp_path / "bad.kd"
    text = "distiller kd:\n    stage3 -> kl -> 1\n"
    path.write_text(text)
    result = _run("-m", "autokd_dsl", "fmt", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert path.read_text() == text


def test_cli_check_does_not_import_torch():
    result = _run("-X", "importtime", "-m", "autokd_dsl", "check", *map(str, SHIPPED))
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "autokd_dsl.lang.check" in imported and "lark" in imported  # the measurement itself works
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "torchvision", "timm"))
    assert not heavy, heavy
