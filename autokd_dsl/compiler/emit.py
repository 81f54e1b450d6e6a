"""Write a compiled distiller as a standalone Python file that imports only torch and the standard library.

The file holds what the loss's graph reaches and nothing more: the kernels its nodes call, the classes of its
modules, the helpers those use (followed by name through the sources of :mod:`autokd_dsl.standalone`, copied
verbatim), the hooks behind ``attach``, the tap tables, and the loss module. Its ``__init__`` takes the
distiller's parameters with the `.kd` defaults (``DistillerLoss(t=2)``); its ``forward`` is the torch.fx
generated code. The same inputs always give the same bytes.
"""

from __future__ import annotations

import ast
import inspect
from functools import cache

from ..lang import ir
from ..lang.printer import print_block
from ..standalone import attach, connectors, kernels, teachers

SOURCES = (kernels, connectors, teachers, attach)  # in this order in the file
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "^": 4}


@cache
def definitions() -> dict[str, tuple[int, str, frozenset[str]]]:
    """Every top-level definition of the standalone modules: name → (position, source text, names it uses)."""
    out: dict[str, tuple[int, str, frozenset[str]]] = {}
    for module in SOURCES:
        source = inspect.getsource(module)
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            else:  # the docstring and the imports
                continue
            used = frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
            for name in names:
                out[name] = (len(out), ast.get_source_segment(source, node), used)
    return out


def reached(roots: set[str]) -> list[str]:
    """``roots`` and every definition they use, in the order of the sources.

    >>> reached({"Align"})
    ['Part', '_resize', 'Connector', 'Align']
    """
    table, seen, todo = definitions(), set(), list(roots)
    while todo:
        name = todo.pop()
        if name in table and name not in seen:
            seen.add(name)
            todo.extend(table[name][2])
    return sorted(seen, key=lambda n: table[n][0])


def python(expr: ir.Expr, outer: int = 0) -> str:
    """A number expression of the language as Python source (``^`` is ``**``).

    >>> python(ir.BinOp("/", ir.BinOp("*", ir.Neg(ir.Name("a")), ir.BinOp("^", ir.Name("t"), ir.Num(2))),
    ...                  ir.BinOp("-", ir.Num(1), ir.Name("a"))))
    '-a * t ** 2 / (1 - a)'
    """
    if isinstance(expr, ir.Num):
        return repr(expr.value)
    if isinstance(expr, ir.Name):
        return expr.id
    if isinstance(expr, ir.Neg):
        level, text = _PRECEDENCE["neg"], "-" + python(expr.operand, _PRECEDENCE["neg"])
    else:
        level = _PRECEDENCE[expr.op]
        right_assoc = expr.op == "^"
        left = python(expr.left, level + right_assoc)
        right = python(expr.right, level + (not right_assoc))
        text = f"{left} {'**' if right_assoc else expr.op} {right}"
    return f"({text})" if level < outer else text


def _roots(loss) -> tuple[list[str], set[str]]:
    """The kernels the graph calls, and every definition the file needs (modules, hooks)."""
    nodes = [n for n in loss.graph.nodes if n.op == "call_function"]
    called = [n.target.__name__ for n in nodes if getattr(n.target, "__module__", None) == kernels.__name__]
    called += [n.args[0] for n in nodes if n.target is teachers.per_sample]  # a distance, by name
    called = sorted(set(called), key=called.index)
    weights = {n.target.__name__ for n in nodes if getattr(n.target, "__module__", None) == teachers.__name__}
    classes = {type(m).__name__ for m in loss.children()}
    several = len(getattr(loss, "teachers_taps", [None])) > 1
    return called, set(called) | weights | classes | {"AttachedTeachers" if several else "Attached"}


def _imports(names: list[str]) -> list[str]:
    used = set().union(*(definitions()[n][2] for n in names))
    lines = ["import functools"] if "functools" in used else []
    lines += ["import math"] if "math" in used else []
    lines += ["import types"] + (["import warnings"] if "warnings" in used else []) + ["", "import torch"]
    lines += ["import torch.nn.functional as F"] if "F" in used else []
    return lines + ["from torch import nn"]


def _forward(loss) -> str:
    code = loss.code.replace("autokd_dsl_standalone_kernels_", "kernels.")
    code = code.replace("autokd_dsl_standalone_teachers_", "").strip("\n")  # weights of several teachers
    lines = [("    " + ln) if ln.strip() else "" for ln in code.splitlines()]
    return "\n".join(ln.rstrip() for ln in lines).rstrip() + "\n"


