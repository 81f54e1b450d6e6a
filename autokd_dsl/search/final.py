"""`--final-epochs N --final-seeds K`: retrain the search's top candidates and every baseline longer, with the
same seeds, and report test accuracy mean ± sd and each one's difference to the best baseline. This is the only
place a search reads the test split.

The retraining is also the search's last and longest look: the winner is the top candidate with the best mean
*validation* accuracy after it (:func:`final_pick`), never chosen by the test split."""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..lang.check import check_text


def retrain(out: Path, candidates: list[tuple[str, str]], teacher, student_name: str, bundle, epochs: int,
            seeds: int, console: Console, baselines: list[str] = ()) -> list[dict]:
    """Train each (label, kd text) with ``seeds`` seeds; finished runs (result.json) are reused.

    ``baselines`` names the labels that are baselines: every row gets ``delta``, its mean minus the best
    baseline's mean (None without baselines).
    """
    from ..training.student import TrainConfig, make_student, train

    rows = []
    for label, text in candidates:
        block = next(b for b in check_text(text).blocks if b.kind == "distiller")
        accs, vals = [], []
        for seed in range(seeds):
            run_dir = out / "final" / f"{_slug(label)}-{hashlib.sha256(text.encode()).hexdigest()[:8]}-seed{seed}"
            result_file = run_dir / "result.json"
            if result_file.exists():
                done = json.loads(result_file.read_text())
                accs.append(done["test_accuracy"])
                vals.append(done["final_val_accuracy"])
                continue
            student = make_student(student_name, bundle.num_classes, bundle.input_size[0], seed)
            cfg = TrainConfig(epochs=epochs, lr=0.05, batch_size=64, schedule="cosine", seed=seed)
            console.print(f"final training: {label}, seed {seed}, {epochs} epochs")
            result = train(block, teacher, student, bundle, cfg, run_dir, resume=(run_dir / "checkpoint.pt").exists(),
                           console=Console(quiet=True))
            accs.append(result["test_accuracy"])
            vals.append(result["final_val_accuracy"])
        mean = statistics.mean(accs)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append({"label": label, "kd": text, "accuracies": accs, "mean": mean, "sd": sd,
                     "val_accuracies": vals, "val": statistics.mean(vals), "baseline": label in baselines})
    best = max((r["mean"] for r in rows if r["baseline"]), default=None)
    for r in rows:
        r["delta"] = None if best is None else r["mean"] - best
    _table(console, rows, epochs, seeds)
    (out / "final.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    _append_report(out / "report.md", rows, epochs, seeds)
    return rows


def final_pick(rows: list[dict]) -> dict | None:
    """The retrained candidate (not a baseline) with the best mean validation accuracy; on a tie the one the
    proxy reward ranked higher (rows come in reward order)."""
    candidates = [r for r in rows if not r["baseline"] and r["val"] == r["val"]]  # NaN: no validation split
    return max(candidates, key=lambda r: r["val"], default=None)


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in label).strip("-")


def _delta(r: dict) -> str:
    return "-" if r["delta"] is None else f"{100 * r['delta']:+.2f}"


def _table(console: Console, rows: list[dict], epochs: int, seeds: int) -> None:
    from .report import candidate_text

    table = Table("", "distiller", "val. accuracy %", "test accuracy % (mean ± sd)", "Δ best baseline", "per seed",
                  title=f"final: {epochs} epochs × {seeds} seeds (same seeds for all)")
    for r in rows:
        table.add_row(r["label"], candidate_text(r["kd"]), f"{100 * r['val']:.2f}",
                      f"{100 * r['mean']:.2f} ± {100 * r['sd']:.2f}", _delta(r),
                      ", ".join(f"{100 * a:.2f}" for a in r["accuracies"]))
    console.print(table)


def _append_report(path: Path, rows: list[dict], epochs: int, seeds: int) -> None:
    from .report import candidate_text

    lines = ["", f"## Final retraining ({epochs} epochs, {seeds} seeds, the same for all)", "",
             "The winner (best.kd) is the top candidate with the best mean validation accuracy here; the test split "
             "is only reported.", "",
             "| | distiller | val. accuracy % | test accuracy % (mean ± sd) | Δ best baseline | per seed |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | `{candidate_text(r['kd'])}` | {100 * r['val']:.2f} | "
                     f"{100 * r['mean']:.2f} ± {100 * r['sd']:.2f} | "
                     f"{_delta(r)} | " + ", ".join(f"{100 * a:.2f}" for a in r["accuracies"]) + " |")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
