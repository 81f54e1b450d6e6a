"""Parse `.kd` text into the IR (`autokd_dsl.lang.ir`), with source spans and comments.

The grammar (`grammar/kd.lark`) is loaded and compiled once, lazily. Lark's exceptions never leave this
module: they become :class:`~autokd_dsl.errors.KDError` with the characters a person typed.

>>> prog = parse("distiller kd(t = 4):\\n    logits -> softmax(t) -> kl -> t^2\\n")
>>> prog.blocks[0].name, len(prog.blocks[0].terms[0].steps)
('kd', 3)
"""

from __future__ import annotations

import re
import stat
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from ..errors import KDError, SourceText, Span, raise_all
from . import ir

SIDES = ("student", "teacher")
# A tap can name one teacher of several (`teacher2.stage3`, counted from 1 in the order the command gives them)
# or every teacher (`teachers.logits`: the term is applied once per teacher).
_TEACHER_SIDE = re.compile(r"teacher(s|[0-9]+)")

# Terminal names as a person would read them.
_TERMINALS = {
    "_ARROW": "`->`", "_VBAR": "`|`", "_NL": "end of line", "$END": "end of file", "LPAR": "`(`",
    "RPAR": "`)`", "COMMA": "`,`", "COLON": "`:`", "EQUAL": "`=`", "PLUS": "`+`", "MINUS": "`-`",
    "STAR": "`*`", "SLASH": "`/`", "CIRCUMFLEX": "`^`", "TILDE": "`~`", "AT": "`@`", "NAME": "a name",
    "PATH": "a dotted module path", "NUMBER": "a number", "INT": "an integer", "LABEL": "a term label",
    "DISTILLER": "`distiller`", "SPACE": "`space`", "IN": "`in`", "OUT": "`out`",
}


def grammar_text() -> str:
    """The grammar source: shipped inside the wheel, or read from the source tree in a checkout."""
    packaged = resources.files("autokd_dsl").joinpath("grammar", "kd.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammar" / "kd.lark").read_text(encoding="utf-8")


