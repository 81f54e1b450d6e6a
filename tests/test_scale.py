"""Training at scale: streamed data and its augmentation, devices and precision, TensorBoard and provenance,
config files and the Python API (data-parallel runs under torchrun: tests/test_ddp.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from rich.console import Console

import autokd_dsl
from autokd_dsl.config_file import settings_from
from autokd_dsl.data import DataConfig, load_data
from autokd_dsl.data.stream import epoch_loader, eval_loader, open_data
from autokd_dsl.errors import KDError
from autokd_dsl.training.runtime import Runtime, resolve_device
from autokd_dsl.training.teacher import Recipe, train_teacher
from autokd_dsl.training.tracking import read_scalars

ROOT = Path(__file__).resolve().parents[1]
KD = ROOT / "library" / "kd.kd"
SIZE = (1, 8, 8)

pytestmark = pytest.mark.usefixtures("one_thread")


def quiet() -> Console:
    return Console(file=io.StringIO(), soft_wrap=True)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "resnet8.pt"
    return train_teacher("resnet8", DataConfig(name="digits", input_size=SIZE), Recipe(epochs=1, schedule="cosine"),
                         out, quiet(), runtime=Runtime(device="cpu"), command="autokd-dsl teacher resnet8 ...")


def whole(ds):
    return ds.__getitems__(list(range(len(ds))))


# ------------------------------------------------------------------------------------------------ data


def test_streamed_splits_equal_the_in_memory_ones() -> None:
    cfg = DataConfig(name="digits", input_size=SIZE)
    mem, sets = load_data(cfg), open_data(cfg)
    for name in ("train", "val", "test"):
        split, ds = getattr(mem, name), getattr(sets, name)
        x, y, idx = whole(ds)
        torch.testing.assert_close(x, split.images, rtol=0, atol=1e-6)
        assert torch.equal(y, split.labels) and torch.equal(ds.origin, split.origin)
        assert torch.equal(idx, torch.arange(len(split)))
    assert sets.mean == mem.mean and sets.std == mem.std and not sets.augment


def test_batches_are_the_same_for_any_workers_and_ranks() -> None:
    sets = open_data(DataConfig(name="digits", input_size=SIZE, augment=True))
    one = list(epoch_loader(sets.train, 32, epoch=3, seed=1))
    ranks = [list(epoch_loader(sets.train, 16, epoch=3, seed=1, rank=r, world=2, workers=w))
             for r, w in ((0, 2), (1, 0))]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == -(-len(sets.train) // 32)
    for k, (x, y, idx) in enumerate(one):
        assert torch.equal(torch.cat([ranks[0][k][2], ranks[1][k][2]]), idx)
        assert torch.equal(torch.cat([ranks[0][k][0], ranks[1][k][0]]), x)
        assert torch.equal(torch.cat([ranks[0][k][1], ranks[1][k][1]]), y)
    seen = torch.cat([b[2] for b in one])
    assert torch.equal(seen.sort().values, torch.arange(len(sets.train)))  # every sample once per epoch
    other = list(epoch_loader(sets.train, 32, epoch=4, seed=1))
    assert not torch.equal(other[0][2], one[0][2])  # a new order each epoch
    plain = sets.train.without_augmentation().__getitems__(one[0][2].tolist())[0]
    changed = (one[0][0] != plain).flatten(1).any(1).float().mean()
    assert changed > 0.5  # crop and flip move most images


def test_imagefolder_streams_within_a_memory_limit(tmp_path) -> None:
    """A folder whose decoded pixels (138 MB as bytes, 4 times that as floats) exceed what this process allows itself
    to grow by (32 MB): every image is read through the loader, and the peak resident memory stays under the limit."""
    from PIL import Image

    root, n, side = tmp_path / "big", 240, 448
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    for i in range(n):
        cls = f"c{i % 4}"
        (root / cls).mkdir(parents=True, exist_ok=True)
        base = ((xx * (i % 7 + 1) + yy * (i % 5 + 1)) % 256).to(torch.uint8)
        arr = torch.stack([base, base.flip(0), base.flip(1)], -1).numpy()
        Image.fromarray(arr).save(root / cls / f"{i}.jpg", quality=70)
    decoded_mb = n * side * side * 3 / 2**20
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from autokd_dsl.data import DataConfig
        from autokd_dsl.data.stream import epoch_loader, eval_loader, open_data
        def status_mb(field):
            line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
            return int(line.split()[1]) / 1024
        sets = open_data(DataConfig(name="imagefolder:{root}", input_size=(3, 224, 224), val_fraction=0.1))
        next(iter(epoch_loader(sets.train, 8, epoch=1, seed=0)))  # warm up the allocator and the decoder
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set size (VmHWM) to the current one
        limit = status_mb("VmRSS") + 32
        seen = 0
        for split in (sets.train, sets.val, sets.test):
            loader = epoch_loader(split, 8, epoch=1, seed=0) if split is sets.train else eval_loader(split, 8)
            for x, y, idx in loader:
                seen += len(y)
        peak = status_mb("VmHWM")
        print(seen, peak, limit)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr
    seen, peak, limit = (float(v) for v in out.stdout.split())
    assert seen == n and decoded_mb > 4 * 32
    assert peak < limit, f"peak resident memory {peak:.0f} MB passed the limit {limit:.0f} MB"


def test_cifar_streams_through_worker_processes(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_data import make_cifar

    make_cifar(tmp_path, "cifar10", per_file=20, n_test=10)
    cfg = DataConfig(name="cifar10", root=tmp_path)
    sets, mem = open_data(cfg), load_data(cfg)
    assert sets.augment and sets.streamed  # CIFAR: crop 32 pad 4 + flip, read by workers by default
    plain = torch.cat([x for x, _, _ in eval_loader(sets.train, 16, workers=2)])
    torch.testing.assert_close(plain, mem.train.images, rtol=0, atol=1e-6)
    a = [b[0] for b in epoch_loader(sets.train, 16, epoch=1, seed=0, workers=2)]
    b = [b[0] for b in epoch_loader(sets.train, 16, epoch=1, seed=0, workers=0)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------------------------ device, precision


def test_devices_this_machine_lacks_are_user_errors() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(KDError, match="unknown device `gpu0`"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(KDError, match="no CUDA GPU"):
            resolve_device("cuda:1")


def small_run(teacher_file, out, **options) -> dict:
    return autokd_dsl.train(file=KD, teacher="resnet8", teacher_weights=teacher_file, student="resnet8",
                            data="digits", input_size="1x8x8", epochs=2, out=out, device="cpu", tensorboard=False,
                            console=quiet(), **options)


@pytest.fixture(scope="module")
def fp32_run(teacher_file, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("fp32") / "run"
    return small_run(teacher_file, out), out


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_like_fp32(teacher_file, fp32_run, tmp_path, amp) -> None:
    full, full_out = fp32_run
    mixed = small_run(teacher_file, tmp_path / amp, amp=amp, channels_last=True)
    ckpt = torch.load(tmp_path / amp / "checkpoint.pt", weights_only=True)
    assert (ckpt["scaler"] != {}) == (amp == "fp16")  # fp16 keeps a gradient scaler, bf16 needs none
    assert full["test_accuracy"] > 0.5
    assert abs(mixed["test_accuracy"] - full["test_accuracy"]) < 0.1
    a = [json.loads(r) for r in (full_out / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(r) for r in (tmp_path / amp / "metrics.jsonl").read_text().splitlines()]
    assert b[0]["losses"]["total"] == pytest.approx(a[0]["losses"]["total"], rel=0.1)
    assert b[0]["losses"]["total"] != a[0]["losses"]["total"]  # reduced precision did run


# -------------------------------------------------------------------------------- tracking, provenance


def test_train_run_folder_has_tensorboard_scalars_and_provenance(teacher_file, tmp_path) -> None:
    out = tmp_path / "run"
    result = autokd_dsl.train(file=KD, teacher="resnet8", teacher_weights=teacher_file, student="resnet8",
                              data="digits", input_size="1x8x8", epochs=2, train_subset=200, out=out, device="cpu",
                              console=quiet(), command="autokd-dsl train library/kd.kd ...")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalars = read_scalars(out / "tensorboard")
    for tag, values in (("loss/total", [r["losses"]["total"] for r in rows]),
                        ("loss/soft", [r["losses"]["soft"] for r in rows]),
                        ("accuracy/val", [r["val_acc"] for r in rows]), ("lr", [r["lr"] for r in rows])):
        assert [s for s, _ in scalars[tag]] == [1, 2], tag
        assert [v for _, v in scalars[tag]] == pytest.approx(values, rel=1e-6), tag
    assert scalars["accuracy/test"][-1][1] == pytest.approx(result["test_accuracy"])
    info = json.loads((out / "run.json").read_text())
    assert info["command"] == "autokd-dsl train library/kd.kd ..."
    assert info["settings"] == json.loads(json.dumps(result["settings"]))
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["python"]
    assert info["options"]["epochs"] == 2 and info["runtime"]["resolved_device"] == "cpu"
    assert (out / "distiller.kd").read_text() == KD.read_text()
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    if git.returncode == 0:
        assert info["git"]["commit"] == git.stdout.strip()


def test_teacher_run_folder_has_tensorboard_scalars_and_provenance(teacher_file) -> None:
    folder = teacher_file.with_name("resnet8.run")
    scalars = read_scalars(folder / "tensorboard")
    assert [s for s, _ in scalars["loss/ce"]] == [1] and 0 < scalars["loss/ce"][0][1] < 10
    ckpt = torch.load(teacher_file, weights_only=True)
    assert scalars["accuracy/test"][-1][1] == pytest.approx(ckpt["test_accuracy"])
    info = json.loads((folder / "run.json").read_text())
    assert info["command"] == "autokd-dsl teacher resnet8 ..." and info["settings"]["architecture"] == "resnet8"
    assert info["settings"]["recipe"]["epochs"] == 1 and info["versions"]["torch"] == torch.__version__


def test_search_logs_reward_and_best_so_far(teacher_file, tmp_path) -> None:
    out = tmp_path / "search"
    autokd_dsl.search(space_file=ROOT / "examples" / "space.kd", teacher="resnet8", teacher_weights=teacher_file,
                      student="resnet8", input_size="1x8x8", budget=3, epochs=1, out=out, console=quiet())
    rows = [r for r in json.loads(json.dumps(_store_rows(out))) if not r["baseline"]]
    scalars = read_scalars(out / "tensorboard")
    rewards = [r["reward"] for r in rows if r["status"] == "ok"]
    assert [v for _, v in scalars["search/reward"]] == pytest.approx(rewards, rel=1e-6)
    best = [max(rewards[:i + 1]) for i in range(len(rewards))]
    assert [v for _, v in scalars["search/best_reward"]][-1] == pytest.approx(best[-1])
    assert (out / "space.kd").read_text() == (ROOT / "examples" / "space.kd").read_text()
    assert json.loads((out / "run.json").read_text())["settings"]["budget"] == 3


def _store_rows(out: Path) -> list[dict]:
    from autokd_dsl.search.store import Store

    store = Store(out / "search.sqlite")
    try:
        return list(store.rows())
    finally:
        store.close()


# ------------------------------------------------------------------------------------------ config file


def test_config_file_values_flags_override_and_located_errors(tmp_path) -> None:
    from autokd_dsl.api import TrainSettings

    path = tmp_path / "run.toml"
    path.write_text('file = "library/kd.kd"\nteacher = "resnet56"\nstudent = "resnet20"\ndata = "cifar100"\n'
                    'batch-size = 128\namp = "bf16"\n')
    s = settings_from(TrainSettings, "train", path, {"batch_size": 32, "epochs": 3})
    assert (s.teacher, s.batch_size, s.epochs, s.amp) == ("resnet56", 32, 3, "bf16")
    path.write_text('teacher = "resnet56"\n\nepoch = 240\n')
    with pytest.raises(KDError) as err:
        settings_from(TrainSettings, "train", path, {})
    assert err.value.render().startswith(f"{path}:3:1: error: unknown setting `epoch` for `train`")
    assert "did you mean `epochs`?" in err.value.render()
    path.write_text('file = "x.kd"\nteacher = "t"\nstudent = "s"\ndata = "digits"\n  amp = "fp8"\n')
    with pytest.raises(KDError) as err:
        settings_from(TrainSettings, "train", path, {})
    assert err.value.render().startswith(f"{path}:5:3: error: setting `amp`")
    path.write_text('teacher = "t\n')
    with pytest.raises(KDError, match="invalid TOML") as err:
        settings_from(TrainSettings, "train", path, {})
    assert err.value.line == 1


def test_cli_config_errors_exit_2_located(tmp_path) -> None:
    from typer.testing import CliRunner

    from autokd_dsl.cli import app

    path = tmp_path / "run.toml"
    path.write_text('teacher = "resnet8"\nstudent = "resnet8"\nbatchsize = 32\n')
    result = CliRunner().invoke(app, ["train", str(KD), "--data", "digits", "--config", str(path)])
    assert result.exit_code == 2
    assert f"{path}:3:1: error: unknown setting `batchsize` for `train`" in result.output
    assert "did you mean `batch_size`?" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["train", str(KD), "--data", "digits", "--student", "resnet8"])
    assert result.exit_code == 2 and "`train` needs --teacher" in result.output
