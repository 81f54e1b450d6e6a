"""Training throughput: images/s of resnet110 → resnet20 KD distillation at 3×32×32 (synthetic CIFAR-100-shaped
data), and the ratios between the ways of running it.

Configurations, each timed over the same steps after warm-up steps:

* eager fp32 (the baseline), AMP (bf16 on CPU, bf16 and fp16 on CUDA), channels_last, both;
* the student step alone with the teacher's outputs cached (what the offline teacher cache leaves to do);
* 1 vs 2 data-parallel ranks (torchrun, gloo, one thread each; CPU only), per-rank batch as given.

Run: ``python bench/train_throughput.py [--device cpu|cuda] [--steps 6] [--batch 64]``. The machine's load
(``uptime``) is printed with the figures: on a shared machine the ratios move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autokd_dsl.compiler.build import compile_distiller, load_distiller
from autokd_dsl.models import create_model
from autokd_dsl.training.runtime import Dist, Precision, batch_to, to_runtime
from autokd_dsl.training.student import Distill


def setup(device: torch.device, channels_last: bool, cached: bool, batch: int):
    torch.manual_seed(0)
    teacher = create_model("resnet110", num_classes=100).eval()
    student = create_model("resnet20", num_classes=100)
    loss = compile_distiller(load_distiller(ROOT / "library" / "kd.kd"), teacher, student, input_size=(3, 32, 32))
    to_runtime(teacher, device, channels_last)
    to_runtime(student, device, channels_last)
    loss.to(device)
    cache = None
    if cached:  # the teacher's logits for the batch, as the offline cache hands them over
        specs = loss.tap_specs()["teacher"]
        logits = torch.randn(batch, 100, device=device)

        class Rows:
            def batch(self, index):
                return {spec: logits for spec in specs.values()}

        cache = Rows()
    model = Distill(teacher, student, loss, cache)
    opt = torch.optim.SGD([*student.parameters(), *loss.parameters()], lr=0.05, momentum=0.9)
    return model, opt


def throughput(device: str, amp: str, channels_last: bool, cached: bool, batch: int, steps: int, warmup: int,
               dist: Dist | None = None) -> float:
    """Images per second (over all ranks) of full training steps."""
    dist = dist or Dist()
    dev = torch.device(device)
    model, opt = setup(dev, channels_last, cached, batch)
    wrapped = dist.wrap(model, dev)
    precision = Precision(amp, dev)
    x = batch_to(torch.randn(batch, 3, 32, 32), dev, channels_last)
    y = torch.randint(0, 100, (batch,), device=dev)
    idx = torch.arange(batch)

    def step():
        with precision.autocast():
            _, losses = wrapped(x, labels=y, index=idx, epoch=1)
        precision.step(losses["total"].float(), opt)

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    return dist.world * batch * steps / (time.perf_counter() - start)


def ddp_worker(args) -> None:
    torch.set_num_threads(1)
    dist = Dist.from_env()
    dist.init(torch.device("cpu"))
    rate = throughput("cpu", "off", False, False, args.batch, args.steps, args.warmup, dist)
    if dist.main:
        print(json.dumps({"rate": rate}))


def ddp_rate(args, ranks: int) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), __file__, "--ddp-worker",
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])["rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the single-process rows")
    parser.add_argument("--no-ddp", action="store_true")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker:
        return ddp_worker(args)
    torch.set_num_threads(args.threads)
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(f"resnet110 -> resnet20, KD, batch {args.batch}, 3x32x32, {args.steps} timed steps after {args.warmup}, "
          f"device {args.device}, {args.threads} thread(s), torch {torch.__version__}")
    amps = ["bf16"] if args.device == "cpu" else ["bf16", "fp16"]
    rows = [("eager fp32", "off", False, False), ("channels_last fp32", "off", True, False)]
    rows += [(f"AMP {a}", a, False, False) for a in amps] + [(f"AMP {a} + channels_last", a, True, False) for a in amps]
    rows += [("teacher cached, fp32", "off", False, True)]
    rows += [(f"teacher cached, AMP {a} + channels_last", a, True, True) for a in amps]
    base = None
    print(f"{'configuration':44s} {'images/s':>10s} {'÷ eager fp32':>13s}")
    for label, amp, cl, cached in rows:
        rate = throughput(args.device, amp, cl, cached, args.batch, args.steps, args.warmup)
        base = base or rate
        print(f"{label:44s} {rate:10.1f} {rate / base:13.2f}")
    if args.device == "cpu" and not args.no_ddp:
        one, two = ddp_rate(args, 1), ddp_rate(args, 2)
        print(f"{'DDP 1 rank (torchrun, gloo, 1 thread)':44s} {one:10.1f} {1.0:13.2f}")
        print(f"{'DDP 2 ranks (torchrun, gloo, 1 thread each)':44s} {two:10.1f} {two / one:13.2f}  (÷ 1 rank)")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
