"""KD gain at proxy scale: does distillation beat training from scratch on a few hundred images?

Fashion-MNIST at 1x16x16; a resnet56 teacher trained once with the default recipe and cached (the same cache
`autokd-dsl train` uses; it must reach >= 90 % test accuracy); a resnet20 student trained on ``--subset``
class-balanced training images for each of ``--seeds`` seeds. Every method sees the same subset and the same
student initialisation for a given seed. Methods: scratch (a cross-entropy-only distiller), and the library's
kd, at, dist and fitnet (a method whose file is missing is skipped, and the output says so). The teacher's outputs
are cached once per subset (augmentation is off), so no teacher inference runs during student training.
Validation uses a fixed class-balanced 1000-image slice of the validation split; test accuracy is on the full
official test set (10 000 images), of the final weights.

Runs are resumable: each lives in ``--out/<method>/seed<k>`` and a rerun continues or reuses them.
Run: ``python bench/kd_gain.py [--seeds 3] [--subset 500] [--epochs 40]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from rich.console import Console

from autokd_dsl.api import cache_dir
from autokd_dsl.compiler.build import load_distiller
from autokd_dsl.data import DataConfig, Split, load_data
from autokd_dsl.data.core import balanced_subset
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.library import library_dir
from autokd_dsl.options import parse_input_size
from autokd_dsl.training.student import TrainConfig, make_student, subset_train, train
from autokd_dsl.training.teacher import default_recipe, load_teacher, teacher_for

SCRATCH = "distiller scratch:\n    ce: logits ~ labels -> ce -> 1\n"
METHODS = ("scratch", "kd", "at", "dist", "fitnet")
MIN_TEACHER_ACC = 0.90


def distiller(method: str):
    if method == "scratch":
        return check_text(SCRATCH, "<scratch>").block("scratch")
    path = library_dir() / f"{method}.kd"
    return load_distiller(path) if path.is_file() else None


def fixed_val(bundle, size: int):
    """A class-balanced slice of the validation split, the same for every seed and method."""
    if size >= len(bundle.val):
        return bundle
    sel = torch.from_numpy(balanced_subset(bundle.val.labels.numpy(), size, np.random.default_rng(0)))
    v = bundle.val
    val = Split(v.images[sel], v.labels[sel], torch.arange(size), None if v.origin is None else v.origin[sel])
    return dataclasses.replace(bundle, val=val)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--subset", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--input-size", default="1x16x16")
    ap.add_argument("--teacher", default="resnet56")
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=Path("runs/kd_gain"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny models "
                                                            "on a shared 2-core machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    log = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)
    quiet = Console(file=io.StringIO(), soft_wrap=True)
    data_cfg = DataConfig(name="fashion-mnist", input_size=parse_input_size(args.input_size))
    start = time.perf_counter()
    path = teacher_for(args.teacher, data_cfg, default_recipe(args.teacher, data_cfg.name), cache_dir(), log)
    full = fixed_val(load_data(data_cfg), args.val_size)
    teacher = load_teacher(path, args.teacher, full.num_classes, data_cfg.input_size)
    t_acc = teacher.kd_teacher["test_accuracy"]
    if t_acc < MIN_TEACHER_ACC:
        log.print(f"warning: teacher test accuracy {t_acc:.2%} is below {MIN_TEACHER_ACC:.0%}")
    teacher_seconds = time.perf_counter() - start

    methods, skipped = {}, []
    for name in args.methods.split(","):
        block = distiller(name)
        if block is None:
            skipped.append(name)
        else:
            methods[name] = block
    accs: dict[str, list[float]] = {m: [] for m in methods}
    secs: dict[str, float] = {m: 0.0 for m in methods}
    for seed in range(args.seeds):
        bundle = subset_train(full, args.subset, seed)
        for name, block in methods.items():
            cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=64, schedule="cosine", seed=seed,
                              offline_teacher=True)
            student = make_student(args.student, bundle.num_classes, data_cfg.input_size[0], seed)
            t0 = time.perf_counter()
            result = train(block, teacher, student, bundle, cfg, args.out / name / f"seed{seed}", resume=True,
                           console=quiet, cache_root=cache_dir().parent / "teacher-outputs")
            secs[name] += time.perf_counter() - t0
            accs[name].append(result["test_accuracy"])
            log.print(f"seed {seed} {name:8s} test {result['test_accuracy']:.2%}  "
                      f"best val {result['best_val_accuracy']:.2%}  ({time.perf_counter() - t0:.0f}s)")

    print(f"\nFashion-MNIST {args.input_size}; teacher {args.teacher} test {t_acc:.2%}; student {args.student} on "
          f"{args.subset} class-balanced training images, {args.epochs} epochs (SGD lr {args.lr}, cosine), "
          f"{args.seeds} seeds; test accuracy of the final weights on the 10 000 test images, mean ± sd.\n")
    print("| method | test acc (%) | Δ vs scratch | per seed | train time (s) |")
    print("| --- | --- | --- | --- | --- |")
    base = statistics.mean(accs["scratch"]) if accs.get("scratch") else None
    for name, values in accs.items():
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        delta = f"{100 * (mean - base):+.2f}" if base is not None and name != "scratch" else "-"
        seeds = ", ".join(f"{100 * v:.2f}" for v in values)
        print(f"| {name} | {100 * mean:.2f} ± {100 * sd:.2f} | {delta} | {seeds} | {secs[name]:.0f} |")
    if skipped:
        print(f"\nskipped (no library/<name>.kd yet): {', '.join(skipped)}")
    print(f"\nteacher ready in {teacher_seconds:.0f}s (cached after the first run); total "
          f"{time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
