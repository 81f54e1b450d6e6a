"""Parse `.kd` text into the IR (`autokd_dsl.ir`), with source spans and comments.

The grammar (`grammar/kd.lark`) is loaded and compiled once, lazily. Lark's exceptions never leave this
module: they become :class:`~autokd_dsl.errors.KDError` with the characters a person typed.

>>> prog = parse("distiller kd(t = 4):\\n    logits -> softmax(t) -> kl -> t^2\\n")
>>> prog.blocks[0].name, len(prog.blocks[0].terms[0].steps)
('kd', 3)
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ir
from .errors import KDError, SourceText, Span, raise_all

SIDES = ("student", "teacher")

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
    return (Path(__file__).resolve().parent.parent / "grammar" / "kd.lark").read_text(encoding="utf-8")


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

    def tap(self, meta, children):
        return ir.Tap(children[0], children[1] if len(children) > 1 else None, span=_span(meta))

    def point(self, meta, children):
        path, side = str(children[0]), None
        head = path.split(".", 1)
        if len(head) == 2 and head[0] in SIDES:
            side, path = head
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

    def _bin(op):  # noqa: N805 - helper building one method per operator
        def method(self, meta, children):
            return ir.BinOp(op, children[0], children[1], span=_span(meta))

        return method

    add, sub, mul, div, pow = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("^")

    def neg(self, meta, children):
        return ir.Neg(children[0], span=_span(meta))

    def number(self, meta, children):
        text = str(children[0])
        value = int(text) if text.isdigit() else float(text)
        return ir.Num(value, span=_tok_span(children[0]))

    def name(self, meta, children):
        return ir.Name(str(children[0]), span=_tok_span(children[0]))

    def call(self, meta, children):
        callee, side = str(children[0]), None
        head = callee.split(".", 1)
        if len(head) == 2 and head[0] in SIDES:
            side, callee = head
        args = tuple(a if isinstance(a, ir.Arg) else ir.Arg(None, a, span=getattr(a, "span", None)) for a in children[1:])
        return ir.Call(callee, args, side, span=Span(meta.line, meta.column, meta.end_line, meta.end_column))

    def kwarg(self, meta, children):
        return ir.Arg(str(children[0]), children[1], span=_span(meta))


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


def _syntax_error(err: UnexpectedInput, src: SourceText) -> KDError:
    if isinstance(err, UnexpectedCharacters) and src.text[err.pos_in_stream - 1: err.pos_in_stream + 1] == "->":
        col = err.column - 1
        return KDError("unexpected `->`", span=Span(err.line, col, err.line, col + 2), source=src,
                       hint="an op, a number or a name must come between two arrows")
    if isinstance(err, UnexpectedCharacters):
        ch = src.text[err.pos_in_stream] if err.pos_in_stream < len(src.text) else ""
        shown = repr(ch)[1:-1] if not ch.isprintable() else ch
        return KDError(f"unexpected character `{shown}`", span=Span(err.line, err.column, err.line, err.column + 1),
                       source=src, hint=f"expected {_describe_expected(err.allowed)}" if err.allowed else None)
    if isinstance(err, UnexpectedToken) and err.token.type != "$END":
        tok = err.token
        what = "end of line" if tok.type == "_NL" else f"`{str(tok).strip()}`"
        span = Span(tok.line, tok.column, tok.line, tok.column + max(1, len(str(tok).split("\n")[0])))
        if tok.type in ("_NL", "_ARROW", "_VBAR") and "\n" in str(tok):
            prev = src.line(tok.line) or ""
            span = Span(tok.line, len(prev) + 1, tok.line, len(prev) + 2)
        return KDError(f"unexpected {what}", span=span, source=src,
                       hint=f"expected {_describe_expected(err.expected)}")
    expected = getattr(err, "expected", None) or []
    return KDError("unexpected end of file", span=_end_span(src.text), source=src,
                   hint=f"expected {_describe_expected(expected)}" if expected else "the last term is unfinished")


# ---- comments ---------------------------------------------------------------------------------------


def _comments(text: str) -> dict[int, tuple[str, bool]]:
    """Line number → (comment text, whether the line holds nothing else). No strings exist in .kd."""
    found = {}
    for number, line in enumerate(text.splitlines(), start=1):
        at = line.find("#")
        if at >= 0:
            found[number] = (line[at:].rstrip(), not line[:at].strip())
    return found


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


def _strip_blanks(comments: tuple[str, ...]) -> tuple[str, ...]:
    out = list(comments)
    while out and out[-1] == "":
        out.pop()
    return tuple(out)


def _attach_comments(blocks: tuple[ir.Block, ...], text: str) -> tuple[tuple[ir.Block, ...], tuple[str, ...]]:
    comments, lines = _comments(text), text.splitlines()
    done, cursor = [], 1
    for block in blocks:
        lead = _leading(comments, lines, cursor, block.span.line)
        cursor = block.span.line + 1
        terms = []
        for term in block.terms:
            term_lead = _strip_blanks(_leading(comments, lines, cursor, term.span.line))
            trailing = [comments[n][0] for n in range(term.span.line, term.span.end_line + 1)
                        if n in comments and not comments[n][1]]
            cursor = term.span.end_line + 1
            terms.append(_replace(term, comments=term_lead, trailing=" ".join(trailing) or None))
        done.append(_replace(block, terms=tuple(terms), comments=lead))
    trailer = _strip_blanks(_leading(comments, lines, cursor, len(lines) + 1))
    return tuple(done), trailer


def _replace(node, **changes):
    import dataclasses

    return dataclasses.replace(node, **changes)


# ---- entry point ------------------------------------------------------------------------------------

_BLOCK_START = re.compile(r"^(distiller|space)\b", re.M)


def _parse_blocks(text: str, src: SourceText) -> tuple[ir.Block, ...]:
    try:
        return _ToIR().transform(_parser().parse(text))
    except VisitError as err:
        raise err.orig_exc from None
    except (UnexpectedInput, UnexpectedEOF) as err:
        raise _syntax_error(err, src) from None


def parse(text: str, path: str = "<string>") -> ir.Program:
    """Parse `.kd` source into an unchecked :class:`~autokd_dsl.ir.Program`.

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
            _parse_blocks(chunk, src)
        except KDError as err:
            errors.append(err)
    return errors


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("#") for line in text.splitlines())


def parse_file(path: str | Path) -> ir.Program:
    """Read and parse a `.kd` file; unreadable or non-UTF-8 files are a :class:`KDError`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise KDError(f"{path}: no such file") from None
    except OSError as err:
        raise KDError(f"{path}: cannot read file ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise KDError("file is not UTF-8 text", span=Span(line, col, line, col + 1),
                      source=SourceText(str(path), ""), hint="a .kd file is plain UTF-8 text") from None
    return parse(text, str(path))
