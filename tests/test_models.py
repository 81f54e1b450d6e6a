"""Tests of the model zoo (autokd_dsl.models): sizes, shapes, aliases, timm and user models, errors."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re
import sys
import textwrap
import uuid

import pytest
import torch
from torch import nn

from autokd_dsl.errors import KDError
from autokd_dsl.models import (
    count_parameters,
    create_model,
    describe_model,
    list_models,
)

ZOO = list_models()

# Parameter counts at num_classes=100, in millions.
# Published in RepDistiller (Tian et al., ICLR 2020, CIFAR-100 tables) and reproduced exactly by these
# definitions: resnet8 0.08, resnet20 0.28, resnet32 0.47, resnet44 0.67, resnet56 0.86, resnet110 1.74,
# resnet8x4 1.23, resnet32x4 7.43, wrn_16_2 0.70, wrn_40_1 0.57, wrn_40_2 2.26, vgg8 3.96 (3,965,028),
# vgg13 9.46, mobilenetv2 / mobile_half 0.81, shufflev1 0.95, shufflev2 1.36.
# Not in the published tables, derived from the architecture definitions (counted by hand for the
# ResNet/WRN/VGG formulas: convs + BN affine + fc): resnet14 0.18 (181,108), wrn_16_1 0.18,
# vgg11 9.28, vgg16 14.77, vgg19 20.09.
PARAMS_M = {
    "resnet8": 0.08,
    "resnet14": 0.18,
    "resnet20": 0.28,
    "resnet32": 0.47,
    "resnet44": 0.67,
    "resnet56": 0.86,
    "resnet110": 1.74,
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_16_1": 0.18,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "wrn_40_2": 2.26,
    "vgg8": 3.96,
    "vgg11": 9.28,
    "vgg13": 9.46,
    "vgg16": 14.77,
    "vgg19": 20.09,
    "mobilenetv2": 0.81,
    "mobile_half": 0.81,
    "shufflev1": 0.95,
    "shufflev2": 1.36,
}

STAGES = {"resnet": 3, "wrn": 3, "vgg": 4, "mobile": 4, "shufflev": 3}

SPEC = re.compile(r"(?P<path>\w+(?:\.\w+)*)(?::(?P<side>in|out))?(?:@(?P<n>[1-9][0-9]*))?")


def parse_spec(spec: str) -> tuple[str, str, int]:
    m = SPEC.fullmatch(spec)
    assert m, f"malformed tap spec {spec!r}"
    return m["path"], m["side"] or "out", int(m["n"] or 1)


def tap_all(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run one forward and return the tensor every alias of ``model`` names."""
    modules = dict(model.named_modules())
    calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    handles = []
    for path in {parse_spec(s)[0] for s in model.kd_aliases.values()}:
        assert path in modules, f"{type(model).__name__}: no module {path!r}"
        calls[path] = []

        def hook(mod, inputs, output, _path=path):
            calls[_path].append((inputs[0] if inputs else None, output))

        handles.append(modules[path].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    taps = {}
    for alias, spec in model.kd_aliases.items():
        path, side, n = parse_spec(spec)
        assert len(calls[path]) >= n, f"{alias} = {spec}: module ran {len(calls[path])} time(s)"
        taps[alias] = calls[path][n - 1][0 if side == "in" else 1]
    return taps


def expected_rank(alias: str) -> int:
    return 2 if alias in ("embedding", "logits") else 4


def test_list_models_is_the_repdistiller_zoo():
    assert set(ZOO) == set(PARAMS_M)


@pytest.mark.parametrize("name", sorted(PARAMS_M))
def test_parameter_counts(name):
    got = count_parameters(create_model(name, num_classes=100)) / 1e6
    # the published figures are rounded to 0.01M
    assert got == pytest.approx(PARAMS_M[name], rel=0.01, abs=0.006), f"{name}: {got:.3f}M"


@pytest.mark.parametrize("name", ZOO)
def test_zoo_forward_and_aliases(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    assert model.kd_family == "cifar"
    stages = next(v for k, v in STAGES.items() if name.startswith(k))
    expected = {"stem", "embedding", "logits"}
    expected |= {f"stage{k}" for k in range(1, stages + 1)} | {f"stage{k}_pre" for k in range(1, stages + 1)}
    assert set(model.kd_aliases) == expected

    x = torch.randn(2, 3, 32, 32)
    taps = tap_all(model, x)
    with torch.no_grad():
        logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 10)
    for alias, t in taps.items():
        assert isinstance(t, torch.Tensor) and t.dim() == expected_rank(alias), alias
    assert torch.equal(taps["logits"], logits)
    assert taps["embedding"].shape[0] == 2
    prev = 33
    for k in range(1, stages + 1):
        post, pre = taps[f"stage{k}"], taps[f"stage{k}_pre"]
        assert post.shape == pre.shape
        assert post.shape[-1] <= prev
        prev = post.shape[-1]
        if not name.startswith("mobile"):  # MobileNetV2 stages end in a linear bottleneck
            assert torch.equal(post, torch.relu(pre)), f"stage{k} != relu(stage{k}_pre)"

    # other input sizes and channel counts
    gray = create_model(name, num_classes=7, in_chans=1).eval()
    with torch.no_grad():
        assert gray(torch.randn(2, 1, 16, 16)).shape == (2, 7)
        assert gray(torch.randn(2, 1, 8, 8)).shape == (2, 7)
    assert all(t.dim() == expected_rank(a) for a, t in tap_all(gray, torch.randn(2, 1, 16, 16)).items())


def test_repdistiller_parameter_names():
    names = {
        "resnet8": ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "fc.weight"],
        "resnet32x4": ["layer1.0.downsample.1.running_mean", "layer3.4.bn2.bias"],
        "wrn_40_2": [
            "conv1.weight",
            "block1.layer.0.bn1.weight",
            "block2.layer.0.convShortcut.weight",
            "bn1.weight",
            "fc.bias",
        ],
        "vgg8": ["block0.0.weight", "block0.1.weight", "block4.1.running_var", "classifier.weight"],
        "vgg13": ["block1.3.weight", "block1.4.bias"],
        "mobile_half": [
            "conv1.0.weight",
            "blocks.0.0.conv.0.weight",
            "blocks.6.0.conv.7.weight",
            "conv2.0.weight",
            "classifier.0.weight",
        ],
        "shufflev1": ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer3.3.bn3.weight", "linear.weight"],
        "shufflev2": ["layer1.0.conv5.weight", "layer1.3.conv3.weight", "conv2.weight", "bn2.weight", "linear.weight"],
    }
    for model_name, keys in names.items():
        state = create_model(model_name).state_dict()
        for key in keys:
            assert key in state, f"{model_name}: missing {key}"


