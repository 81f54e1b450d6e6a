"""Models from outside the CIFAR zoo: ``timm:NAME`` and user factories ``package.module:factory``.

Both get the attributes every model handed out by :func:`autokd_dsl.models.create_model` carries:
``kd_aliases`` (alias -> tap spec) and ``kd_family`` (``"timm"`` / ``"user"``).

Aliases of a timm model:

* CNNs (anything with ``feature_info``): the modules named by ``model.feature_info``. Leading
  entries at reduction <= 2 are the stem (the last of them becomes ``stem``); the remaining entries
  become ``stage1`` .. ``stageN`` (for ``resnet18``: ``stem`` = ``act1``, ``stage1..4`` =
  ``layer1..4``), so ``stageN`` is always the deepest feature map, as in the CIFAR zoo.
* ViT-like models (``patch_embed`` + ``blocks``): ``stem`` = ``patch_embed``, ``block1..blockN`` =
  ``blocks.0..blocks.{N-1}``, ``stage1..stage4`` = the blocks ending the four quarters of the depth
  (``blocks.2/5/8/11`` for 12 blocks). Their outputs are token tensors (batch, tokens, dim).
* Always, when a classifier exists: ``logits`` = the path of ``model.get_classifier()`` and
  ``embedding`` = that path + ``:in``.

Nothing is ever downloaded: timm models are built with ``pretrained=False``.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from torch import nn

from autokd_dsl.errors import KDError, did_you_mean

__all__ = ["create_timm_model", "create_user_model", "timm_aliases", "module_path", "linear_head_aliases"]


# --------------------------------------------------------------------------------------------------- helpers


def module_path(model: nn.Module, target: nn.Module) -> str | None:
    """The dotted path of ``target`` inside ``model`` (None when absent or when it is ``model`` itself)."""
    for name, module in model.named_modules():
        if module is target and name:
            return name
    return None


def linear_head_aliases(model: nn.Module) -> dict[str, str]:
    """``logits`` / ``embedding`` for the last ``nn.Linear`` registered in ``model``, if there is one."""
    last = None
    for name, module in model.named_modules():
        if name and isinstance(module, nn.Linear):
            last = name
    return {"logits": last, "embedding": f"{last}:in"} if last else {}


# --------------------------------------------------------------------------------------------------- timm


def _classifier_path(model: nn.Module) -> str | None:
    get = getattr(model, "get_classifier", None)
    if not callable(get):
        return None
    try:
        clf = get()
    except Exception:  # noqa: BLE001 - a model without a usable classifier simply gets no head aliases
        return None
    if isinstance(clf, (tuple, list)):  # distilled DeiT: (head, head_dist)
        clf = clf[0] if clf else None
    if not isinstance(clf, nn.Module):
        return None
    return module_path(model, clf)


def _feature_entries(model: nn.Module) -> list[dict[str, Any]]:
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    if hasattr(info, "get_dicts"):  # timm.models.FeatureInfo (features_only models)
        info = info.get_dicts()
    entries = []
    for entry in info:
        if isinstance(entry, dict) and isinstance(entry.get("module"), str) and entry["module"]:
            entries.append(entry)
    return entries


def timm_aliases(model: nn.Module) -> dict[str, str]:
    """Architecture-neutral aliases for a timm model (see the module docstring)."""
    modules = dict(model.named_modules())
    aliases: dict[str, str] = {}
    blocks = getattr(model, "blocks", None)
    if hasattr(model, "patch_embed") and isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
        aliases["stem"] = "patch_embed"
        depth = len(blocks)
        for i in range(depth):
            aliases[f"block{i + 1}"] = f"blocks.{i}"
        for k in range(1, 5):
            aliases[f"stage{k}"] = f"blocks.{max(math.ceil(depth * k / 4) - 1, 0)}"
    else:
        entries = [e for e in _feature_entries(model) if e["module"] in modules]
        stem_count = 0
        while stem_count < len(entries) - 1 and entries[stem_count].get("reduction", 4) <= 2:
            stem_count += 1
        if stem_count:
            aliases["stem"] = entries[stem_count - 1]["module"]
        for k, entry in enumerate(entries[stem_count:], start=1):
            aliases[f"stage{k}"] = entry["module"]
    head = _classifier_path(model)
    if head:
        aliases["logits"] = head
        aliases["embedding"] = f"{head}:in"
    return aliases


def create_timm_model(name: str, num_classes: int, in_chans: int) -> nn.Module:
    """``timm.create_model(name, pretrained=False, ...)`` with user mistakes turned into :class:`KDError`."""
    spec = f"timm:{name}"
    if not name:
        raise KDError("empty timm model name in `timm:`", hint="write `timm:NAME`, e.g. `timm:resnet18`")
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - timm is a dependency
        raise KDError(f"cannot create `{spec}`: timm is not installed", hint="pip install timm") from exc
    if not timm.is_model(name):
        hint = did_you_mean(name, timm.list_models())
        hint = f"{hint} " if hint else ""
        raise KDError(
            f"unknown timm model `{name}`",
            hint=hint + "run `python -c \"import timm; print(timm.list_models())\"` to list them",
        )
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    except (RuntimeError, TypeError, ValueError, KeyError, AssertionError) as exc:
        raise KDError(f"cannot create timm model `{name}`: {exc}") from exc
    model.kd_aliases = timm_aliases(model)
    model.kd_family = "timm"
    model.kd_name = spec
    return model


# --------------------------------------------------------------------------------------------------- user


@contextmanager
def _failure_reported(what: str, explained: tuple[type[BaseException], ...] = ()):
    """Whatever a user's code raises inside (but Ctrl-C, a KDError, and the ``explained`` errors, which the
    caller explains) becomes a KDError ``what: Type: message``."""
    try:
        yield
    except (KDError, KeyboardInterrupt, *explained):
        raise
    except BaseException as exc:
        raise KDError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _ensure_cwd_importable() -> None:
    cwd = os.getcwd()
    entries = {os.path.abspath(p or os.curdir) for p in sys.path}
    if cwd not in entries:
        sys.path.append(cwd)
    importlib.invalidate_caches()


def _call_factory(factory: Callable[..., Any], num_classes: int, in_chans: int) -> Any:
    attempts: list[dict[str, int]] = [
        {"num_classes": num_classes, "in_chans": in_chans},
        {"num_classes": num_classes},
        {},
    ]
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        for kwargs in attempts:
            try:
                sig.bind(**kwargs)
            except TypeError:
                continue
            return factory(**kwargs)
        # no form binds: let the last call raise its own TypeError
        return factory()
    last: TypeError | None = None
    for kwargs in attempts:
        try:
            return factory(**kwargs)
        except TypeError as exc:
            last = exc
    assert last is not None
    raise last


def create_user_model(spec: str, num_classes: int, in_chans: int) -> nn.Module:
    """Import ``package.module`` and call its ``factory`` (see :func:`autokd_dsl.models.create_model`)."""
    module_name, _, factory_name = spec.partition(":")
    module_name, factory_name = module_name.strip(), factory_name.strip()
    form_hint = "write a user model as `package.module:factory`"
    if not module_name or not factory_name or ":" in factory_name:
        raise KDError(f"malformed model name `{spec}`", hint=form_hint)
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise KDError(f"malformed module name `{module_name}` in `{spec}`", hint=form_hint)
    if not all(part.isidentifier() for part in factory_name.split(".")):
        raise KDError(f"malformed factory name `{factory_name}` in `{spec}`", hint=form_hint)

    _ensure_cwd_importable()
    try:
        with _failure_reported(f"importing module `{module_name}` failed", (ModuleNotFoundError,)):
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise KDError(
                f"cannot import module `{module_name}` for model `{spec}`",
                hint="the module must be importable from the current directory or PYTHONPATH",
            ) from exc
        raise KDError(f"importing module `{module_name}` failed: no module named `{missing}`") from exc

    factory: Any = module
    for part in factory_name.split("."):
        if not hasattr(factory, part):
            names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
            raise KDError(
                f"module `{module_name}` has no factory `{factory_name}`",
                hint=did_you_mean(factory_name, names),
            )
        factory = getattr(factory, part)
    if not callable(factory):
        raise KDError(f"`{spec}` is not callable (found a {type(factory).__name__})")

    with _failure_reported(f"model factory `{spec}` failed"):
        model = _call_factory(factory, num_classes, in_chans)
    if not isinstance(model, nn.Module):
        raise KDError(
            f"model factory `{spec}` returned a {type(model).__name__}, not a torch.nn.Module",
            hint="the factory must return the model (an nn.Module instance)",
        )

    aliases = dict(getattr(model, "kd_aliases", None) or {})
    for key, value in linear_head_aliases(model).items():
        aliases.setdefault(key, value)
    model.kd_aliases = aliases
    model.kd_family = "user"
    model.kd_name = spec
    return model
