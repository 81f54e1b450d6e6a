"""The model zoo: RepDistiller's CIFAR models, timm models and user factories.

``create_model(name)`` accepts three kinds of names:

* a zoo name (``list_models()``): ``resnet8/14/20/32/44/56/110``, ``resnet8x4``, ``resnet32x4``,
  ``wrn_16_1/16_2/40_1/40_2``, ``vgg8/11/13/16/19`` (with BN), ``mobilenetv2`` (= ``mobile_half``,
  width 0.5), ``shufflev1``, ``shufflev2``; architectures and parameter names follow RepDistiller
  (Tian et al., "Contrastive Representation Distillation", ICLR 2020), with adaptive pooling so
  that 32x32, 16x16 and 8x8 inputs all work;
* ``timm:NAME``: a randomly initialised timm model (never downloads weights);
* ``package.module:factory``: a user factory, called as ``factory(num_classes=, in_chans=)``
  (or with fewer arguments when its signature takes fewer).

Every model returned carries ``kd_aliases`` (architecture-neutral alias -> tap spec),
``kd_family`` (``"cifar"``, ``"timm"`` or ``"user"``) and ``kd_name``. A tap spec is
``dotted.module.path[:in|:out][@N]`` (``:out`` by default; ``@N`` = the N-th call, 1-based, of a
module run several times per forward). Zoo models define ``stem``, ``stage1..stageN``,
``stage1_pre..stageN_pre``, ``embedding`` and ``logits``; the stage count is 3 for ResNets, WRNs
and ShuffleNets and 4 for VGG and MobileNetV2 (see each family's module docstring).
Every user mistake raises :class:`autokd_dsl.errors.KDError`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

from torch import nn

from autokd_dsl.errors import KDError, did_you_mean
from autokd_dsl.models.external import create_timm_model, create_user_model
from autokd_dsl.models.mobilenetv2 import build_mobilenetv2
from autokd_dsl.models.resnet import RESNET_CONFIGS, build_resnet
from autokd_dsl.models.shufflenetv1 import build_shufflev1
from autokd_dsl.models.shufflenetv2 import build_shufflev2
from autokd_dsl.models.vgg import VGG_CONFIGS, build_vgg
from autokd_dsl.models.wrn import WRN_CONFIGS, build_wrn

__all__ = ["create_model", "list_models", "describe_model", "model_family", "count_parameters", "ZOO"]

_Builder = Callable[..., nn.Module]

#: zoo name -> (family description, builder(name, num_classes=, in_chans=))
ZOO: dict[str, tuple[str, _Builder]] = {}
for _name in RESNET_CONFIGS:
    ZOO[_name] = ("CIFAR ResNet, 3 stages", build_resnet)
for _name in WRN_CONFIGS:
    ZOO[_name] = ("Wide ResNet, 3 stages", build_wrn)
for _name in VGG_CONFIGS:
    ZOO[_name] = ("VGG-BN, 4 stages", build_vgg)
ZOO["mobilenetv2"] = ("MobileNetV2 x0.5, 4 stages", build_mobilenetv2)
ZOO["mobile_half"] = ("MobileNetV2 x0.5, 4 stages", build_mobilenetv2)
ZOO["shufflev1"] = ("ShuffleNetV1 g3, 3 stages", build_shufflev1)
ZOO["shufflev2"] = ("ShuffleNetV2 1.0x, 3 stages", build_shufflev2)
del _name

_LIST_HINT = "run `autokd-dsl models` to list them"


def list_models() -> list[str]:
    """The zoo names, sorted (``timm:NAME`` and ``package.module:factory`` are accepted as well)."""
    return sorted(ZOO)


def model_family(name: str) -> str:
    """``"cifar"``, ``"timm"`` or ``"user"`` for a model name (without building it)."""
    name = name.strip()
    if name.lower().startswith("timm:"):
        return "timm"
    if ":" in name:
        return "user"
    return "cifar"


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise KDError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def create_model(name: str, num_classes: int = 100, in_chans: int = 3) -> nn.Module:
    """Build the model called ``name`` (see the module docstring) with random weights."""
    if not isinstance(name, str) or not name.strip():
        raise KDError("empty model name", hint=_LIST_HINT)
    num_classes = _check_int(num_classes, "num_classes")
    in_chans = _check_int(in_chans, "in_chans")
    name = name.strip()
    family = model_family(name)
    if family == "timm":
        return create_timm_model(name[len("timm:"):].strip(), num_classes, in_chans)
    if family == "user":
        return create_user_model(name, num_classes, in_chans)

    key = name if name in ZOO else name.lower()
    if key not in ZOO:
        hint = did_you_mean(name, ZOO)
        if _is_timm_model(name):  # e.g. `resnet18`: a timm model written without its prefix
            hint = f"did you mean `timm:{name}`?"
        raise KDError(f"unknown model `{name}`", hint=f"{hint} {_LIST_HINT}" if hint else _LIST_HINT)
    _, builder = ZOO[key]
    model = builder(key, num_classes=num_classes, in_chans=in_chans)
    model.kd_family = "cifar"
    model.kd_name = key
    return model


def _is_timm_model(name: str) -> bool:
    try:
        import timm
    except ImportError:  # pragma: no cover
        return False
    return bool(timm.is_model(name))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe_model(name: str, num_classes: int = 100, in_chans: int = 3) -> str:
    """One line: name, family and parameter count, e.g. ``resnet56: CIFAR ResNet, 3 stages, 0.86M params``."""
    model = create_model(name, num_classes=num_classes, in_chans=in_chans)
    family = model.kd_family
    if family == "cifar":
        what = ZOO[model.kd_name][0]
    elif family == "timm":
        what = f"timm {type(model).__name__}"
    else:
        what = f"user {type(model).__name__}"
    return f"{model.kd_name}: {what}, {count_parameters(model) / 1e6:.2f}M params"
