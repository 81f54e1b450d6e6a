"""Multi-layer expansion: apply one term of a distiller at several layers, with training-free weights.

A search finds a pipeline at one tap (say ``stage3 -> pool(2) -> mse -> 5``). :func:`expand_layers` writes the
same pipeline once per layer (``stage1``, ``stage2``, ``stage3``) and weighs the copies from ONE batch, with no
training: each copy's loss is measured on that batch with the teacher and an untrained student. The copies
get weights that make their weighted losses equal, and together they equal the original term's weighted loss
on that batch:

    weight_l = w * L / (n * L_l)

Here ``w`` is the original weight, ``L`` the original term's unweighted loss, ``L_l`` the loss at layer ``l``,
and ``n`` the number of layers. Layers whose raw losses differ by orders of magnitude (early stages hold
larger maps) then start out contributing alike, and the distiller's balance against its other terms
(cross-entropy) is kept.

With several teachers (``over_teachers``), a copy is made per teacher too (`stage3 ~ teacher2.stage3`), for
every layer and teacher: the same rule with ``n`` the number of copies and ``L`` measured against the first
teacher, the one the term was found with.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .compiler.build import attach, compile_distiller
from .compiler.lower import term_names
from .errors import KDError
from .lang import ir
from .lang.check import check_text
from .lang.printer import print_block


def _at_layer(term: ir.Term, layer: str, label: str, teacher: int | None = None) -> ir.Term:
    # the layer comes from the command line: its point has no place in the file (span None)
    student = dataclasses.replace(term.taps[0].student, path=layer, io="out", call=None, span=None)
    moved = ir.Tap(student=student, teacher=None if teacher is None else ir.Point(layer, f"teacher{teacher}"))
    return dataclasses.replace(term, taps=(moved,), label=label, comments=(), trailing=None)


def _weighted(term: ir.Term, factor: float) -> ir.Term:
    factor = float(f"{factor:.4g}")
    weight = ir.BinOp("*", term.steps[-1], ir.Num(int(factor) if factor.is_integer() else factor))
    return dataclasses.replace(term, steps=term.steps[:-1] + (weight,))


def _unit(term: ir.Term) -> ir.Term:
    return dataclasses.replace(term, steps=term.steps[:-1] + (ir.Num(1),))


def term_losses(block: ir.Block, terms: list[ir.Term], teacher: nn.Module, student: nn.Module,
                x: torch.Tensor, y: torch.Tensor, **names) -> list[float]:
    """Each term's unweighted loss on the batch ``(x, y)`` (weights set to 1), student in eval mode."""
    probe = dataclasses.replace(block, terms=tuple(_unit(t) for t in terms), comments=())
    labels = term_names(probe)
    loss = compile_distiller(probe, teacher, student, tuple(x.shape[1:]), **names).to(x.device)
    if loss.needs_index:
        raise KDError(f"`{block.name}` keeps memory banks over the training set; expand does not support them")
    model = attach(teacher, student, loss)
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            _, values = model(x, labels=y, epoch=0)
    finally:
        student.train(was_training)
        model.detach_hooks()
    return [float(values[name]) for name in labels]


def pick_term(block: ir.Block, layers: list[str] | None, term: str | None = None) -> int:
    """The index of the term to expand (checked before any network runs); ``layers`` None: at its own tap."""
    if block.kind != "distiller":
        raise KDError(f"`{block.name}` is a space; expand one of its candidates (e.g. a search's best.kd)")
    if layers is not None and (not layers or len(set(layers)) != len(layers)):
        raise KDError("--layers needs one or more distinct tap points, e.g. stage1,stage2,stage3 (command-line value)")
    names = term_names(block)
    if term is None:
        pick = next((i for i, t in enumerate(block.terms)
                     if len(t.taps) == 1 and isinstance(t.taps[0], ir.Tap) and t.taps[0].teacher is None
                     and not t.taps[0].student.is_labels and t.taps[0].student.path != "logits"), None)
        if pick is None:
            raise KDError(f"`{block.name}` has no term tapped at one feature point", hint="name one with --term")
    elif term in names:
        pick = names.index(term)
    else:
        raise KDError(f"--term: `{block.name}` has no term `{term}` (command-line value)",
                      hint="its terms: " + ", ".join(names))
    chosen = block.terms[pick]
    tap = chosen.taps[0]
    if len(chosen.taps) != 1 or not isinstance(tap, ir.Tap) or tap.teacher is not None or tap.student.is_labels:
        raise KDError(f"term `{names[pick]}` must tap one point, the same on both networks, to be expanded",
                      span=chosen.span)
    return pick


