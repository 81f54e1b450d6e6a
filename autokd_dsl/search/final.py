"""`--final-epochs N --final-seeds K`: retrain the search's top candidates and KD longer and report test
accuracy mean ± sd. This is the only place a search reads the test split."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..lang.check import check_text


def retrain(out: Path, candidates: list[tuple[str, str]], teacher, student_name: str, bundle, epochs: int,
            seeds: int, console: Console) -> list[dict]:
    """Train each (label, kd text) with ``seeds`` seeds; finished runs (result.json) are reused."""
    from ..training.student import TrainConfig, make_student, train

    rows = []
    for label, text in candidates:
        block = next(b for b in check_text(text).blocks if b.kind == "distiller")
        accs = []
        for seed in range(seeds):
            run_dir = out / "final" / f"{_slug(label)}-seed{seed}"
            result_file = run_dir / "result.json"
            if result_file.exists():
                accs.append(json.loads(result_file.read_text())["test_accuracy"])
                continue
            student = make_student(student_name, bundle.num_classes, bundle.input_size[0], seed)
            cfg = TrainConfig(epochs=epochs, lr=0.05, batch_size=64, schedule="cosine", seed=seed)
            console.print(f"final training: {label}, seed {seed}, {epochs} epochs")
            result = train(block, teacher, student, bundle, cfg, run_dir, resume=(run_dir / "checkpoint.pt").exists(),
                           console=Console(quiet=True))
            accs.append(result["test_accuracy"])
        mean = statistics.mean(accs)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append({"label": label, "kd": text, "accuracies": accs, "mean": mean, "sd": sd})
    _table(console, rows, epochs, seeds)
    (out / "final.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    _append_report(out / "report.md", rows, epochs, seeds)
    return rows


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in label).strip("-")


def _table(console: Console, rows: list[dict], epochs: int, seeds: int) -> None:
    table = Table("distiller", "test accuracy (mean ± sd)", "per seed", title=f"final: {epochs} epochs × {seeds} seeds")
    for r in rows:
        table.add_row(r["label"], f"{100 * r['mean']:.2f} ± {100 * r['sd']:.2f}",
                      ", ".join(f"{100 * a:.2f}" for a in r["accuracies"]))
    console.print(table)


def _append_report(path: Path, rows: list[dict], epochs: int, seeds: int) -> None:
    lines = ["", f"## Final retraining ({epochs} epochs, {seeds} seeds, test split)", "",
             "| distiller | test accuracy % (mean ± sd) | per seed |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {100 * r['mean']:.2f} ± {100 * r['sd']:.2f} | "
                     + ", ".join(f"{100 * a:.2f}" for a in r["accuracies"]) + " |")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