class _DropNewlinesInParens:
    """Post-lexer: a newline inside parentheses does not end a term."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        for tok in stream:
            if tok.type == "LPAR":
                depth += 1
            elif tok.type == "RPAR":
                depth = max(0, depth - 1)
            elif tok.type == "_NL" and depth:
                continue
            yield tok


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(
        grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=False,
        postlex=_DropNewlinesInParens(),
    )


def _span(meta) -> Span | None:
    if getattr(meta, "empty", True):
        return None
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


@v_args(meta=True)
class _ToIR(Transformer):
    """Lark tree → IR nodes (one method per grammar alternative)."""

    def start(self, meta, blocks):
        return tuple(blocks)

    def _block(self, kind, meta, children):
        name, rest = children[0], children[1:]
        params = rest[0] if rest and isinstance(rest[0], list) else []
        terms = rest[1:] if rest and isinstance(rest[0], list) else rest
        return ir.Block(kind, str(name), tuple(params), tuple(terms), span=_span(meta), name_span=_tok_span(name))

    def distiller(self, meta, children):
        return self._block("distiller", meta, children)

    def space(self, meta, children):
        return self._block("space", meta, children)

    def params(self, meta, children):
        return list(children)

    def param(self, meta, children):
        return ir.Param(str(children[0]), children[1], span=_span(meta))

    def term(self, meta, children):
        label = None
        if isinstance(children[0], Token) and children[0].type == "LABEL":
            label = children[0].rstrip(":").strip()
            children = children[1:]
        return ir.Term(tuple(children[0]), tuple(children[1:]), label, span=_span(meta))

    def taps(self, meta, children):
        return children

    def tap_choice(self, meta, children):
        return ir.TapChoice(tuple(children), span=_span(meta))

    def tap_group(self, meta, children):
        return ir.TapGroup(tuple(children), span=_span(meta))

    def tap(self, meta, children):
        return ir.Tap(children[0], children[1] if len(children) > 1 else None, span=_span(meta))

    def point(self, meta, children):
        path, side = _split_point_side(str(children[0]))
        io, call = "out", None
        for child in children[1:]:
            if isinstance(child, Token):
                call = int(child)
            else:
                io = child
        return ir.Point(path, side, io, call, span=_span(meta))

    def io_in(self, meta, children):
        return "in"

    def io_out(self, meta, children):
        return "out"

    def step(self, meta, children):
        return children[0]

    def choice(self, meta, children):
        return ir.Choice(tuple(children), span=_span(meta))

    def _bin(op):
        def method(self, meta, children):
            return ir.BinOp(op, children[0], children[1], span=_span(meta))

        return method

    add, sub, mul, div, pow = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("^")

    def neg(self, meta, children):
        return ir.Neg(children[0], span=_span(meta))

    def number(self, meta, children):
        text, span = str(children[0]), _tok_span(children[0])
        shown = text if len(text) <= 24 else text[:20] + "…"
        try:
            value = int(text) if text.isdigit() else float(text)
        except ValueError:  # more digits than Python converts
            raise KDError(f"number `{shown}` is too long", span=span) from None
        if not -sys.float_info.max <= value <= sys.float_info.max:  # inf, or an integer beyond any float
            raise KDError(f"number `{shown}` is too large", span=span, hint="numbers must stay below 1e308")
        return ir.Num(value, span=span)

    def name(self, meta, children):
        return ir.Name(str(children[0]), span=_tok_span(children[0]))

    def path(self, meta, children):
        # `student.adapt`: a one-sided op without arguments; any other dotted word stays a name
        callee, side = _split_side(str(children[0]))
        if side is None:
            return ir.Name(callee, span=_tok_span(children[0]))
        return ir.Call(callee, (), side, span=_tok_span(children[0]))

    def call(self, meta, children):
        callee, side = _split_side(str(children[0]))
        args = tuple(a if isinstance(a, ir.Arg) else ir.Arg(None, a, span=getattr(a, "span", None))
                     for a in children[1:])
        return ir.Call(callee, args, side, span=Span(meta.line, meta.column, meta.end_line, meta.end_column))

    def kwarg(self, meta, children):
        return ir.Arg(str(children[0]), children[1], span=_span(meta))


def _split_side(word: str) -> tuple[str, str | None]:
    """``"student.adapt"`` → ``("adapt", "student")``; words without a side prefix come back unchanged."""
    head = word.split(".", 1)
    if len(head) == 2 and head[0] in SIDES:
        return head[1], head[0]
    return word, None


def _split_point_side(word: str) -> tuple[str, str | None]:
    """As :func:`_split_side`, and also ``"teacher2.stage3"`` → ``("stage3", "teacher2")`` and
    ``"teachers.logits"`` → ``("logits", "teachers")``."""
    head = word.split(".", 1)
    if len(head) == 2 and _TEACHER_SIDE.fullmatch(head[0]):
        return head[1], head[0]
    return _split_side(word)


# ---- errors -----------------------------------------------------------------------------------------


def _describe_expected(expected) -> str:
    names = sorted({_TERMINALS.get(t, f"`{t.lower()}`") for t in expected if not t.startswith("__")})
    if len(names) > 6:
        names = names[:6] + ["…"]
    return ", ".join(names)


def _end_span(text: str) -> Span:
    lines = text.rstrip("\n").split("\n")
    line = max(1, len(lines))
    col = len(lines[-1]) + 1 if lines else 1
    return Span(line, col, line, col + 1)


def _syntax_error(err: UnexpectedInput, src: SourceText, text: str, final: bool = True) -> KDError:
    """Lark's error → a KDError in the user's words. ``text`` is what was parsed (the file, or one block of it
    with its line numbers kept); ``final`` says whether it runs to the end of the file."""
    if isinstance(err, UnexpectedCharacters) and text[err.pos_in_stream - 1: err.pos_in_stream + 1] == "->":
        return _stray_arrow(err, src, text)
    if isinstance(err, UnexpectedCharacters):
        ch = text[err.pos_in_stream] if err.pos_in_stream < len(text) else ""
        shown = repr(ch)[1:-1] if not ch.isprintable() else ch
        return KDError(f"unexpected character `{shown}`", span=Span(err.line, err.column, err.line, err.column + 1),
                       source=src, hint=f"expected {_describe_expected(err.allowed)}" if err.allowed else None)
    expected = getattr(err, "expected", None) or []
    hint = f"expected {_describe_expected(expected)}" if expected else None
    if isinstance(err, UnexpectedToken) and err.token.type != "$END":
        tok = err.token
        if not (tok.type == "_NL" and final and not text[tok.end_pos:].strip()):
            return KDError(f"unexpected {_token_text(tok)}", span=_token_span(tok, src), source=src, hint=hint)
    return KDError("unexpected end of file", span=_end_span(text), source=src,
                   hint=f"the last term is unfinished: {hint}" if hint else "the last term is unfinished")


def _token_text(tok: Token) -> str:
    if tok.type == "_NL":
        return "end of line"
    last_line = str(tok).split("\n")[-1]  # `->` and `|` tokens start with the newlines before them
    return f"`{last_line.strip()}`"


def _token_span(tok: Token, src: SourceText) -> Span:
    if tok.type in ("_ARROW", "_VBAR"):  # these tokens carry the newlines and spaces before the symbol
        width = 2 if tok.type == "_ARROW" else 1
        return Span(tok.end_line, tok.end_column - width, tok.end_line, tok.end_column)
    if tok.type == "_NL":  # just after the end of the line
        end = len(src.line(tok.line) or "") + 1
        return Span(tok.line, end, tok.line, end + 1)
    return Span(tok.line, tok.column, tok.line, tok.column + max(1, len(str(tok).split("\n")[0])))


def _stray_arrow(err: UnexpectedCharacters, src: SourceText, text: str) -> KDError:
    """`->` where it cannot go: lexed as `-` followed by an unexpected `>`."""
    col = err.column - 1
    before = text[: err.pos_in_stream - 1].rstrip(" \t\f")
    line = before[before.rfind("\n") + 1:]
    if before.endswith("->"):
        hint = "an op, a number or a name must come between two arrows"
    elif line.count("(") > line.count(")"):
        hint = "is a `)` missing before it?"
    else:
        hint = None
    return KDError("unexpected `->`", span=Span(err.line, col, err.line, col + 2), source=src, hint=hint)


# ---- comments ---------------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    """The lines as lark counts them (only `\\n` ends a line; `str.splitlines` also splits on `\\f` and others)."""
    return [line.rstrip("\r") for line in text.split("\n")]


def _comments(lines: list[str]) -> dict[int, tuple[str, bool]]:
    """Line number → (comment text, whether the line holds nothing else). No strings exist in .kd."""
    found = {}
    for number, line in enumerate(lines, start=1):
        at = line.find("#")
        if at >= 0:
            found[number] = (line[at:].rstrip(), not line[:at].strip())
    return found


def _code_end(lines: list[str], span: Span) -> Span:
    """``span`` cut back to its last character of code: rule spans run on over the newlines and comments that
    end a term, up to the next token."""
    for number in range(min(span.end_line, len(lines)), span.line - 1, -1):
        code = lines[number - 1].split("#", 1)[0]
        if number == span.end_line:
            code = code[: span.end_col - 1]
        code = code.rstrip()
        if number == span.line and len(code) < span.col:
            break
        if code.strip():
            return Span(span.line, span.col, number, len(code) + 1)
    return span


def _leading(comments: dict, lines: list[str], start: int, stop: int) -> tuple[str, ...]:
    """Whole-line comments in lines [start, stop), with blank lines between them kept as ''."""
    out: list[str] = []
    for number in range(start, stop):
        entry = comments.get(number)
        if entry and entry[1]:
            out.append(entry[0])
        elif not lines[number - 1].strip() and out:
            out.append("")
    return tuple(out)


def _inside(comments: dict, start: int, stop: int, whole: bool) -> list[str]:
    """Comments in lines [start, stop] that are whole-line (``whole``) or that follow code."""
    return [comments[n][0] for n in range(start, stop + 1) if n in comments and comments[n][1] == whole]


def _strip_blanks(comments: tuple[str, ...]) -> tuple[str, ...]:
    out = list(comments)
    while out and out[-1] == "":
        out.pop()
    return tuple(out)


def _attach_comments(blocks: tuple[ir.Block, ...], text: str) -> tuple[tuple[ir.Block, ...], tuple[str, ...]]:
    """Give every comment to a node: whole-line comments lead the block or term below them, comments after code
    trail their term. Comments the printer has no place for (on a block's header, on a line inside a wrapped
    term) move up to lead that block or term, so formatting never drops a comment."""
    lines = _lines(text)
    comments = _comments(lines)
    done, cursor = [], 1
    for block in blocks:
        span = _code_end(lines, block.span)
        header_end = block.terms[0].span.line - 1 if block.terms else span.end_line
        header_end = _code_end(lines, Span(block.span.line, block.span.col, header_end + 1, 1)).end_line
        lead = _leading(comments, lines, cursor, block.span.line)
        lead += tuple(_inside(comments, block.span.line, header_end, True))
        lead += tuple(_inside(comments, block.span.line, header_end, False))
        cursor = header_end + 1
        terms = []
        for term in block.terms:
            tspan = _code_end(lines, term.span)
            term_lead = _strip_blanks(_leading(comments, lines, cursor, term.span.line))
            term_lead += tuple(_inside(comments, tspan.line + 1, tspan.end_line, True))
            trailing = _inside(comments, tspan.line, tspan.end_line, False)
            cursor = tspan.end_line + 1
            terms.append(_replace(term, span=tspan, comments=term_lead, trailing=" ".join(trailing) or None))
        done.append(_replace(block, span=span, terms=tuple(terms), comments=lead))
    trailer = _strip_blanks(_leading(comments, lines, cursor, len(lines) + 1))
    return tuple(done), trailer


def _replace(node, **changes):
    import dataclasses

    return dataclasses.replace(node, **changes)


# ---- entry point ------------------------------------------------------------------------------------

_BLOCK_START = re.compile(r"^(distiller|space)\b", re.MULTILINE)


# Limits on the shape of an expression. Nesting (parentheses, calls, a `^` tower, alternating operators) is
# limited to MAX_DEPTH levels; a flat chain such as `a + b + c + …` is one level however long, but the syntax
# tree holds it as a left-leaning chain, and the recursive passes (transformer, checker, printer, content key)
# overflow Python's stack somewhere past 400 tree levels, so the tree itself may be at most MAX_TREE_DEPTH deep.
MAX_DEPTH = 100
MAX_TREE_DEPTH = 300
_CHAINS = ({"add", "sub"}, {"mul", "div"})


def _level(parent: Tree, child: Tree, index: int) -> int:
    """0 when ``child`` continues ``parent``'s left-leaning chain of same-precedence operators, else 1."""
    return 0 if index == 0 and any(parent.data in c and child.data in c for c in _CHAINS) else 1


