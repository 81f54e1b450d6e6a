"""Build the modules behind learnable, stateful and teacher-reading ops, sized from the real shapes.

An op whose `Impl` is a module names one builder here (its own name by default). The lowering calls it with a
:class:`~autokd_dsl.compiler.bindings.Site` (the value it applies to, the other side's value at the same point, the
tap, the teacher) and the op's parameters as keywords. Every module is a
:class:`~autokd_dsl.standalone.connectors.Part`: it keeps its constructor arguments in ``args``, so a compiled file
rebuilds it, and a module that reads the teacher (OFD's margins, SRRL's classifier) records *where* in the teacher it
reads and copies the values in ``copy_from_teacher`` — at compile time here, and again when the loss is attached.

>>> from autokd_dsl.models import create_model
>>> net = create_model("resnet8", num_classes=10)
>>> bn_feeding(net, "layer2.0.relu:in@2", torch.randn(2, 3, 16, 16))
'layer2.0.bn2'
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from ..errors import KDError
from ..standalone import connectors as cn
from ..standalone.attach import parse_spec
from .taps import resolve_point


def _shape(v) -> tuple[int, ...]:
    return tuple(v.example.shape[1:])


def _text(shape: tuple) -> str:
    return "×".join(str(d) for d in shape) or "scalar"


def _same_form(site, what: str) -> tuple[tuple, tuple]:
    s, t = _shape(site.value), _shape(site.other)
    if len(s) != len(t) or len(s) not in (1, 3):
        raise KDError(f"`{site.call.op}` maps {what}; here the student gives {_text(s)} and the teacher {_text(t)}",
                      span=site.call.span, hint="tap points of the same kind on both networks, or use `adapt`")
    return s, t


def _fitting_connector(site) -> cn.Connector:
    s, t = _shape(site.value), _shape(site.other)
    if not cn.connector_fits(s, t):
        raise KDError(f"no connector maps the student's {_text(s)} onto the teacher's {_text(t)}",
                      span=site.call.span, hint="adapt maps maps, tokens and vectors onto maps, tokens or vectors")
    return cn.Connector(s, t)


# ---- one builder per module-backed op (named by its `Impl`), taking the op's parameters as keywords ----------


def adapt(site) -> nn.Module:
    return _fitting_connector(site)


def align(site) -> nn.Module:
    s, t = _shape(site.value), _shape(site.other)
    if s != t:
        _fitting_connector(site)
    return cn.Align(s, t)


def regress(site) -> nn.Module:
    return cn.Regressor(*_same_form(site, "a map onto a map or a vector onto a vector"))


def mlp(site) -> nn.Module:
    return cn.MLP(*_same_form(site, "a map onto a map or a vector onto a vector"))


def generate(site) -> nn.Module:
    s, t = _shape(site.value), _shape(site.other)
    if len(s) != 3 or len(t) != 3:
        raise KDError(f"`generate` maps a feature map onto the teacher's feature map, not {_text(s)} onto "
                      f"{_text(t)}", span=site.call.span)
    return cn.Generator(s, t)


def project(site, dim) -> nn.Module:
    return cn.Project(int(site.value.example[0].numel()), int(dim))


def review(site) -> nn.Module:
    """ReviewKD's fusion across the term's taps (``site.value`` / ``site.other``: one value per tap)."""
    return cn.ReviewFusion([_shape(v) for v in site.value], [_shape(v) for v in site.other])


def margin(site) -> nn.Module:
    teacher, x = site.teacher, site.x
    spec = resolve_point(teacher.net, site.tap.teacher_point, teacher.name)
    channels = site.value.example.shape[1]
    key = (tuple(x.shape), sum(1 for _ in teacher.net.modules()))
    events = _EVENTS.setdefault(teacher.net, {})
    if key not in events:  # one recorded pass serves every margin (of every distiller compiled for it)
        events[key] = forward_events(teacher.net, x)
    path = bn_feeding(teacher.net, spec, x, events[key])
    bn = dict(teacher.net.named_modules()).get(path) if path else None
    if bn is None or bn.num_features != channels or not bn.affine:
        raise KDError(f"`margin` needs a BatchNorm with {channels} channels before `{spec}` in {teacher.name}; "
                      f"{'the last one there is `' + path + '`' if path else 'there is none'}", span=site.call.span,
                      hint="OFD's margins come from the BatchNorm just before a ReLU: tap a pre-activation "
                           "such as `stage3_pre`")
    module = cn.TeacherMargin(path, channels)
    module.copy_from_teacher(teacher.net)
    return module


_EVENTS: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def teacher_head(site) -> nn.Module:
    teacher, v = site.teacher, site.value
    spec = getattr(teacher.net, "kd_aliases", {}).get("logits")
    path, linear = _last_linear(teacher.net, parse_spec(spec)[0] if spec else None)
    if linear is None:
        raise KDError(f"`teacher_head` needs the teacher's classifier; {teacher.name} names none (alias `logits`)",
                      span=site.call.span)
    if v.example.dim() != 2 or v.example.shape[1] != linear.in_features:
        raise KDError(f"`teacher_head` takes features of the teacher classifier's width {linear.in_features}; this "
                      f"value is {_text(_shape(v))}", span=site.call.span,
                      hint="map the student's feature onto the teacher's first: `-> regress -> teacher_head`")
    module = cn.TeacherHead(path, linear.in_features, linear.out_features)
    module.copy_from_teacher(teacher.net)
    return module


def gaussian_nll(site, init_var) -> nn.Module:
    return cn.GaussianNLL(site.other.example.shape[1], float(init_var))


def crd(site, n_data, k, t, momentum) -> nn.Module:
    return cn.ContrastMemory(int(n_data), site.value.example.shape[1], int(k), float(t), float(momentum))


# ---- reading the teacher ------------------------------------------------------------------------------------


def _last_linear(net: nn.Module, path: str | None) -> tuple[str, nn.Linear | None]:
    """The linear layer at ``path``, or the last one inside it (a classifier wrapped in a Sequential)."""
    modules = dict(net.named_modules())
    if path is None or path not in modules:
        return "", None
    found = [(path, modules[path])] if isinstance(modules[path], nn.Linear) else []
    found += [(f"{path}.{n}", m) for n, m in modules[path].named_modules() if n and isinstance(m, nn.Linear)]
    return found[-1] if found else ("", None)


def bn_feeding(net: nn.Module, spec: str, x: torch.Tensor, events: list | None = None) -> str | None:
    """The BatchNorm that ran last before the tapped point ``spec`` was reached in a forward pass of ``x``
    (``events``: a recorded :func:`forward_events` of that pass, to spare running it again)."""
    path, io, call = parse_spec(spec)
    last, seen = None, 0
    for when, name, is_bn in events if events is not None else forward_events(net, x):
        if (when, name) == (io, path):
            seen += 1
            if seen == call:
                return last
        if when == "out" and is_bn:
            last = name
    return None


def forward_events(net: nn.Module, x: torch.Tensor) -> list[tuple[str, str, bool]]:
    """Every module's start ("in") and end ("out") in one forward pass, in order, and whether it is a BatchNorm."""
    events: list[tuple[str, str, bool]] = []
    handles = []
    for name, module in net.named_modules():
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
        handles.append(module.register_forward_pre_hook(lambda *_, n=name, b=is_bn: events.append(("in", n, b))))
        handles.append(module.register_forward_hook(lambda *_, n=name, b=is_bn: events.append(("out", n, b))))
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(x)
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return events
