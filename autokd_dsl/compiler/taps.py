"""Resolve the taps of a distiller on real models, and measure their shapes with a dry run.

>>> from autokd_dsl.models import create_model
>>> from autokd_dsl.lang import ir
>>> model = create_model("resnet8", num_classes=10)
>>> resolve_point(model, ir.Point("stage3"), "resnet8")
'layer3'
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import KDError, did_you_mean
from ..lang import ir
from ..lang.kinds import Kind
from ..lang.printer import print_point
from ..standalone.attach import TapCapture, parse_spec


def aliases(model: nn.Module) -> dict[str, str]:
    return dict(getattr(model, "kd_aliases", {}) or {})


def _hint(model_name: str) -> str:
    return f"run `autokd-dsl layers {model_name}` to list the tap points"


def resolve_point(model: nn.Module, point: ir.Point, model_name: str) -> str:
    """The tap spec (``path[:in][@N]``) a point names on ``model``; a located KDError when it names nothing."""
    names = aliases(model)
    modules = dict(model.named_modules())
    if point.path in names and point.io == "out" and point.call is None:
        return names[point.path]
    if point.path in names:
        path, io, call = parse_spec(names[point.path])
        if point.io == "in" or point.call is not None:
            raise KDError(f"`{point.path}` is an alias; `:in` and `@N` apply to module paths", span=point.span,
                          hint=f"on {model_name}, `{point.path}` is `{names[point.path]}`")
    if point.path not in modules or point.path == "":
        hint = did_you_mean(point.path, list(names) + [n for n in modules if n])
        raise KDError(f"`{point.path}` is not a tap point of {model_name}", span=point.span,
                      hint=f"{hint} {_hint(model_name)}" if hint else _hint(model_name))
    spec = point.path + (":in" if point.io == "in" else "")
    return spec + (f"@{point.call}" if point.call is not None else "")


@dataclass
class Model:
    """A network being distilled, its display name, and the taps a distiller reads from it."""

    net: nn.Module
    name: str
    taps: dict[str, str] = field(default_factory=dict)  # graph input name → tap spec

    def tap_name(self, point: ir.Point, prefix: str) -> str:
        """The graph input that carries ``point`` (one per distinct spec), registered on first use.

        >>> from autokd_dsl.models import create_model
        >>> m = Model(create_model("resnet8", num_classes=10), "resnet8")
        >>> m.tap_name(ir.Point("stage3"), "s"), m.tap_name(ir.Point("layer3"), "s"), m.taps
        ('s_stage3', 's_stage3', {'s_stage3': 'layer3'})
        """
        spec = resolve_point(self.net, point, self.name)
        for name, known in self.taps.items():
            if known == spec:
                return name
        suffix = ("_in" if point.io == "in" else "") + (f"{point.call}" if point.call else "")
        base = f"{prefix}_{ident(point.path + suffix)}"
        name, k = base, 2
        while name in self.taps:
            name, k = f"{base}_{k}", k + 1
        self.taps[name] = spec
        return name


def collect_taps(block: ir.Block, teacher: Model | list[Model], student: Model) -> None:
    """Name every tap of ``block`` on both networks, in the order the terms read them. With several teachers
    (a list), each teacher's inputs are named `t1_…`, `t2_…` and hold the taps that name it (`teachers.x`: all)."""
    teachers = teacher if isinstance(teacher, list) else [teacher]
    prefix = ["t"] if len(teachers) == 1 else [f"t{k}" for k in range(1, len(teachers) + 1)]
    for term in block.terms:
        for tap in term.taps:
            student.tap_name(tap.student, "s")
            if tap.teacher_point.is_labels:
                continue
            numbers = range(1, len(teachers) + 1) if tap.each_teacher else [tap.teacher_point.teacher_number or 1]
            for k in numbers:
                teachers[k - 1].tap_name(tap.teacher_point, prefix[k - 1])
        if any(isinstance(e, ir.Call) and e.op == "confidence" for e in ir.walk(term.weight)):
            for model, name in zip(teachers, prefix):  # CA-MKD's weights read every teacher's logits
                model.tap_name(ir.Point("logits"), name)