def _check_depth(tree: Tree) -> None:
    stack = [(tree, 1, 1)]
    while stack:
        node, depth, tree_depth = stack.pop()
        if depth > MAX_DEPTH:
            raise KDError(f"expression nested more than {MAX_DEPTH} levels deep", span=_span(node.meta),
                          hint="split it into parameters, or leave out redundant parentheses")
        if tree_depth > MAX_TREE_DEPTH:
            raise KDError(f"expression too long: more than {MAX_TREE_DEPTH - 10} operators in a row",
                          span=_span(node.meta), hint="split it into parameters")
        stack.extend((child, depth + _level(node, child, i), tree_depth + 1)
                     for i, child in enumerate(node.children) if isinstance(child, Tree))


def _parse_blocks(text: str, src: SourceText, final: bool = True) -> tuple[ir.Block, ...]:
    try:
        tree = _parser().parse(text)
        _check_depth(tree)
        return _ToIR().transform(tree)
    except KDError as err:
        raise err.located(src) from None
    except VisitError as err:
        if isinstance(err.orig_exc, KDError):
            raise err.orig_exc.located(src) from None
        raise err.orig_exc from None
    except (UnexpectedInput, UnexpectedEOF) as err:
        raise _syntax_error(err, src, text, final) from None


def parse(text: str, path: str = "<string>") -> ir.Program:
    """Parse `.kd` source into an unchecked :class:`~autokd_dsl.lang.ir.Program`.

    Syntax errors are reported for every block (one per block), all in one :class:`KDError`.
    """
    src = SourceText(path, text)
    body = text if text.endswith("\n") else text + "\n"
    if "\x00" in body:
        raise KDError("file is not text (it holds NUL bytes)", source=SourceText(path, ""))
    try:
        blocks = _parse_blocks(body, src)
    except KDError as first:
        raise_all(_errors_per_block(body, src) or [first])
        raise
    blocks, trailer = _attach_comments(blocks, body)
    return ir.Program(blocks, path=path, comments=trailer)


