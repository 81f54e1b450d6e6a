"""Offline teacher outputs: the cache holds what live teacher inference computes, and is keyed by its inputs."""

from __future__ import annotations

import pytest
import torch

from autokd_dsl.compiler.build import attach, compile_distiller, load_distiller
from autokd_dsl.data import DataConfig, batches, load_data
from autokd_dsl.errors import KDError
from autokd_dsl.models import create_model
from autokd_dsl.standalone.attach import TapCapture
from autokd_dsl.training.student import Distill, subset_train
from autokd_dsl.training.teacher_cache import (
    OUTPUT,
    TeacherCache,
    cache_fields,
    cache_folder,
)

SIZE = (1, 8, 8)
SPECS = ["layer1", "layer2.0.relu:in@2", "layer3", "fc", "fc:in"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle():
    return subset_train(load_data(DataConfig(name="digits", input_size=SIZE)), 120, seed=0)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(1)
    model = create_model("resnet14", 10, 1)
    model.train()
    for x, _, _ in batches(load_data(DataConfig(name="digits", input_size=SIZE)).train, 256, shuffle=False):
        with torch.no_grad():
            model(x)  # non-trivial BN running statistics, so eval mode differs from train mode
    return model.eval()


def live(teacher, x):
    capture = TapCapture(teacher, {spec: spec for spec in SPECS}, detach=True)
    with torch.no_grad():
        out = teacher(x)
    capture.remove()
    return capture.values | {OUTPUT: out}


@pytest.mark.parametrize("batch_size", [32, 50])
def test_cache_equals_live_teacher(bundle, teacher, tmp_path, batch_size) -> None:
    cache = TeacherCache.build(teacher, bundle.train, SPECS, tmp_path, data_key="k", batch_size=batch_size)
    assert len(cache) == len(bundle.train) and set(cache.specs) == set(SPECS)
    gen = torch.Generator().manual_seed(0)
    for x, _, idx in batches(bundle.train, 32, shuffle=True, generator=gen):
        got, want = cache.batch(idx), live(teacher, x)
        assert set(got) == set(SPECS) | {OUTPUT}
        for spec, value in want.items():
            if batch_size == 32:  # the same batches as the live pass would see, up to order: identical
                torch.testing.assert_close(got[spec], value, rtol=1e-5, atol=1e-6)
            else:  # other batch shapes may take other kernels: equal up to float rounding
                torch.testing.assert_close(got[spec], value, rtol=1e-4, atol=1e-5)
    assert not teacher.training


def test_open_reuses_and_keys(bundle, teacher, tmp_path) -> None:
    first = TeacherCache.open(teacher, bundle.train, SPECS, tmp_path, data_key="k")
    stamp = (first.folder / "manifest.json").stat().st_mtime_ns
    again = TeacherCache.open(teacher, bundle.train, list(reversed(SPECS)), tmp_path, data_key="k")
    assert again.folder == first.folder and (again.folder / "manifest.json").stat().st_mtime_ns == stamp
    reopened = TeacherCache.load(first.folder)
    torch.testing.assert_close(reopened.batch([3, 1])["fc"], first.batch([3, 1])["fc"])

    base = cache_fields(teacher, bundle.train, SPECS, "k", False)
    other_split = subset_train(load_data(DataConfig(name="digits", input_size=SIZE)), 120, seed=1).train
    variants = [
        cache_fields(teacher, bundle.train, SPECS[:2], "k", False),
        cache_fields(teacher, bundle.train, SPECS, "other-data", False),
        cache_fields(teacher, other_split, SPECS, "k", False),
        cache_fields(create_model("resnet14", 10, 1), bundle.train, SPECS, "k", False),
    ]
    folders = {cache_folder(tmp_path, f) for f in [base, *variants]}
    assert len(folders) == 5


def test_cache_errors(bundle, teacher, tmp_path) -> None:
    with pytest.raises(KDError, match="un-augmented"):
        TeacherCache.build(teacher, bundle.train, SPECS, tmp_path, data_key="k", augment=True)
    with pytest.raises(KDError, match="`layer9` is not a module of the teacher"):
        TeacherCache.build(teacher, bundle.train, ["layer9"], tmp_path, data_key="k")
    with pytest.raises(KDError, match="was not reached"):
        TeacherCache.build(teacher, bundle.train, ["layer1.0.relu@3"], tmp_path, data_key="k")
    with pytest.raises(KDError, match="cannot read the teacher-output cache"):
        TeacherCache.load(tmp_path / "nothing-here")
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("library_file", ["library/kd.kd", "library/at.kd"])
def test_offline_loss_equals_live_loss(bundle, teacher, tmp_path, library_file) -> None:
    torch.manual_seed(0)
    student = create_model("resnet8", 10, 1)
    loss = compile_distiller(load_distiller(library_file), teacher, student, input_size=SIZE)
    cache = TeacherCache.build(teacher, bundle.train, loss.tap_specs()["teacher"].values(), tmp_path, data_key="k")
    x, y, idx = next(batches(bundle.train, 40, shuffle=True, generator=torch.Generator().manual_seed(3)))
    student.eval()  # the same student output both times
    attached = attach(teacher, student, loss)
    out_live, live_losses = attached(x, labels=y, epoch=1)
    attached.detach_hooks()
    offline = Distill(teacher, student, loss, cache)
    out_off, off_losses = offline(x, labels=y, index=idx, epoch=1)
    offline.close()
    torch.testing.assert_close(out_off, out_live)
    assert set(off_losses) == set(live_losses)
    for name in live_losses:
        torch.testing.assert_close(off_losses[name], live_losses[name], rtol=1e-5, atol=1e-6)
