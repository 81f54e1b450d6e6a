"""Teacher checkpoints: training, the round trip, every mismatch and corruption, and the teacher cache."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console

from autokd_dsl.data import DataConfig
from autokd_dsl.errors import KDError
from autokd_dsl.training.optim import lr_factor, milestone_epochs
from autokd_dsl.training.teacher import (
    FORMAT,
    Recipe,
    cached_path,
    default_recipe,
    load_teacher,
    state_hash,
    teacher_for,
    train_teacher,
)

SIZE = (1, 8, 8)
DATA = DataConfig(name="digits", input_size=SIZE)
RECIPE = Recipe(epochs=1, lr=0.05, batch_size=64, schedule="cosine")


pytestmark = pytest.mark.usefixtures("one_thread")


def quiet() -> Console:
    return Console(file=io.StringIO(), soft_wrap=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return train_teacher("resnet8", DATA, RECIPE, tmp_path_factory.mktemp("t") / "teacher.pt", quiet())


def test_round_trip(checkpoint: Path) -> None:
    raw = torch.load(checkpoint, weights_only=True)
    assert raw["format"] == FORMAT
    assert (raw["architecture"], raw["dataset"], raw["input_size"], raw["num_classes"]) == ("resnet8", "digits",
                                                                                           [1, 8, 8], 10)
    assert raw["recipe"]["epochs"] == 1 and raw["recipe"]["momentum"] == 0.9
    assert 0.0 <= raw["test_accuracy"] <= 1.0
    assert raw["content_hash"] == state_hash(raw["state_dict"])
    model = load_teacher(checkpoint, "resnet8", 10, SIZE)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for name, value in model.state_dict().items():
        assert torch.equal(value, raw["state_dict"][name])
    assert model.kd_teacher["content_hash"] == raw["content_hash"]


@pytest.mark.parametrize(
    "arch, classes, size, message",
    [
        ("resnet14", 10, SIZE, "are for `resnet8`, not `resnet14`"),
        ("resnet8", 100, SIZE, "trained for 10 classes; this dataset has 100"),
        ("resnet8", 10, (1, 16, 16), "trained at input size 1x8x8; this run uses 1x16x16"),
        ("resnet8", 10, (3, 8, 8), "trained at input size 1x8x8; this run uses 3x8x8"),
    ],
)
def test_mismatches(checkpoint: Path, arch, classes, size, message) -> None:
    with pytest.raises(KDError) as err:
        load_teacher(checkpoint, arch, classes, size)
    assert message in err.value.message and err.value.hint


def test_truncated_and_garbage_files(checkpoint: Path, tmp_path: Path) -> None:
    data = checkpoint.read_bytes()
    for name, content in [("truncated.pt", data[: len(data) // 2]), ("empty.pt", b""), ("text.pt", b"hello\n")]:
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(KDError, match="truncated, corrupt or not a PyTorch checkpoint"):
            load_teacher(bad, "resnet8", 10, SIZE)
    with pytest.raises(KDError, match="not found"):
        load_teacher(tmp_path / "missing.pt", "resnet8", 10, SIZE)
    with pytest.raises(KDError, match="is not a file"):
        load_teacher(tmp_path, "resnet8", 10, SIZE)


def test_tampered_weights_and_wrong_contents(checkpoint: Path, tmp_path: Path) -> None:
    raw = torch.load(checkpoint, weights_only=True)
    raw["state_dict"]["fc.bias"] = raw["state_dict"]["fc.bias"] + 1
    torch.save(raw, tmp_path / "tampered.pt")
    with pytest.raises(KDError, match="content hash does not match"):
        load_teacher(tmp_path / "tampered.pt", "resnet8", 10, SIZE)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(KDError, match="not a checkpoint dict"):
        load_teacher(tmp_path / "list.pt", "resnet8", 10, SIZE)
    torch.save({"epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(KDError, match="is not a teacher checkpoint"):
        load_teacher(tmp_path / "other.pt", "resnet8", 10, SIZE)


def test_foreign_state_dicts(checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    torch.save({"model": state, "epoch": 240}, tmp_path / "repdistiller.pt")  # RepDistiller's layout
    model = load_teacher(tmp_path / "repdistiller.pt", "resnet8", 10, SIZE)
    assert torch.equal(model.fc.weight, state["fc.weight"])
    torch.save(state, tmp_path / "bare.pt")
    with pytest.raises(KDError, match=r"do not fit resnet8: `fc.weight` has shape \(10, 64\) in the file"):
        load_teacher(tmp_path / "bare.pt", "resnet8", 100, SIZE)
    with pytest.raises(KDError, match="do not fit resnet14: missing `layer1.1.conv1.weight`"):
        load_teacher(tmp_path / "bare.pt", "resnet14", 10, SIZE)


def test_teacher_for_trains_once_then_reuses(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, soft_wrap=True)
    path = teacher_for("resnet8", DATA, RECIPE, tmp_path, console)
    assert path == cached_path("resnet8", DATA, RECIPE, tmp_path) and path.is_file()
    assert "training one" in out.getvalue()
    stamp = path.stat().st_mtime_ns
    assert teacher_for("resnet8", DATA.model_copy(update={"train_subset": 50}), RECIPE, tmp_path, console) == path
    assert "using cached teacher resnet8" in out.getvalue() and path.stat().st_mtime_ns == stamp
    path.write_bytes(path.read_bytes()[:100])  # a damaged cache entry is retrained, not an error
    assert teacher_for("resnet8", DATA, RECIPE, tmp_path, console) == path
    assert "unusable" in out.getvalue()
    load_teacher(path, "resnet8", 10, SIZE)
    other = cached_path("resnet8", DATA, RECIPE.model_copy(update={"lr": 0.1}), tmp_path)
    assert other != path


def test_recipes() -> None:
    long = default_recipe("resnet56", "cifar100")
    assert (long.epochs, long.lr, long.batch_size, long.schedule) == (240, 0.05, 64, "step")
    assert milestone_epochs(long) == [150, 180, 210]
    assert [lr_factor(long, e) for e in (150, 151)] == [1.0, pytest.approx(0.1)]
    assert default_recipe("mobilenetv2", "cifar100").lr == 0.01
    short = default_recipe("resnet20", "digits")
    assert short.schedule == "cosine" and short.epochs == 10
    with pytest.raises(KDError, match="must be at least 1"):
        Recipe(epochs=0)
