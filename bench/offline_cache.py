"""P2: what the offline teacher cache buys per candidate.

Evaluates the same candidates with teacher outputs cached once (the default) and with live teacher inference
on every batch, for resnet110 → resnet20 on digits at 16×16, and prints, measured in this one run:

- speed-up = time per candidate (live) ÷ time per candidate (cached);
- the bound 1 + t(teacher forward) ÷ t(student step) on the same batches (a student step = forward, loss,
  backward, optimiser step), i.e. the speed-up if the teacher forward were the only work removed;
- speed-up ÷ bound (goal ≥ 0.9).

The teacher is random-initialised with BatchNorm statistics calibrated on the data (its weights do not
change the time). Run: `python bench/offline_cache.py`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autokd_dsl.data import DataConfig, load_data
from autokd_dsl.lang.check import check_text
from autokd_dsl.models import create_model
from autokd_dsl.search.evaluate import ProxyContext, ProxySettings, evaluate
from autokd_dsl.search.space import SearchSpace

CANDIDATES = """
space bench:
    ce: logits ~ labels -> ce -> 1
    kd: stage3 | logits -> (none | spatial_attention) -> (mse | cosine) -> 1
"""


def teacher_vs_student(teacher, student, x, y) -> tuple[float, float]:
    """Median seconds of one teacher forward and of one student training step on the batch ``x``."""
    opt = torch.optim.SGD(student.parameters(), lr=0.01)
    t_times, s_times = [], []
    for _ in range(15):
        start = time.perf_counter()
        with torch.no_grad():
            teacher(x)
        t_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        s_times.append(time.perf_counter() - start)
    return statistics.median(t_times[3:]), statistics.median(s_times[3:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="resnet110")
    ap.add_argument("--student", default="resnet20")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    bundle = load_data(DataConfig(name="digits", input_size=(3, 16, 16), augment=False))
    teacher = create_model(args.teacher, num_classes=10)
    with torch.no_grad():  # calibrate BatchNorm so the random teacher's outputs have a sane scale
        teacher.train()
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the calibration batches
        for start in range(0, len(bundle.train), 256):
            teacher(bundle.train.images[start:start + 256])
    teacher.eval()
    space = SearchSpace(check_text(CANDIDATES).blocks[0])
    blocks = [space.candidate(p) for p in space.paths()]
    ctxs = {offline: ProxyContext(space, teacher, args.student, bundle,
                                  ProxySettings(epochs=1, subset=0.5, offline_teacher=offline),
                                  teacher_name=args.teacher) for offline in (True, False)}
    per: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
        for block in blocks:
            for offline, ctx in ctxs.items():
                start = time.perf_counter()
                outcome = evaluate(block, ctx)
                per[offline].append(time.perf_counter() - start)
                assert outcome.status == "ok", outcome.reason
    times = {k: statistics.median(v) for k, v in per.items()}
    student = create_model(args.student, num_classes=10).train()
    x, y = bundle.train.images[:64], bundle.train.labels[:64]
    t_fwd, s_step = teacher_vs_student(teacher, student, x, y)
    speedup = times[False] / times[True]
    bound = 1 + t_fwd / s_step
    print(f"{args.teacher} → {args.student}, digits 3x16x16, {len(blocks)} candidates × {args.repeats}, "
          f"1 proxy epoch on {int(0.5 * len(bundle.train))} images, batch 64, {torch.get_num_threads()} threads")
    print("| measure | value |\n|---|---|")
    print(f"| time per candidate, cached teacher | {times[True]:.2f} s |")
    print(f"| time per candidate, live teacher | {times[False]:.2f} s |")
    print(f"| speed-up (live ÷ cached) | {speedup:.2f} |")
    print(f"| t(teacher forward) / t(student step), batch 64 | {t_fwd * 1000:.1f} ms / {s_step * 1000:.1f} ms |")
    print(f"| bound 1 + t_teacher / t_student | {bound:.2f} |")
    print(f"| speed-up ÷ bound (goal ≥ 0.9) | {speedup / bound:.2f} |")


if __name__ == "__main__":
    main()
