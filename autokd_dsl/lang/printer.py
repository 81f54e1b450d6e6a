"""Print the IR as canonical `.kd` text: ``check(parse(print(p))) == p`` for every checked program.

>>> from autokd_dsl.lang.check import check_text
>>> print(print_program(check_text("distiller kd( t=4 ):\\n  logits->softmax( t )->kl->t ^ 2")), end="")
distiller kd(t = 4):
    logits -> softmax(t) -> kl -> t^2
"""

from __future__ import annotations

from . import ir
from .ops import OPS

INDENT = "    "
CONTINUATION = "      "
WIDTH = 100

# binding strength of each operator (higher binds tighter)
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "^": 4}


def print_program(program: ir.Program) -> str:
    parts = [print_block(b) for b in program.blocks]
    text = "\n".join(parts)
    if program.comments:
        text += ("\n" if text else "") + "\n".join(program.comments) + "\n"
    return text


def print_block(block: ir.Block) -> str:
    lines = list(block.comments)
    params = ""
    if block.params:
        params = "(" + ", ".join(f"{p.name} = {print_expr(p.value, top=True)}" for p in block.params) + ")"
    lines.append(f"{block.kind} {block.name}{params}:")
    for term in block.terms:
        lines.extend(INDENT + c if c else "" for c in term.comments)
        lines.append(print_term(term))
    return "\n".join(lines) + "\n"


def print_term(term: ir.Term) -> str:
    label = f"{term.label}: " if term.label else ""
    taps = ", ".join(print_tap_slot(t) for t in term.taps)
    steps = [print_step(s) for s in term.steps]
    one_line = INDENT + label + " -> ".join([taps] + steps)
    trailing = f"  {term.trailing}" if term.trailing else ""
    if len(one_line) <= WIDTH:
        return one_line + trailing
    lines = [INDENT + label + taps] + [f"{CONTINUATION}-> {s}" for s in steps]
    return "\n".join(lines) + trailing


def print_tap_slot(slot: ir.TapSlot) -> str:
    if isinstance(slot, ir.TapChoice):
        return " | ".join(print_tap_option(t) for t in slot.options)
    return print_tap(slot)


def print_tap_option(option: ir.Tap | ir.TapGroup) -> str:
    if isinstance(option, ir.TapGroup):
        return "(" + ", ".join(print_tap(t) for t in option.taps) + ")"
    return print_tap(option)


def print_tap(tap: ir.Tap) -> str:
    text = print_point(tap.student)
    return f"{text} ~ {print_point(tap.teacher)}" if tap.teacher is not None else text


def print_point(point: ir.Point) -> str:
    text = f"{point.side}.{point.path}" if point.side else point.path
    if point.io != "out":
        text += f":{point.io}"
    if point.call is not None:
        text += f"@{point.call}"
    return text


def print_step(expr: ir.Expr) -> str:
    if isinstance(expr, ir.Choice):
        return "(" + " | ".join(print_expr(o) for o in expr.options) + ")"
    return print_expr(expr)


def print_number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def print_expr(expr: ir.Expr, prec: int = 0, top: bool = False) -> str:
    """An expression; ``top`` allows a bare choice (`1 | 4 | 8`) without parentheses."""
    if isinstance(expr, ir.Num):
        return print_number(expr.value)
    if isinstance(expr, ir.Name):
        return expr.id
    if isinstance(expr, ir.Choice):
        inner = " | ".join(print_expr(o) for o in expr.options)
        return inner if top else f"({inner})"
    if isinstance(expr, ir.Neg):
        text = "-" + print_expr(expr.operand, _PREC["neg"])
        return f"({text})" if prec > _PREC["neg"] else text
    if isinstance(expr, ir.BinOp):
        return _binop(expr, prec)
    if isinstance(expr, ir.Call):
        return print_call(expr)
    raise TypeError(f"cannot print {expr!r}")


def _binop(expr: ir.BinOp, prec: int) -> str:
    mine = _PREC[expr.op]
    if expr.op == "^":  # right-associative, written tight: t^2; the exponent may be negated bare: t^-1
        text = f"{print_expr(expr.left, mine + 1)}^{print_expr(expr.right, _PREC['neg'])}"
    else:
        text = f"{print_expr(expr.left, mine)} {expr.op} {print_expr(expr.right, mine + 1)}"
    return f"({text})" if mine < prec else text


def print_call(call: ir.Call) -> str:
    name = f"{call.side}.{call.op}" if call.side else call.op
    if not call.args:
        return name
    op = OPS.get(call.op)
    return f"{name}({', '.join(_print_args(call, op))})"


def _print_args(call: ir.Call, op) -> list[str]:
    """Positional while the op's leading positional parameters are given without gaps; axes are positional
    (they bind by type); everything else by keyword."""
    if op is None:
        return [(f"{a.name} = " if a.name else "") + print_expr(a.value, top=True) for a in call.args]
    given = {a.name: a for a in call.args}
    out, contiguous = [], True
    for param in op.params:
        arg = given.get(param.name)
        if arg is None:
            contiguous = contiguous and bool(param.choices)
            continue
        value = print_expr(arg.value, top=True)
        positional = not param.kw_only and (bool(param.choices) or contiguous)
        out.append(value if positional else f"{param.name} = {value}")
    return out