def _copies(chosen: ir.Term, name: str, layers: list[str] | None, teachers: int) -> list[tuple[str, ir.Term]]:
    """(what, copy) per layer and teacher: `stage2`, `stage2 teacher2`, …"""
    own = chosen.taps[0].student.path
    out = []
    for layer in layers or [own]:
        for k in range(1, teachers + 1) if teachers else [None]:
            label = name + (f"_{layer.replace('.', '_')}" if layers else "") + (f"_t{k}" if k else "")
            what = (layer if layers else "") + (f"{' ' if layers else ''}teacher{k}" if k else "")
            out.append((what, _at_layer(chosen, layer, label, k)))
    return out


def check_layers(layers: list[str], nets: dict[str, nn.Module]) -> None:
    """Each layer of --layers must be a tap point of every network (``nets``: name → model), checked before any
    teacher is trained or loaded; the error names the command-line value."""
    from .compiler.taps import resolve_point

    for layer in layers:
        for name, net in nets.items():
            try:
                resolve_point(net, ir.Point(path=layer), name)
            except KDError as err:
                raise KDError(f"--layers: {err.message} (command-line value)", hint=err.hint) from None


def expand_layers(block: ir.Block, layers: list[str] | None, teacher: nn.Module | list[nn.Module],
                  student: nn.Module, x: torch.Tensor, y: torch.Tensor, term: str | None = None, *,
                  teacher_name: str | list[str] | None = None, student_name: str | None = None,
                  over_teachers: bool = False) -> tuple[ir.Block, dict]:
    """``block`` with one term replaced by a copy per layer (and, ``over_teachers``, per teacher of the list
    ``teacher``), weighted as the module docstring says.

    Returns the new distiller (checked) and the measurements: the original term's loss and each copy's.
    """
    pick = pick_term(block, layers, term)
    names = term_names(block)
    chosen = block.terms[pick]
    tap = chosen.taps[0]
    teachers = len(teacher) if over_teachers and isinstance(teacher, (list, tuple)) else 0
    if over_teachers and teachers < 2:
        raise KDError("--teachers needs two or more teachers, e.g. --teachers resnet56,wrn_40_2")
    labelled = _copies(chosen, names[pick], layers, teachers)
    copies = [c for _, c in labelled]
    layers = [what for what, _ in labelled]
    candidate = dataclasses.replace(block, terms=tuple(copies))
    try:  # kinds first: a pipeline built for one stage may not apply at another (e.g. a 1x1 map)
        check_text(print_block(candidate))
    except KDError as err:
        raise KDError(f"term `{names[pick]}` does not apply at every layer: {err.message}",
                      hint=err.hint) from None
    losses = term_losses(block, [chosen, *copies], teacher, student, x, y, teacher_name=teacher_name,
                         student_name=student_name)
    original, per_layer = losses[0], losses[1:]
    bad = [layer for layer, v in zip(layers, per_layer) if not (math.isfinite(v) and v > 0)]
    if bad or not (math.isfinite(original) and original > 0):
        raise KDError(f"term `{names[pick]}` has a zero or non-finite loss on the batch at "
                      f"{', '.join(bad) or 'its own tap'}; no training-free weight can be set")
    weighted = [_weighted(c, original / (len(layers) * v)) for c, v in zip(copies, per_layer)]
    terms = block.terms[:pick] + tuple(weighted) + block.terms[pick + 1:]
    comments = (f"# `{names[pick]}` ({tap.student.path}) expanded over {', '.join(layers)}, weighted from one batch:",
                f"# unweighted loss {original:.4g} at {tap.student.path}"
                + (" against teacher1; per copy " if teachers else "; per layer ")
                + ", ".join(f"{v:.4g}" for v in per_layer) + ".")
    out = dataclasses.replace(block, terms=terms, comments=(*block.comments, *comments))
    out = check_text(print_block(out)).blocks[0]
    return out, {"term": names[pick], "original": original, "layers": dict(zip(layers, per_layer)),
                 "teachers": teachers}
