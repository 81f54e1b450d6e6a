"""Compile overhead (P1): forward + backward time of a compiled loss ÷ a hand-written eager PyTorch version.

The activations come once from the real models (resnet110 teacher → resnet20 student, CIFAR-100 heads,
batch 64, 3×32×32 inputs, BatchNorm statistics calibrated as after training); only the loss is timed: forward
and backward from the student activations (leaf tensors that require grad, as they would inside the
student's graph) with the teacher activations detached. Compiled and eager runs are interleaved in blocks
(alternating which goes first) and the table reports the median over rounds of each block's mean, so both
see the same machine load. With one thread on the CPU the clock is the thread's CPU time
(``time.thread_time``), so that waiting for a core on a shared machine does not count; otherwise wall time.

The eager versions are written from the papers, the way a person writes them for a training script; for the
multi-term distiller they are written naively, one loss function per term, each recomputing what it needs
(the attention maps, the softmax), which is what the compiler's shared subexpressions save.

Goals: median ratio ≤ 1.00 on every distiller and ≤ 0.85 on the multi-term one.

Run: ``python bench/compile_overhead.py [--rounds 40] [--runs 10] [--threads 1] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autokd_dsl.compiler.build import compile_distiller, load_distiller, pick_distiller
from autokd_dsl.compiler.taps import probe
from autokd_dsl.lang.check import check_text
from autokd_dsl.models import create_model

SP = """distiller sp:
    ce: logits ~ labels -> ce -> 1
    sp: stage3 -> batch_gram -> mse -> 3000
"""

DIST = """distiller dist(t = 4):
    ce: logits ~ labels -> ce -> 1
    inter: logits -> softmax(t) -> pearson -> t^2
    intra: logits -> softmax(t) -> transpose -> pearson -> t^2
"""

# four terms: two share `stage3 -> attention(2)`, two share `logits -> softmax(t)`; plus the labels
MULTI = """distiller multi(t = 4):
    ce: logits ~ labels -> ce -> 1
    at: stage3 -> attention(2) -> mse -> 1000
    at_cos: stage3 -> attention(2) -> cosine -> 10
    inter: logits -> softmax(t) -> pearson -> t^2
    intra: logits -> softmax(t) -> transpose -> pearson -> t^2
"""

GOALS = {"multi": 0.85}


# ---- hand-written eager losses (the papers' formulas) --------------------------------------------------


def eager_kd(a, y, t=4.0, alpha=0.9):
    soft = F.kl_div(F.log_softmax(a["s_logits"] / t, 1), F.softmax(a["t_logits"] / t, 1), reduction="batchmean")
    return alpha * t * t * soft + (1 - alpha) * F.cross_entropy(a["s_logits"], y)


def at_map(f, p=2):
    return F.normalize(f.pow(p).mean(1).view(f.size(0), -1))


def eager_at(a, y, beta=1000.0):
    at = sum((at_map(a[f"s_stage{k}"]) - at_map(a[f"t_stage{k}"])).pow(2).mean() for k in (1, 2, 3))
    return F.cross_entropy(a["s_logits"], y) + beta * at


def sp_gram(f):
    f = f.view(f.size(0), -1)
    return F.normalize(f @ f.t(), p=2, dim=1)


def eager_sp(a, y, gamma=3000.0):
    g_s, g_t = sp_gram(a["s_stage3"]), sp_gram(a["t_stage3"])
    return F.cross_entropy(a["s_logits"], y) + gamma * (g_s - g_t).pow(2).mean()


def pearson_distance(a, b, eps=1e-8):  # DIST's code: the centred rows' products over ‖a‖‖b‖ + eps
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return 1 - ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)).mean()


def eager_dist(a, y, t=4.0):
    p_s, p_t = F.softmax(a["s_logits"] / t, 1), F.softmax(a["t_logits"] / t, 1)
    inter = t * t * pearson_distance(p_s, p_t)
    intra = t * t * pearson_distance(p_s.t(), p_t.t())
    return F.cross_entropy(a["s_logits"], y) + inter + intra


def loss_at_mse(s, t):
    return 1000 * (at_map(s) - at_map(t)).pow(2).mean()


def loss_at_cos(s, t):
    return 10 * (1 - F.cosine_similarity(at_map(s), at_map(t), dim=1).mean())


def loss_inter(s, t, temp=4.0):
    return temp * temp * pearson_distance(F.softmax(s / temp, 1), F.softmax(t / temp, 1))


def loss_intra(s, t, temp=4.0):
    return temp * temp * pearson_distance(F.softmax(s / temp, 1).t(), F.softmax(t / temp, 1).t())


def eager_multi(a, y):
    s3, t3, s, t = a["s_stage3"], a["t_stage3"], a["s_logits"], a["t_logits"]
    return (F.cross_entropy(s, y) + loss_at_mse(s3, t3) + loss_at_cos(s3, t3) + loss_inter(s, t)
            + loss_intra(s, t))


# ---- setup ------------------------------------------------------------------------------------------


def distillers():
    """(name, checked distiller, eager loss) for every row of the table."""
    inline = {name: pick_distiller(check_text(text), None, name) for name, text in
              (("sp", SP), ("dist", DIST), ("multi", MULTI))}
    return [
        ("kd", load_distiller(ROOT / "library" / "kd.kd"), eager_kd),
        ("at", load_distiller(ROOT / "library" / "at.kd"), eager_at),
        ("sp", inline["sp"], eager_sp),
        ("dist", inline["dist"], eager_dist),
        ("multi", inline["multi"], eager_multi),
    ]


def calibrate(model, x, batches: int = 3):
    """Set BatchNorm running statistics from a few batches, as after training.

    A freshly initialised resnet110 in eval mode has unit running variances, and its residual sums grow to
    logits of ~1e8, far from anything a trained teacher gives (and slow: exp underflows on them).
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for k in range(batches):
            model(x + 0.1 * k * torch.randn_like(x))
    model.eval()


