"""Tests of autokd_dsl.data: loading, splitting, normalising and batching (no downloads, small files)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from autokd_dsl.data import (
    DataConfig,
    batches,
    dataset_names,
    describe,
    load_data,
    random_crop_flip,
)
from autokd_dsl.errors import KDError

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def digits_raw() -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().images, dtype=np.float32) / 16.0


@pytest.fixture(scope="module")
def digits_small():
    return load_data(DataConfig(name="digits", input_size=(1, 8, 8)))


def denorm(bundle, images: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    s = torch.tensor(bundle.std).view(1, -1, 1, 1)
    return images * s + m


# --------------------------------------------------------------------------------------------- config


def test_dataset_names_and_config_key():
    assert dataset_names() == ["digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder:PATH"]
    a, b = DataConfig(), DataConfig()
    assert a.key() == b.key() and len(a.key()) == 16
    assert DataConfig(seed=1).key() != a.key()
    assert DataConfig(name="CIFAR-10").name == "cifar10"
    with pytest.raises(ValueError, match="frozen"):
        a.seed = 3  # frozen


def test_unknown_name_suggests_the_closest():
    with pytest.raises(KDError) as info:
        DataConfig(name="cifr10")
    assert "unknown dataset" in info.value.message
    assert "did you mean `cifar10`?" in info.value.hint
    assert "fashion-mnist" in info.value.hint and "imagefolder:PATH" in info.value.hint
    with pytest.raises(KDError):
        DataConfig(name="imagefolder")


@pytest.mark.parametrize("frac", [-0.1, 0.95, float("nan")])
def test_val_fraction_out_of_range(frac):
    with pytest.raises(KDError, match="val_fraction"):
        DataConfig(val_fraction=frac)


def test_bad_input_size():
    with pytest.raises(KDError, match="channels"):
        DataConfig(input_size=(2, 32, 32))


# --------------------------------------------------------------------------------------------- digits


def test_digits_shapes_and_normalisation():
    b = load_data(DataConfig(name="digits", input_size=(3, 32, 32)))
    assert b.num_classes == 10 and b.augment is False
    for split in (b.train, b.val, b.test):
        assert split.images.dtype == torch.float32 and split.images.shape[1:] == (3, 32, 32)
        assert split.labels.dtype == torch.int64 and split.indices.dtype == torch.int64
        assert torch.equal(split.indices, torch.arange(len(split)))
        assert torch.equal(split.images[:, 0], split.images[:, 2])  # grey repeated into 3 channels
    assert len(b.train) + len(b.val) + len(b.test) == 1797
    assert len(b.mean) == len(b.std) == 3 and b.mean[0] == b.mean[1] == b.mean[2]
    pool = torch.cat([b.train.images, b.val.images])
    assert abs(pool.mean().item()) < 1e-3 and abs(pool.std().item() - 1) < 1e-2

    small = load_data(DataConfig(name="digits", input_size=(1, 16, 16)))
    assert small.train.images.shape[1:] == (1, 16, 16) and len(small.mean) == 1
    assert "digits" in describe(small) and "1x16x16" in describe(small)


def test_digits_splits_disjoint_and_origin_matches_raw(digits_small, digits_raw):
    b = digits_small
    origins = [set(s.origin.tolist()) for s in (b.train, b.val, b.test)]
    assert not (origins[0] & origins[1]) and not (origins[0] & origins[2]) and not (origins[1] & origins[2])
    assert set().union(*origins) == set(range(1797))
    for split in (b.train, b.val, b.test):
        raw = torch.from_numpy(digits_raw[split.origin.numpy()]).unsqueeze(1)
        assert torch.allclose(denorm(b, split.images), raw, atol=1e-5)
    assert len(b.test) == 359  # a fixed 20% test split
    test_counts = torch.bincount(b.test.labels, minlength=10)
    assert test_counts.min() >= 34 and test_counts.max() <= 38  # stratified


def test_digits_test_split_fixed_across_seeds(digits_small):
    other = load_data(DataConfig(name="digits", input_size=(1, 8, 8), seed=7))
    assert torch.equal(digits_small.test.origin, other.test.origin)
    assert torch.equal(digits_small.test.images, other.test.images)
    assert not torch.equal(digits_small.val.origin, other.val.origin)
    again = load_data(DataConfig(name="digits", input_size=(1, 8, 8), seed=7))
    assert torch.equal(again.val.origin, other.val.origin) and torch.equal(again.train.images, other.train.images)


def test_val_fraction_zero_gives_empty_val():
    b = load_data(DataConfig(name="digits", input_size=(1, 8, 8), val_fraction=0.0))
    assert len(b.val) == 0 and b.val.images.shape == (0, 1, 8, 8) and len(b.train) == 1797 - 359


def test_train_subset_is_balanced_and_seeded():
    cfg = DataConfig(name="digits", input_size=(1, 8, 8), train_subset=100)
    b = load_data(cfg)
    assert torch.equal(torch.bincount(b.train.labels, minlength=10), torch.full((10,), 10))
    assert torch.equal(load_data(cfg).train.origin, b.train.origin)
    other = load_data(DataConfig(name="digits", input_size=(1, 8, 8), train_subset=100, seed=1))
    assert not torch.equal(other.train.origin, b.train.origin)
    odd = load_data(DataConfig(name="digits", input_size=(1, 8, 8), train_subset=25))
    counts = torch.bincount(odd.train.labels, minlength=10)
    assert counts.sum() == 25 and counts.min() == 2 and counts.max() == 3
    # the subset is drawn from what the validation split left over
    assert not set(b.train.origin.tolist()) & set(b.val.origin.tolist())


def test_train_subset_errors():
    with pytest.raises(KDError, match="larger than the training set"):
        load_data(DataConfig(name="digits", input_size=(1, 8, 8), train_subset=5000))
    with pytest.raises(KDError, match="smaller than the number of classes"):
        load_data(DataConfig(name="digits", input_size=(1, 8, 8), train_subset=5))


# -------------------------------------------------------------------------------------------- batches


def test_batches_reproducible_and_complete(digits_small):
    split = digits_small.train

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return list(batches(split, 100, shuffle=True, generator=g))

    a, b = run(3), run(3)
    assert len(a) == (len(split) + 99) // 100
    for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    seen = torch.cat([i for _, _, i in a])
    assert sorted(seen.tolist()) == list(range(len(split)))
    for x, y, i in a:
        assert torch.equal(x, split.images[i]) and torch.equal(y, split.labels[i])
    assert not torch.equal(torch.cat([i for _, _, i in run(4)]), seen)

    plain = list(batches(split, 100, shuffle=False, drop_last=True))
    assert len(plain) == len(split) // 100 and all(len(y) == 100 for _, y, _ in plain)
    assert torch.equal(plain[0][2], torch.arange(100))
    with pytest.raises(KDError):
        next(batches(split, 0, shuffle=False))


def test_augmentation_changes_images_not_labels():
    b = load_data(DataConfig(name="digits", input_size=(3, 32, 32), augment=True))
    assert b.augment is True
    plain = list(batches(b.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0)))
    aug = list(batches(b.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0), augment=True))
    aug2 = list(batches(b.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0), augment=True))
    for (xp, yp, ip), (xa, ya, ia), (xa2, _, _) in zip(plain, aug, aug2):
        assert torch.equal(yp, ya) and torch.equal(ip, ia)
        assert xa.shape == xp.shape and torch.equal(xa, xa2)
    assert not torch.equal(plain[0][0], aug[0][0])


def test_random_crop_flip_is_a_shifted_window():
    x = torch.randn(16, 3, 16, 16)
    out = random_crop_flip(x, torch.Generator().manual_seed(1))  # padding 16 // 8 = 2
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for k in range(len(x)):
        windows = [padded[k, :, dy:dy + 16, dx:dx + 16] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[k], w) or torch.equal(out[k], w.flip(-1)) for w in windows)
    flips = random_crop_flip(x, torch.Generator().manual_seed(1), padding=0)
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flips, x))


# ------------------------------------------------------------------------------------------------ IDX


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx_dataset(folder: Path, gz: bool, n_train: int = 40, n_test: int = 12, seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for name, arr in arrays.items():
        write_idx(folder / name, arr, gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loading(tmp_path, gz):
    arrays = make_idx_dataset(tmp_path / "fashion-mnist", gz)
    b = load_data(DataConfig(name="fashion-mnist", root=tmp_path / "fashion-mnist", input_size=(1, 28, 28)))
    assert len(b.train) + len(b.val) == 40 and len(b.test) == 12 and len(b.val) == 4
    assert b.mean == (0.2860,) and b.std == (0.3530,) and b.augment is False
    raw_test = torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float().unsqueeze(1) / 255
    assert torch.allclose(denorm(b, b.test.images), raw_test, atol=1e-5)
    assert torch.equal(b.test.labels, torch.arange(12) % 10)
    # the parent folder works too (root/<name>/), and 3x32x32 repeats the grey channel
    b3 = load_data(DataConfig(name="fashion-mnist", root=tmp_path, input_size=(3, 32, 32)))
    assert b3.test.images.shape == (12, 3, 32, 32) and b3.mean == (0.2860,) * 3


def test_idx_truncated_and_bad_magic(tmp_path):
    make_idx_dataset(tmp_path / "a", gz=False)
    path = tmp_path / "a" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(KDError, match="truncated"):
        load_data(DataConfig(name="mnist", root=tmp_path / "a"))

    make_idx_dataset(tmp_path / "b", gz=True)
    gzpath = tmp_path / "b" / "t10k-labels-idx1-ubyte.gz"
    gzpath.write_bytes(gzpath.read_bytes()[:-12])
    with pytest.raises(KDError, match="t10k-labels"):
        load_data(DataConfig(name="mnist", root=tmp_path / "b"))

    make_idx_dataset(tmp_path / "c", gz=False)
    (tmp_path / "c" / "train-labels-idx1-ubyte").write_bytes(b"\x89PNG not idx at all")
    with pytest.raises(KDError, match="magic"):
        load_data(DataConfig(name="mnist", root=tmp_path / "c"))


def test_missing_dataset_names_the_folders(tmp_path, monkeypatch):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    with pytest.raises(KDError) as info:
        load_data(DataConfig(name="mnist", root=empty))
    assert str(empty) in info.value.message and "train-images-idx3-ubyte" in info.value.message
    assert "--data-root" in info.value.hint

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KDError) as info:
        load_data(DataConfig(name="cifar10"))
    msg = info.value.message
    assert str(tmp_path / "home" / ".cache" / "autokd-dsl" / "data" / "cifar-10-batches-py") in msg
    assert "data/cifar-10-batches-py" in msg and "data_batch_1" in msg and "test_batch" in msg
    if not FASHION_SYSTEM_DIR.exists():
        with pytest.raises(KDError) as info:
            load_data(DataConfig(name="fashion-mnist"))
        assert (str(FASHION_SYSTEM_DIR) in info.value.message
                and "apt-get install dataset-fashion-mnist" in info.value.hint)


# ---------------------------------------------------------------------------------------------- CIFAR


def make_cifar(parent: Path, kind: str, per_file: int = 6, n_test: int = 8, seed: int = 0, protocol: int = 2):
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        folder, files, key, classes = (parent / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                                       b"labels", 10)
    else:
        folder, files, key, classes = parent / "cifar-100-python", ["train"], b"fine_labels", 100
    folder.mkdir(parents=True)
    written = {}
    for name, n in [(f, per_file) for f in files] + [("test_batch" if kind == "cifar10" else "test", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, classes, n)]
        entry = {b"batch_label": name.encode(), key: labels, b"data": data, b"filenames": [b"x.png"] * n}
        if kind == "cifar100":
            entry[b"coarse_labels"] = [v // 5 for v in labels]
        raw = pickle.dumps(entry, protocol=protocol)
        if protocol <= 2:  # as numpy 1.x (and the original Python 2 files) name it
            raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(raw)
        written[name] = (data, labels)
    return folder, written


def test_cifar10_loading(tmp_path):
    folder, written = make_cifar(tmp_path, "cifar10")
    b = load_data(DataConfig(name="cifar10", root=tmp_path, val_fraction=0.0))
    assert b.num_classes == 10 and b.augment is True and len(b.train) == 30 and len(b.test) == 8
    assert b.mean == (0.4914, 0.4822, 0.4465)
    data, labels = written["test_batch"]
    raw = torch.from_numpy(data).float().view(-1, 3, 32, 32) / 255  # row-major R, G, B planes
    assert torch.allclose(denorm(b, b.test.images), raw, atol=1e-5)
    assert b.test.labels.tolist() == labels
    train_data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert torch.allclose(
        denorm(b, b.train.images),
        torch.from_numpy(train_data[b.train.origin.numpy()]).float().view(-1, 3, 32, 32) / 255,
        atol=1e-5,
    )
    # the folder itself as root, grey at 16x16 (luminance; statistics computed from the training set)
    g = load_data(DataConfig(name="cifar10", root=folder, input_size=(1, 16, 16), augment=False))
    assert g.train.images.shape[1:] == (1, 16, 16) and len(g.mean) == 1 and g.augment is False
    assert len(g.train) + len(g.val) == 30 and len(g.val) == 3


@pytest.mark.parametrize("protocol", [0, 4, 5])
def test_cifar_pickle_protocols(tmp_path, protocol):
    _, written = make_cifar(tmp_path, "cifar10", per_file=2, n_test=3, protocol=protocol)
    b = load_data(DataConfig(name="cifar10", root=tmp_path, val_fraction=0.0))
    raw = torch.from_numpy(written["test_batch"][0]).float().view(-1, 3, 32, 32) / 255
    assert len(b.train) == 10 and torch.allclose(denorm(b, b.test.images), raw, atol=1e-5)


def test_cifar100_loading(tmp_path):
    make_cifar(tmp_path, "cifar100", per_file=40, n_test=10)
    b = load_data(DataConfig(name="cifar100", root=tmp_path, input_size=(3, 24, 24)))
    assert b.num_classes == 100 and len(b.train) + len(b.val) == 40 and len(b.test) == 10
    assert b.train.images.shape[1:] == (3, 24, 24) and b.mean == (0.5071, 0.4865, 0.4409)


def test_cifar_corrupt_and_unsafe_pickles(tmp_path):
    folder, _ = make_cifar(tmp_path / "a", "cifar10")
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:500])
    with pytest.raises(KDError, match="data_batch_3"):
        load_data(DataConfig(name="cifar10", root=folder))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    folder, _ = make_cifar(tmp_path / "b", "cifar10")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(KDError, match="test_batch"):
        load_data(DataConfig(name="cifar10", root=folder))
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------- imagefolder


def save_png(path: Path, size, color, mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_imagefolder_with_train_and_test(tmp_path):
    root = tmp_path / "pets"
    for i in range(4):
        save_png(root / "train" / "cat" / f"{i}.png", (12, 10), (200, 10, 10))
        save_png(root / "train" / "dog" / f"{i}.png", (7, 9), 90, mode="L")
    save_png(root / "test" / "cat" / "t.png", (12, 12), (200, 10, 10))
    save_png(root / "test" / "dog" / "t.png", (5, 5), 90, mode="L")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    b = load_data(DataConfig(name=f"imagefolder:{root}", input_size=(3, 8, 8), val_fraction=0.25))
    assert b.num_classes == 2 and b.class_names == ("cat", "dog") and b.augment is True
    assert len(b.train) == 6 and len(b.val) == 2 and len(b.test) == 2
    assert b.test.labels.tolist() == [0, 1]
    test = denorm(b, b.test.images)
    assert torch.allclose(test[0, :, 4, 4], torch.tensor([200, 10, 10]) / 255, atol=1e-4)
    assert torch.allclose(test[1, :, 4, 4], torch.full((3,), 90 / 255), atol=1e-4)


def test_imagefolder_without_split_and_errors(tmp_path):
    root = tmp_path / "flat"
    for cls in ("a", "b"):
        for i in range(5):
            save_png(root / cls / f"{i}.jpg", (6, 6), (i * 40, 0, 0))
    b = load_data(DataConfig(name=f"imagefolder:{root}", input_size=(1, 6, 6), val_fraction=0.0))
    assert len(b.test) == 2 and len(b.train) == 8 and sorted(b.test.labels.tolist()) == [0, 1]

    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(KDError, match="no images"):
        load_data(DataConfig(name=f"imagefolder:{tmp_path / 'empty'}"))
    with pytest.raises(KDError, match="does not exist"):
        load_data(DataConfig(name=f"imagefolder:{tmp_path / 'nope'}"))
    bad = tmp_path / "bad"
    save_png(bad / "x" / "ok.png", (4, 4), (1, 2, 3))
    (bad / "x" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(KDError, match="broken.png"):
        load_data(DataConfig(name=f"imagefolder:{bad}"))


# ------------------------------------------------------------------------------------ system datasets


@pytest.mark.skipif(not FASHION_SYSTEM_DIR.exists(), reason="dataset-fashion-mnist is not installed")
def test_system_fashion_mnist():
    b = load_data(DataConfig(name="fashion-mnist", input_size=(1, 28, 28), val_fraction=0.0))
    assert len(b.train) == 60000 and len(b.test) == 10000 and b.num_classes == 10