def test_in_chans_sets_first_conv():
    assert create_model("resnet8", in_chans=1).conv1.weight.shape[1] == 1
    assert create_model("vgg8", in_chans=4).block0[0].weight.shape[1] == 4
    assert create_model("mobilenetv2", in_chans=1).conv1[0].weight.shape[1] == 1
    assert create_model("wrn_16_1", in_chans=2).conv1.weight.shape[1] == 2


def test_shufflev2_block_matches_repdistiller_formulation():
    from autokd_dsl.models.shufflenetv2 import BasicBlock

    torch.manual_seed(0)
    block = BasicBlock(8).eval()
    x = torch.relu(torch.randn(2, 8, 5, 5))  # block inputs are always ReLU outputs
    with torch.no_grad():
        x1, x2 = x[:, :4], x[:, 4:]
        b = block.bn3(block.conv3(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x2)))))))
        reference = block.shuffle(torch.cat([x1, torch.relu(b)], 1))
        assert torch.allclose(block(x), reference)


def test_resnet_pre_activation_uses_second_relu_call():
    model = create_model("resnet56")
    assert model.kd_aliases["stage3_pre"] == "layer3.8.relu:in@2"


# ------------------------------------------------------------------------------------------------- timm


def test_timm_resnet18():
    model = create_model("timm:resnet18", num_classes=10, in_chans=3).eval()
    assert model.kd_family == "timm"
    aliases = model.kd_aliases
    assert aliases["logits"] == "fc" and aliases["embedding"] == "fc:in"
    assert aliases["stem"] == "act1"
    assert [aliases[f"stage{k}"] for k in range(1, 5)] == ["layer1", "layer2", "layer3", "layer4"]
    taps = tap_all(model, torch.randn(1, 3, 64, 64))
    assert taps["logits"].shape == (1, 10) and taps["embedding"].shape == (1, 512)
    assert all(t.dim() == expected_rank(a) for a, t in taps.items())


