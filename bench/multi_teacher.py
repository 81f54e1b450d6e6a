"""Two teachers at proxy scale: does distilling from both beat the better one alone, and which weighting helps?

The setting of ``bench/kd_gain.py``: Fashion-MNIST at 1x16x16, a resnet20 student trained on ``--subset``
class-balanced training images for each of ``--seeds`` seeds (the same subset and initialisation for every method
of a seed), 40 epochs, SGD lr 0.05 with a cosine schedule, offline teacher outputs (each teacher runs once per
subset). Two teachers of different families (default resnet32 and wrn_16_2), trained once with the default recipe
and cached (the cache `autokd-dsl train` uses). Methods:

- ``kd:<teacher>``: library/kd.kd from that teacher alone;
- ``<rule>``: the same KD recipe from both teachers, ``soft: logits ~ teachers.logits -> softmax(4) -> kl ->
  0.9 * 16 * <rule>`` plus ``0.1`` cross-entropy, for each rule: equal (AVER), confidence (CA-MKD's weights),
  agreement (linear CKA on the first batch), balance (loss balancing on the first batch). Every rule's weights
  sum to 1 over the teachers, so the soft term keeps KD's scale.

Validation uses a fixed class-balanced 1000-image slice of the validation split; test accuracy is on the full
test set (10 000 images), of the final weights. Runs are resumable (``--out/<method>/seed<k>``).
Run: ``python bench/multi_teacher.py [--seeds 3] [--subset 500] [--epochs 40]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from kd_gain import fixed_val
from rich.console import Console

from autokd_dsl.api import cache_dir
from autokd_dsl.compiler.build import load_distiller
from autokd_dsl.data import DataConfig, load_data
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.library import library_dir
from autokd_dsl.options import parse_input_size
from autokd_dsl.training.student import TrainConfig, make_student, subset_train, train
from autokd_dsl.training.teacher import default_recipe, load_teacher, teacher_for

RULES = ("equal", "confidence", "agreement", "balance")
TWO = """distiller kd_{rule}(t = 4, alpha = 0.9):
    soft: logits ~ teachers.logits -> softmax(t) -> kl -> alpha * t^2 * {rule}
    hard: logits ~ labels -> ce -> 1 - alpha
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--subset", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--input-size", default="1x16x16")
    ap.add_argument("--teachers", default="resnet32,wrn_16_2")
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--rules", default=",".join(RULES))
    ap.add_argument("--out", type=Path, default=Path("runs/multi_teacher"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only-seed", type=int, default=None, help="train this seed only (to run seeds in parallel "
                                                               "processes; a later run without it reuses them)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    log = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)
    quiet = Console(file=io.StringIO(), soft_wrap=True)
    data_cfg = DataConfig(name="fashion-mnist", input_size=parse_input_size(args.input_size))
    start = time.perf_counter()
    full = fixed_val(load_data(data_cfg), args.val_size)
    names = args.teachers.split(",")
    teachers = []
    for name in names:
        path = teacher_for(name, data_cfg, default_recipe(name, data_cfg.name), cache_dir(), log)
        teachers.append(load_teacher(path, name, full.num_classes, data_cfg.input_size))
    t_accs = [t.kd_teacher["test_accuracy"] for t in teachers]
    teacher_seconds = time.perf_counter() - start

    kd = load_distiller(library_dir() / "kd.kd")
    methods = {f"kd:{name}": (kd, teacher) for name, teacher in zip(names, teachers)}
    for rule in args.rules.split(","):
        methods[rule] = (check_text(TWO.format(rule=rule)).blocks[0], teachers)
    accs: dict[str, list[float]] = {m: [] for m in methods}
    secs: dict[str, float] = {m: 0.0 for m in methods}
    for seed in range(args.seeds) if args.only_seed is None else [args.only_seed]:
        bundle = subset_train(full, args.subset, seed)
        for name, (block, teacher) in methods.items():
            cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=64, schedule="cosine", seed=seed,
                              offline_teacher=True)
            student = make_student(args.student, bundle.num_classes, data_cfg.input_size[0], seed)
            t0 = time.perf_counter()
            result = train(block, teacher, student, bundle, cfg, args.out / name.replace(":", "-") / f"seed{seed}",
                           resume=True, console=quiet, cache_root=cache_dir().parent / "teacher-outputs")
            secs[name] += time.perf_counter() - t0
            accs[name].append(result["test_accuracy"])
            log.print(f"seed {seed} {name:16s} test {result['test_accuracy']:.2%}  "
                      f"best val {result['best_val_accuracy']:.2%}  ({time.perf_counter() - t0:.0f}s)")

    if args.only_seed is not None:
        return
    teachers_text = ", ".join(f"{n} {100 * a:.2f} %" for n, a in zip(names, t_accs))
    print(f"\nFashion-MNIST {args.input_size}; teachers (test accuracy) {teachers_text}; student {args.student} on "
          f"{args.subset} class-balanced training images, {args.epochs} epochs (SGD lr {args.lr}, cosine), "
          f"{args.seeds} seeds; test accuracy of the final weights on the 10 000 test images, mean ± sd.\n")
    singles = [m for m in methods if m.startswith("kd:")]
    best_single = max(singles, key=lambda m: statistics.mean(accs[m]))
    base = statistics.mean(accs[best_single])
    print(f"| method | test acc (%) | Δ vs best single teacher ({best_single}) | per seed | train time (s) |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in accs.items():
        mean = statistics.mean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        label = name if name.startswith("kd:") else f"both, {name}"
        print(f"| {label} | {100 * mean:.2f} ± {100 * sd:.2f} | {100 * (mean - base):+.2f} | "
              + ", ".join(f"{100 * v:.2f}" for v in values) + f" | {secs[name]:.0f} |")
    rules = [m for m in methods if m not in singles]
    if rules:
        best_rule = max(rules, key=lambda m: statistics.mean(accs[m]))
        gain = 100 * (statistics.mean(accs[best_rule]) - base)
        print(f"\nbest two-teacher rule: {best_rule}, {gain:+.2f} points over {best_single} alone "
              f"(goal: at least +0.5): {'met' if gain >= 0.5 else 'missed'}")
    print(f"\nteachers ready in {teacher_seconds:.0f}s (cached after the first run); total "
          f"{time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
