"""Distillation training: outputs, resume (also after SIGKILL), offline teacher, and the CLI's user errors."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from autokd_dsl.cli import app
from autokd_dsl.compiler.build import load_distiller
from autokd_dsl.data import DataConfig, load_data
from autokd_dsl.errors import KDError
from autokd_dsl.training.student import TrainConfig, make_student, subset_train, train
from autokd_dsl.training.teacher import Recipe, load_teacher, train_teacher

ROOT = Path(__file__).resolve().parents[1]
KD = ROOT / "library" / "kd.kd"
AT = ROOT / "library" / "at.kd"
SIZE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")


def quiet() -> Console:
    return Console(file=io.StringIO(), soft_wrap=True)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    recipe = Recipe(epochs=1, lr=0.05, batch_size=64, schedule="cosine")
    out = tmp_path_factory.mktemp("teacher") / "resnet8.pt"
    return train_teacher("resnet8", DataConfig(name="digits", input_size=SIZE), recipe, out, quiet())


@pytest.fixture(scope="module")
def bundle():
    return subset_train(load_data(DataConfig(name="digits", input_size=SIZE)), 200, seed=0)


TWO_EPOCHS = TrainConfig(epochs=2, seed=0)


def run(teacher_file, bundle, out, cfg=TWO_EPOCHS, file=KD, resume=False):
    teacher = load_teacher(teacher_file, "resnet8", 10, SIZE)
    student = make_student("resnet8", 10, 1, cfg.seed)
    return train(load_distiller(file), teacher, student, bundle, cfg, out, resume, quiet(),
                 cache_root=out.parent / "cache")


def test_train_writes_metrics_checkpoint_and_result(teacher_file, bundle, tmp_path) -> None:
    result = run(teacher_file, bundle, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "losses", "train_acc", "val_acc", "lr", "seconds"}
    assert set(rows[0]["losses"]) == {"soft", "hard", "total"}
    assert rows[0]["lr"] == pytest.approx(0.05) and rows[1]["lr"] < rows[0]["lr"]  # cosine, per epoch
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and {"student", "connectors", "optimizer", "scheduler", "scaler"} <= set(ckpt)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert 0 <= saved["test_accuracy"] <= 1 and saved["epochs"] == 2 and saved["best_val_epoch"] in (1, 2)
    assert saved["settings"]["train"]["epochs"] == 2 and saved["settings"]["train_images"] == 200


def test_train_with_a_learnable_connector(teacher_file, bundle, tmp_path) -> None:
    """FitNet's regressor is trained with the student and saved with the run (a connector reads nothing
    from the teacher, so attaching it must not ask it to)."""
    result = run(teacher_file, bundle, tmp_path / "run", TrainConfig(epochs=1, seed=0),
                 file=ROOT / "library" / "fitnet.kd")
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["connectors"] and 0 <= result["test_accuracy"] <= 1


def test_resume_refuses_other_settings(teacher_file, bundle, tmp_path) -> None:
    out = tmp_path / "run"
    run(teacher_file, bundle, out, TrainConfig(epochs=1))
    with pytest.raises(KDError, match="already holds a run"):
        run(teacher_file, bundle, out, TrainConfig(epochs=1))
    with pytest.raises(KDError, match=r"different settings \(train.lr: 0.05 in the checkpoint, 0.1 now\)"):
        run(teacher_file, bundle, out, TrainConfig(epochs=1, lr=0.1), resume=True)
    with pytest.raises(KDError, match="distiller: 'kd' in the checkpoint, 'at' now"):
        run(teacher_file, bundle, out, TrainConfig(epochs=1), file=AT, resume=True)
    other = subset_train(load_data(DataConfig(name="digits", input_size=SIZE)), 200, seed=1)
    with pytest.raises(KDError, match="train_split"):
        run(teacher_file, other, out, TrainConfig(epochs=1), resume=True)
    (out / "checkpoint.pt").write_bytes(b"broken")
    with pytest.raises(KDError, match="cannot read checkpoint"):
        run(teacher_file, bundle, out, TrainConfig(epochs=1), resume=True)


def test_resume_of_finished_run_reports_again(teacher_file, bundle, tmp_path) -> None:
    first = run(teacher_file, bundle, tmp_path / "run", TrainConfig(epochs=1))
    again = run(teacher_file, bundle, tmp_path / "run", TrainConfig(epochs=1), resume=True)
    assert again["test_accuracy"] == first["test_accuracy"]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_offline_teacher_matches_live(teacher_file, bundle, tmp_path) -> None:
    live = run(teacher_file, bundle, tmp_path / "live", TrainConfig(epochs=1), file=AT)
    offline = run(teacher_file, bundle, tmp_path / "offline", TrainConfig(epochs=1, offline_teacher=True), file=AT)
    assert list((tmp_path / "cache").iterdir())  # the teacher's outputs were cached
    a = torch.load(tmp_path / "live" / "checkpoint.pt", weights_only=True)["student"]
    b = torch.load(tmp_path / "offline" / "checkpoint.pt", weights_only=True)["student"]
    for name in a:  # the cache's teacher pass uses other batch shapes: equal up to float rounding
        torch.testing.assert_close(b[name], a[name], rtol=1e-3, atol=1e-4)
    assert abs(live["test_accuracy"] - offline["test_accuracy"]) <= 0.01
    augmented = dataclasses.replace(bundle, augment=True)
    log = quiet()
    teacher = load_teacher(teacher_file, "resnet8", 10, SIZE)
    train(load_distiller(AT), teacher, make_student("resnet8", 10, 1, 0), augmented,
          TrainConfig(epochs=1, offline_teacher=True), tmp_path / "aug", console=log, cache_root=tmp_path / "cache2")
    assert "--offline-teacher is not used: augmentation is on" in log.file.getvalue()
    assert not (tmp_path / "cache2").exists()  # the live teacher ran instead
    assert json.loads((tmp_path / "aug" / "run.json").read_text())["offline_teacher_used"] is False


# ------------------------------------------------------------------------------------ through the CLI


def cli_args(teacher_file: Path, out: Path, epochs: int) -> list[str]:
    return ["train", str(KD), "--teacher", "resnet8", "--student", "resnet8", "--teacher-weights",
            str(teacher_file), "--data", "digits", "--input-size", "1x8x8", "--epochs", str(epochs), "--seed", "3",
            "--out", str(out)]


def epochs_in(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.endswith("}")]


def test_sigkill_then_resume_equals_uninterrupted(teacher_file, tmp_path) -> None:
    epochs = 8
    env = dict(os.environ, AUTOKD_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "autokd_dsl", *cli_args(teacher_file, tmp_path / "killed", epochs)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not epochs_in(tmp_path / "killed") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = epochs_in(tmp_path / "killed")
    assert 1 <= len(done) < epochs, (done, proc.stderr.read().decode())
    assert not (tmp_path / "killed" / "result.json").exists()

    resumed = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert epochs_in(tmp_path / "killed") == list(range(1, epochs + 1))

    straight = [sys.executable, "-m", "autokd_dsl", *cli_args(teacher_file, tmp_path / "straight", epochs)]
    assert subprocess.run(straight, cwd=ROOT, env=env, capture_output=True, check=False).returncode == 0
    a = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    # Same seed, same batches, same thread count, same CPU kernels: bit-identical weights and metrics.
    for part in ("student", "connectors"):
        for name, value in b[part].items():
            assert torch.equal(a[part][name], value), name
    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(a["history"]) == strip(b["history"])
    ra = json.loads((tmp_path / "killed" / "result.json").read_text())
    rb = json.loads((tmp_path / "straight" / "result.json").read_text())
    assert ra["test_accuracy"] == rb["test_accuracy"]


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOKD_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, list(args))
        text = result.output + (result.stderr if result.stderr_bytes is not None else "")
        return result.exit_code, text

    return invoke


def test_cli_user_errors_exit_2(cli, teacher_file, tmp_path) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(teacher_file.read_bytes()[:2000])
    base = ["train", str(KD), "--teacher", "resnet8", "--student", "resnet8", "--input-size", "1x8x8",
            "--epochs", "1", "--out", str(tmp_path / "run")]
    cases = [
        ([*base, "--data", "digits", "--teacher-weights", str(truncated)], "is truncated, corrupt"),
        ([*base, "--data", "fashion-mnist", "--data-root", str(tmp_path / "nowhere")], "fashion-mnist files not found"),
        ([*base, "--data", f"imagefolder:{tmp_path / 'nowhere'}"], "nowhere"),
        ([*base[:5], "resnet9", *base[6:], "--data", "digits"], "unknown model `resnet9`"),
        ([*base, "--data", "digits", "--teacher", "vgg99"], "unknown model `vgg99`"),
        ([*base[:7], "4x8x8", *base[8:], "--data", "digits"], "bad input size `4x8x8`"),
        ([*base, "--data", "digits", "--teacher-weights", str(teacher_file), "--input-size", "1x16x16"],
         "trained at input size 1x8x8; this run uses 1x16x16"),
        ([*base, "--data", "digits", "--train-subset", "5"], "smaller than the number of classes"),
        (["teacher", "resnet9", "--data", "digits"], "unknown model `resnet9`"),
    ]
    for args, message in cases:
        code, text = cli(*args)
        assert code == 2, (args, text)
        assert message in text and "Traceback" not in text, (args, text)


def test_cli_resume_with_other_settings_exits_2(cli, teacher_file, tmp_path) -> None:
    args = cli_args(teacher_file, tmp_path / "run", 1)
    code, text = cli(*args)
    assert code == 0, text
    assert "test accuracy" in text and (tmp_path / "run" / "result.json").exists()
    code, text = cli(*args, "--resume", "--lr", "0.2")
    assert code == 2 and "different settings" in text and "Traceback" not in text


def test_cli_truncated_weights_in_a_real_process(teacher_file, tmp_path) -> None:
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(teacher_file.read_bytes()[:-100])
    cmd = [sys.executable, "-m", "autokd_dsl", *cli_args(truncated, tmp_path / "run", 1)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, AUTOKD_CACHE=str(tmp_path), OMP_NUM_THREADS="1"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot read teacher weights") and "Traceback" not in proc.stderr


def test_cli_models_lists_the_zoo(cli) -> None:
    code, text = cli("models")
    assert code == 0 and "resnet56" in text and "wrn_40_2" in text and "timm:NAME" in text