def test_timm_deit_tiny():
    model = create_model("timm:deit_tiny_patch16_224", num_classes=10, in_chans=3).eval()
    assert model.kd_family == "timm"
    aliases = model.kd_aliases
    assert aliases["logits"] == "head" and aliases["embedding"] == "head:in"
    assert [aliases[f"stage{k}"] for k in range(1, 5)] == ["blocks.2", "blocks.5", "blocks.8", "blocks.11"]
    assert aliases["block1"] == "blocks.0" and aliases["block12"] == "blocks.11"
    taps = tap_all(model, torch.randn(1, 3, 224, 224))
    assert taps["logits"].shape == (1, 10) and taps["embedding"].shape == (1, 192)
    assert taps["stage4"].shape == (1, 197, 192)


def test_timm_unknown_model():
    with pytest.raises(KDError, match="unknown timm model `resnet1800`"):
        create_model("timm:resnet1800")
    with pytest.raises(KDError, match="empty timm model name"):
        create_model("timm:")


# ------------------------------------------------------------------------------------------------- user


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = f"kd_user_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def full(num_classes=10, in_chans=3):
                return nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten(), nn.Linear(4, num_classes))

            def classes_only(num_classes):
                return full(num_classes=num_classes)

            def no_args():
                return full(num_classes=5)

            def with_aliases(num_classes=10, in_chans=3):
                model = full(num_classes, in_chans)
                model.kd_aliases = {"stage1": "1", "logits": "4"}
                return model

            def not_a_module(num_classes=10):
                return 42

            def broken(num_classes=10, in_chans=3):
                raise ValueError("boom")

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for mod in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[mod]


def test_user_factories(user_module):
    model = create_model(f"{user_module}:full", num_classes=6, in_chans=2)
    assert model.kd_family == "user"
    assert model(torch.randn(2, 2, 16, 16)).shape == (2, 6)
    assert model.kd_aliases == {"logits": "4", "embedding": "4:in"}

    assert create_model(f"{user_module}:classes_only", num_classes=6)(torch.randn(1, 3, 8, 8)).shape == (1, 6)
    assert create_model(f"{user_module}:no_args", num_classes=6)(torch.randn(1, 3, 8, 8)).shape == (1, 5)

    model = create_model(f"{user_module}:with_aliases")
    assert model.kd_aliases == {"stage1": "1", "logits": "4", "embedding": "4:in"}
    taps = tap_all(model, torch.randn(2, 3, 8, 8))
    assert taps["stage1"].dim() == 4 and taps["embedding"].shape == (2, 4)


def test_user_errors(user_module):
    with pytest.raises(KDError, match="cannot import module `no_such_module_kd`"):
        create_model("no_such_module_kd:build")
    with pytest.raises(KDError, match=f"module `{user_module}` has no factory `ful`") as err:
        create_model(f"{user_module}:ful")
    assert err.value.hint == "did you mean `full`?"
    with pytest.raises(KDError, match="returned a int, not a torch.nn.Module"):
        create_model(f"{user_module}:not_a_module")
    with pytest.raises(KDError, match="is not callable"):
        create_model(f"{user_module}:NOT_CALLABLE")
    with pytest.raises(KDError, match="failed: ValueError: boom"):
        create_model(f"{user_module}:broken")
    for bad in (":build", f"{user_module}:", "a b:c", "a:b:c"):
        with pytest.raises(KDError, match="malformed"):
            create_model(bad)


def test_zoo_errors():
    with pytest.raises(KDError, match="unknown model `resnet57`") as err:
        create_model("resnet57")
    assert "did you mean `resnet56`?" in err.value.hint
    assert "run `autokd-dsl models` to list them" in err.value.hint
    assert "hint:" in err.value.render()
    for timm_name in ("efficientnet_b0", "resnet18"):
        with pytest.raises(KDError, match=f"unknown model `{timm_name}`") as err:
            create_model(timm_name)
        assert f"did you mean `timm:{timm_name}`?" in err.value.hint
    with pytest.raises(KDError, match="empty model name"):
        create_model("  ")
    with pytest.raises(KDError, match="num_classes must be a positive integer"):
        create_model("resnet8", num_classes=0)


def test_describe_model():
    line = describe_model("resnet56")
    assert line.startswith("resnet56: CIFAR ResNet") and "0.86M params" in line
    assert "\n" not in line


def test_user_module_in_working_directory(tmp_path, monkeypatch):
    name = f"kd_cwd_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("from torch import nn\n\ndef net():\n    return nn.Linear(3, 2)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    try:
        model = create_model(f"{name}:net")
        assert isinstance(model, nn.Linear) and model.kd_aliases == {}  # the root module cannot be tapped
    finally:
        sys.modules.pop(name, None)