def _errors_per_block(body: str, src: SourceText) -> list[KDError]:
    """Parse each block on its own (line numbers kept) to report one syntax error per block."""
    starts = [m.start() for m in _BLOCK_START.finditer(body)]
    if not starts or not _only_comments(body[: starts[0]]):
        starts = [0] + starts
    errors = []
    for begin, end in zip(starts, starts[1:] + [len(body)]):
        chunk = "\n" * body.count("\n", 0, begin) + body[begin:end]
        try:
            _parse_blocks(chunk, src, final=end == len(body))
        except KDError as err:
            errors.append(err)
    return errors


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("#") for line in text.splitlines())


# A `.kd` file is a few kilobytes; anything far larger is not one (and `/dev/zero` never ends).
MAX_SOURCE_BYTES = 1 << 20
_BOM = "\ufeff"


def read_source(path: str | Path) -> SourceText:
    """Read a `.kd` file as text: a regular file of at most 1 MiB of UTF-8 (a leading byte-order mark is dropped).

    Anything else (missing, a folder, a device, binary, too large, unreadable) is a :class:`KDError`.
    """
    p = Path(path)
    try:
        if not stat.S_ISREG(p.stat().st_mode):  # before opening: opening a FIFO waits for a writer
            raise KDError(f"{path}: not a regular file", hint="give the path of a .kd text file")
        with open(p, "rb") as handle:
            raw = handle.read(MAX_SOURCE_BYTES + 1)
    except FileNotFoundError:
        raise KDError(f"{path}: no such file") from None
    except OSError as err:
        raise KDError(f"{path}: cannot read file ({err.strerror})") from None
    if len(raw) > MAX_SOURCE_BYTES:
        raise KDError(f"{path}: file is larger than {MAX_SOURCE_BYTES >> 20} MiB; a .kd file is a few kilobytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise KDError("file is not UTF-8 text", span=Span(line, col, line, col + 1),
                      source=SourceText(str(path), ""), hint="a .kd file is plain UTF-8 text") from None
    return SourceText(str(path), text[1:] if text.startswith(_BOM) else text)


def parse_source(source: SourceText) -> ir.Program:
    """Parse the text of :func:`read_source`."""
    return parse(source.text, source.path)


def parse_file(path: str | Path) -> ir.Program:
    """Read and parse a `.kd` file; unreadable or non-UTF-8 files are a :class:`KDError`."""
    return parse_source(read_source(path))