def base_kind(model: Model, point: ir.Point, example: torch.Tensor) -> Kind:
    """The kind of a tap from its example: a map (N,C,H,W), tokens (N,L,D), or logits / a vector (N,D)."""
    if example.dim() == 4:
        return Kind("map")
    if example.dim() == 3:
        return Kind("tokens")
    if example.dim() == 2:
        logits_spec = aliases(model.net).get("logits")
        spec = resolve_point(model.net, point, model.name)
        return Kind("logits") if point.path == "logits" or spec == logits_spec else Kind("vector")
    raise KDError(f"tap `{print_point(point)}` of {model.name} has shape {tuple(example.shape)}; "
                  "taps must be maps, tokens or vectors", span=point.span)


def ident(text: str) -> str:
    """``text`` as a Python identifier (runs of other characters become ``_``)."""
    return re.sub(r"\W+", "_", text).strip("_") or "x"


class TapNotReached(KDError):
    """A tap point whose module never ran (or ran fewer times than its `@N`); ``spec`` names it."""

    def __init__(self, message: str, *, spec: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.spec = spec


def example_input(input_size: tuple[int, int, int], batch: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *input_size), generator=generator)


def probe(model: nn.Module, taps: dict[str, str], x: torch.Tensor, model_name: str) -> dict[str, torch.Tensor]:
    """Run ``model`` once on ``x`` (eval mode, no grad) and return the tapped tensors by name."""
    capture = TapCapture(model, taps, detach=True)
    first = next(model.parameters(), None)
    x = x.to(first.device) if first is not None else x
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    except Exception as err:  # a user model that cannot run at this input size
        raise KDError(f"{model_name} does not run on inputs of shape {tuple(x.shape[1:])}: {err}",
                      hint="pass the input size the model expects with --input-size") from None
    finally:
        model.train(was_training)
        capture.remove()
    missing = [spec for name, spec in taps.items() if name not in capture.values]
    if missing:
        path, _, call = parse_spec(missing[0])
        raise TapNotReached(f"`{missing[0]}` was not reached in a forward pass of {model_name}",
                            hint=f"the module runs fewer than {call} time(s); {_hint(model_name)}", spec=missing[0])
    bad = {n: v for n, v in capture.values.items() if not isinstance(v, torch.Tensor)}
    if bad:
        raise KDError(f"tap `{taps[next(iter(bad))]}` of {model_name} is not a single tensor",
                      hint=_hint(model_name))
    return capture.values


_EXAMPLES: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def probe_examples(model: nn.Module, taps: dict[str, str], x: torch.Tensor, model_name: str) -> dict[str, torch.Tensor]:
    """:func:`probe`, remembering every tap's example per model and input shape, so that compiling many
    distillers for the same networks (a library, a search) runs each network once per new tap point. Examples
    only give shapes and kinds, which do not change as the weights train."""
    key = (tuple(x.shape), sum(1 for _ in model.modules()))
    seen = _EXAMPLES.setdefault(model, {}).setdefault(key, {})
    missing = {name: spec for name, spec in taps.items() if spec not in seen}
    if missing:
        extra = {f"_alias_{a}": spec for a, spec in aliases(model).items() if spec not in seen}
        try:  # the aliases ride along: the next distiller most likely taps them
            got = probe(model, {**extra, **missing}, x, model_name)
        except KDError:
            got = probe(model, missing, x, model_name)
        seen.update({({**extra, **missing})[name]: value for name, value in got.items()})
    return {name: seen[spec] for name, spec in taps.items()}


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    shape: tuple[int, ...] | None
    calls: int
    aliases: tuple[str, ...]


def list_layers(model: nn.Module, input_size: tuple[int, int, int]) -> list[LayerInfo]:
    """Every module of ``model`` with its output shape (first call) and call count, and the aliases naming it."""
    shapes: dict[str, tuple] = {}
    calls: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        def hook(mod, inputs, output, name=name):
            calls[name] = calls.get(name, 0) + 1
            if name not in shapes and isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape[1:])

        if name:
            handles.append(module.register_forward_hook(hook))
    try:
        probe(model, {}, example_input(input_size, batch=2), getattr(model, "kd_name", "model"))
    finally:
        for h in handles:
            h.remove()
    by_path: dict[str, list[str]] = {}
    for alias, spec in aliases(model).items():
        by_path.setdefault(spec, []).append(alias)
    rows = []
    for name, module in model.named_modules():
        if not name:
            continue
        tagged = tuple(sorted(a for spec, names in by_path.items() if parse_spec(spec)[0] == name for a in names))
        rows.append(LayerInfo(name, type(module).__name__, shapes.get(name), calls.get(name, 0), tagged))
    return rows