def _init(loss) -> str:
    """``__init__``: the distiller's parameters (the `.kd` defaults), the attributes the graph reads, and each
    module rebuilt from its constructor arguments (a connector's ``args``)."""
    use = loss.param_use
    signature = "".join(f", {name}={value!r}" for name, value in use.values.items())
    lines = ["    needs_index = True  # pass index= (the batch's dataset positions)", ""] if loss.needs_index else []
    lines += [f"    def __init__(self{signature}):", "        super().__init__()"]
    for name in (n for n in use.values if n in use.fixed):
        lines += [f"        if {name} != {use.values[name]!r}:",
                  f"            raise ValueError(\"`{name}` shapes this loss (compiled for {use.values[name]!r}): \"",
                  "                             \"compile the distiller again for another value\")"]
    lines += [f"        self.{attr} = {name}" for name, attr in use.attrs.items()]
    lines += [f"        self.{attr} = {python(expr)}" for attr, expr in use.derived.items()]
    lines += ["        self.tap_shapes = TAP_SHAPES"] if "check_taps" in _roots(loss)[0] else []
    for name, module in loss.named_children():
        lines.append(f"        self.{name} = {type(module).__name__}({', '.join(repr(a) for a in module.args)})")
    return "\n".join(lines) + "\n"


def _signature_example(loss) -> str:
    values = loss.param_use.values
    return f"DistillerLoss({', '.join(f'{n}={v!r}' for n, v in values.items())})"


def emit(loss, *, teacher: str | list[str], student: str, input_size, num_classes: int) -> str:
    size = "x".join(str(d) for d in input_size)
    names = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    several = len(getattr(loss, "teachers_taps", [None])) > 1
    who = f"teachers {', '.join(names)}" if several else f"teacher {names[0]}"
    nets = f"[{', '.join(f'teacher{k}' for k in range(1, len(names) + 1))}]" if several else "teacher"
    teacher_taps = [dict(t) for t in loss.teachers_taps] if several else dict(loss.teacher_taps)
    kd = "\n".join("# " + ln if ln else "#" for ln in print_block(loss.distiller).rstrip("\n").splitlines())
    called, roots = _roots(loss)
    names = reached(roots)
    table = definitions()
    header = (
        f'"""Distiller `{loss.distiller.name}` compiled by autokd-dsl for {who} and student '
        f"{student}\n(input {size}, {num_classes} classes). Generated code: edit the .kd source and compile "
        "again.\n\n"
        f"    loss = {_signature_example(loss)}   # the .kd defaults; learnable connectors are its parameters\n"
        f"    model = attach({nets}, student, loss)" + ("   # the teachers in this order" if several else "") + "\n"
        "    logits, losses = model(x, labels=y, epoch=epoch)   # losses['total'] is the training loss\n"
        '"""\n'
    )
    shapes = {name: tuple(shape) for name, shape in loss.tap_shapes.items()}
    parts = [
        header,
        "\n".join(_imports(names)) + "\n",
        f"# The distiller, as written:\n{kd}\n",
        "# ---- what the loss uses, copied from autokd_dsl.standalone " + "-" * 39 + "\n\n"
        + "\n\n".join(table[n][1] for n in names) + "\n",
        "kernels = types.SimpleNamespace(" + ", ".join(f"{n}={n}" for n in called) + ")\n",
        "# ---- the loss " + "-" * 84 + "\n",
        f"STUDENT_TAPS = {dict(loss.student_taps)!r}\nTEACHER_TAPS = {teacher_taps!r}"
        + ("  # one dict per teacher, in order" if several else "") + "\n"
        f"TAP_SHAPES = {shapes!r}  # per sample, as compiled\n",
        "class DistillerLoss(nn.Module):\n"
        '    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""\n\n'
        + _init(loss) + "\n" + _forward(loss),
        ("def attach(teachers, student, loss=None):\n"
         '    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses); `teachers` is '
         'the list\n    of teacher networks, in the order of TEACHER_TAPS."""\n'
         "    return AttachedTeachers(list(teachers), student, loss if loss is not None else DistillerLoss(), "
         "STUDENT_TAPS, TEACHER_TAPS)\n") if several else
        ("def attach(teacher, student, loss=None):\n"
         '    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""\n'
         "    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, "
         "TEACHER_TAPS)\n"),
    ]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)