def activations(teacher, student, loss, x):
    """The tapped activations of one real batch, keyed by the loss's input names."""
    acts = probe(student, loss.student_taps, x, "resnet20")
    acts.update(probe(teacher, loss.teacher_taps, x, "resnet110"))
    return acts


def clock(device: str, threads: int):
    """The thread's CPU time for one CPU thread (a busy machine's waits left out), else wall time."""
    return time.thread_time if device == "cpu" and threads == 1 else time.perf_counter


def time_block(fn, acts, labels, runs: int, now=time.perf_counter) -> float:
    """Mean seconds of ``runs`` consecutive forward + backward passes of ``fn``, read on the clock ``now``."""
    inputs = [{k: v.detach().requires_grad_(k.startswith("s_")) for k, v in acts.items()} for _ in range(runs)]
    sync = torch.cuda.synchronize if labels.is_cuda else (lambda: None)
    sync()
    start = now()
    for a in inputs:
        fn(a, labels).backward()
    sync()
    return (now() - start) / runs


def measure(loss, eager, acts, labels, rounds: int, runs: int, now=time.perf_counter):
    """Median over rounds of the mean time per run of (compiled, eager), and the two loss values.

    Each round times a block of ``runs`` passes of each version, alternating which goes first: blocks
    keep the cost of switching between the two (caches, allocator) out of the numbers, alternation and
    rounds spread the machine's load evenly over both.
    """
    def compiled(a, y):
        return loss(**a, labels=y)["total"]

    with torch.no_grad():
        values = (float(compiled(acts, labels)), float(eager(acts, labels)))
    times = {compiled: [], eager: []}
    for i in range(rounds + 2):
        for fn in (compiled, eager) if i % 2 == 0 else (eager, compiled):
            elapsed = time_block(fn, acts, labels, runs, now)
            if i >= 2:  # warm-up rounds
                times[fn].append(elapsed)
    return statistics.median(times[compiled]), statistics.median(times[eager]), values


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (the median is over them)")
    parser.add_argument("--runs", type=int, default=10, help="passes per timed block")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps CPU timings steady)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher, student = create_model("resnet110", num_classes=100), create_model("resnet20", num_classes=100)
    x = torch.randn(args.batch, 3, 32, 32)
    calibrate(teacher, x)
    calibrate(student, x)
    labels = torch.randint(0, 100, (args.batch,))
    rows = []
    for name, block, eager in distillers():
        loss = compile_distiller(block, teacher, student, (3, 32, 32))
        acts = activations(teacher, student, loss, x)
        acts = {k: v.to(args.device) for k, v in acts.items()}
        loss = loss.to(args.device)
        compiled_s, eager_s, values = measure(loss, eager, acts, labels.to(args.device), args.rounds, args.runs,
                                              clock(args.device, args.threads))
        if abs(values[0] - values[1]) > 1e-4 * max(1.0, abs(values[1])):
            raise SystemExit(f"{name}: compiled loss {values[0]} differs from the eager one {values[1]}")
        rows.append((name, compiled_s, eager_s))
    print_table(rows, args)


def print_table(rows, args) -> None:
    kind = "thread CPU time" if clock(args.device, args.threads) is time.thread_time else "wall time"
    print(f"resnet110 → resnet20, batch {args.batch}, 3×32×32, {args.device}, {args.threads} thread(s), "
          f"median over {args.rounds} interleaved rounds of {args.runs} fwd+bwd passes each ({kind})\n")
    print("| distiller | compiled (ms) | eager (ms) | compiled ÷ eager | goal |")
    print("|---|---:|---:|---:|---:|")
    for name, c, e in rows:
        goal = GOALS.get(name, 1.00)
        mark = "ok" if c / e <= goal else "MISSED"
        print(f"| {name} | {c * 1e3:.3f} | {e * 1e3:.3f} | {c / e:.3f} | ≤ {goal:.2f} {mark} |")
    ratios = [c / e for _, c, e in rows]
    print(f"\nmedian ratio over distillers: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
