"""Write a compiled distiller as a standalone Python file that imports only torch.

The file holds the kernels, the connector class and the hook utilities (copied from this package), the tap
tables, the loss module whose ``forward`` is the torch.fx generated code, and ``attach(teacher, student)``.
The same inputs always give the same bytes.
"""

from __future__ import annotations

import inspect
import re

from ..lang.printer import print_block
from ..standalone import attach, connectors, kernels, teachers

_IMPORTS = ["import math", "import types", "", "import torch", "import torch.nn.functional as F", "from torch import nn"]


def _body(module) -> str:
    """A module's source without its docstring and imports."""
    source = inspect.getsource(module)
    tree_doc = module.__doc__ or ""
    if tree_doc:
        source = source.split('"""', 2)[2]
    lines = [ln for ln in source.splitlines() if not re.match(r"^(import |from \S+ import )", ln)]
    return "\n".join(lines).strip("\n") + "\n"


def _namespace() -> str:
    names = [n for n, f in vars(kernels).items() if inspect.isfunction(f) and f.__module__ == kernels.__name__
             and not n.startswith("_")]
    return "\n\nkernels = types.SimpleNamespace(\n" + "".join(f"    {n}={n},\n" for n in names) + ")\n"


def _forward(loss) -> str:
    code = loss.code.replace("autokd_dsl_standalone_kernels_", "kernels.")
    code = code.replace("autokd_dsl_standalone_teachers_", "").strip("\n")
    lines = [("    " + ln) if ln.strip() else "" for ln in code.splitlines()]
    return "\n".join(ln.rstrip() for ln in lines).rstrip() + "\n"


def _init(loss) -> str:
    """``__init__`` rebuilding each module from its constructor arguments (connectors keep them in ``args``)."""
    lines = ["    needs_index = True  # pass index= (the batch's dataset positions)", ""] if _needs_index(loss) else []
    lines += ["    def __init__(self):", "        super().__init__()"]
    for name, module in loss.named_children():
        args = ", ".join(repr(a) for a in module.args)
        lines.append(f"        self.{name} = {type(module).__name__}({args})")
    return "\n".join(lines) + "\n"


def _needs_index(loss) -> bool:
    return bool(getattr(loss, "needs_index", False))


def _several(loss) -> bool:
    return len(getattr(loss, "teachers_taps", [None])) > 1


def emit(loss, *, teacher: str | list[str], student: str, input_size, num_classes: int) -> str:
    size = "x".join(str(d) for d in input_size)
    kd = "\n".join("# " + ln if ln else "#" for ln in print_block(loss.distiller).rstrip("\n").splitlines())
    several = _several(loss)
    names = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    who = (f"teachers {', '.join(names)}" if several else f"teacher {names[0]}")
    header = (
        f'"""Distiller `{loss.distiller.name}` compiled by autokd-dsl for {who} and student '
        f"{student}\n(input {size}, {num_classes} classes). Generated code: edit the .kd source and compile "
        "again.\n\n"
        "    loss = DistillerLoss()                # learnable connectors are its parameters\n"
        + (f"    model = attach([{', '.join(f'teacher{i}' for i in range(1, len(names) + 1))}], student, loss)"
           "   # the teachers in this order\n" if several else "    model = attach(teacher, student, loss)\n")
        + "    logits, losses = model(x, labels=y, epoch=epoch)   # losses['total'] is the training loss\n"
        '"""\n'
    )
    teacher_taps = [dict(t) for t in loss.teachers_taps] if several else dict(loss.teacher_taps)
    parts = [
        header,
        "\n".join(_IMPORTS[:2] + (["import warnings"] if several else []) + _IMPORTS[2:]) + "\n",
        f"# The distiller, as written:\n{kd}\n",
        "# ---- kernels " + "-" * 85 + "\n\n" + _body(kernels) + _namespace(),
        "# ---- connectors " + "-" * 82 + "\n\n" + _body(connectors),
        *(["# ---- weights of several teachers " + "-" * 65 + "\n\n" + _body(teachers)] if several else []),
        "# ---- hooks " + "-" * 87 + "\n\n" + _body(attach),
        "# ---- the loss " + "-" * 84 + "\n",
        f"STUDENT_TAPS = {dict(loss.student_taps)!r}\nTEACHER_TAPS = {teacher_taps!r}"
        + ("  # one dict per teacher, in order" if several else "") + "\n"
        f"TERMS = {list(loss.term_names)!r}\n",
        "\nclass DistillerLoss(nn.Module):\n"
        f'    """forward(<student taps>, <teacher taps>, labels=None, epoch=0) -> dict of terms and "total"."""\n\n'
        + _init(loss) + "\n" + _forward(loss),
        ("\ndef attach(teachers, student, loss=None):\n"
         '    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses); `teachers` is '
         'the list\n    of teacher networks, in the order of TEACHER_TAPS."""\n'
         "    return Attached(list(teachers), student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, "
         "TEACHER_TAPS)\n") if several else
        ("\ndef attach(teacher, student, loss=None):\n"
         '    """A module whose forward(x, labels=None, epoch=0) returns (student_output, losses)."""\n'
         "    return Attached(teacher, student, loss if loss is not None else DistillerLoss(), STUDENT_TAPS, "
         "TEACHER_TAPS)\n"),
    ]
    return "\n\n".join(p.rstrip("\n") + "\n" for p in parts)
