"""One candidate, one meaning, over a whole space: distinct keys compute distinct losses.

Builds the space of ``examples/space.kd`` (or ``--space``) pruned by kinds and by the shapes of resnet110 →
resnet20 at 3x16x16 (randomly initialised: the check is about functions, not training), keys every candidate
by the loss it computes (:meth:`autokd_dsl.search.space.SearchSpace.key`), then evaluates one candidate per key
on *other* random activations (Gaussian, another seed, float64) and counts pairs of keys whose losses agree
there (to 1e-9, relative): there should be none. Prints how many candidates the space holds, how many distinct
functions they compute, the largest groups merged under one key, and the pairs found.

Run: ``python bench/space_equivalence.py [--space examples/space.kd] [--limit N]``.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from autokd_dsl.compiler.build import compile_distiller
from autokd_dsl.data import DataConfig, load_data
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.printer import print_block
from autokd_dsl.models import create_model
from autokd_dsl.search.equivalence import CompilesOn
from autokd_dsl.search.report import candidate_text
from autokd_dsl.search.space import SearchSpace
from autokd_dsl.standalone.attach import TapCapture


def value_elsewhere(probe: CompilesOn, block, seed: int = 7, n: int = 6) -> float:
    """The candidate's total loss on Gaussian activations of the tapped shapes (not the key's activations)."""
    torch.manual_seed(seed)
    loss = compile_distiller(block, probe.teacher, probe.student, probe.input_size).double().train()
    g = torch.Generator().manual_seed(seed)
    kwargs = {}
    for net, taps in ((probe.student, dict(loss.student_taps)), (probe.teacher, dict(loss.teacher_taps))):
        cap = TapCapture(net, taps, detach=True)
        with torch.no_grad():
            net.eval()(torch.zeros(1, *probe.input_size))
        cap.remove()
        for name, value in cap.values.items():
            kwargs[name] = torch.randn((n, *value.shape[1:]), generator=g, dtype=torch.float64) * 2 + 0.5
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        return float(loss(**kwargs, labels=torch.randint(0, 10, (n,), generator=g), epoch=1)["total"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", type=Path, default=ROOT / "examples" / "space.kd")
    ap.add_argument("--limit", type=int, default=None, help="only the first N candidates (depth first)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    bundle = load_data(DataConfig(name="digits", input_size=(3, 16, 16), train_subset=64))
    torch.manual_seed(0)
    teacher = create_model("resnet110", num_classes=10, in_chans=3).eval()
    probe = CompilesOn(teacher, "resnet110", "resnet20", bundle)
    block = next(b for b in check_text(args.space.read_text(), str(args.space)).blocks if b.kind == "space")
    kinds_only = SearchSpace(block)
    space = SearchSpace(block, term_fits=probe, term_values=probe.values)
    groups: dict[str, list] = collections.defaultdict(list)
    for i, path in enumerate(space.paths()):
        if args.limit is not None and i >= args.limit:
            break
        groups[space.key(path)].append(path)
    candidates = sum(len(g) for g in groups.values())
    print(f"{args.space.name}: {kinds_only.size()} kind-valid candidates, {candidates} also shape-valid for "
          f"resnet110 → resnet20 at 3x16x16{' (first ' + str(args.limit) + ')' if args.limit else ''}; "
          f"{len(groups)} distinct functions ({candidates - len(groups)} candidates merged under another's key)")
    values = sorted((value_elsewhere(probe, space.candidate(paths[0])), key) for key, paths in groups.items())
    clashes = [(a, b) for a, b in zip(values, values[1:]) if abs(a[0] - b[0]) <= 1e-9 * max(1.0, abs(a[0]))]
    print(f"pairs of distinct keys with the same loss on other random activations: {len(clashes)}")
    for (va, ka), (_, kb) in clashes[:10]:
        print(f"  {va:.6g}: {candidate_text(print_block(space.candidate(groups[ka][0])))}  ==  "
              f"{candidate_text(print_block(space.candidate(groups[kb][0])))}")
    print("largest groups merged under one key:")
    for paths in sorted(groups.values(), key=len, reverse=True)[:5]:
        texts = [print_block(space.candidate(p)).splitlines()[-1].strip() for p in paths[:3]]
        print(f"  {len(paths)} candidates, e.g. " + " | ".join(texts))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
