"""A finished search's outputs: best.kd, evaluations.csv, the tree (GraphML), report.md and a PNG."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .export import export_tree
from .store import Store

REWARD_TEXT = ("reward = -(0.5 × validation cross-entropy + 0.5 × representation gap), larger is better; "
               "gap = MSE(P·student embedding, teacher embedding) / Var(teacher embedding), P a fixed random "
               "projection where widths differ")


def write_outputs(out: Path, store: Store, space, strategy, cfg, baseline: dict | None, console: Console) -> dict:
    rows = store.rows()
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: -r["reward"])
    _csv(out / "evaluations.csv", rows)
    if hasattr(strategy, "tree_graph"):
        export_tree(strategy.tree_graph(), out / "tree.graphml")
    _plot(out / "best_reward.png", rows, baseline)
    best = ok[0] if ok else None
    if best is not None:
        header = (f"# Found by `autokd-dsl search {Path(cfg.space_file).name}` ({cfg.strategy}, seed {cfg.seed}, "
                  f"{len(rows)} candidates): {cfg.teacher_text()}, student {cfg.student}, data {cfg.data}.\n"
                  f"# reward {best['reward']:.4f} (validation CE {best['ce']:.4f}, representation gap "
                  f"{best['gap']:.4f})" + (f"; {_base(cfg)} under the same proxy: {baseline['reward']:.4f}"
                                          if baseline and baseline.get("reward") is not None else "") + "\n")
        (out / "best.kd").write_text(header + best["kd"], encoding="utf-8")
    _report(out / "report.md", rows, ok, cfg, baseline)
    _leaderboard(console, ok, baseline, cfg)
    rejected = [r for r in rows if r["status"] != "ok"]
    if best is not None:
        console.print(f"best reward {best['reward']:.4f} → {out / 'best.kd'}" +
                      (f" ({_base(cfg)}: {baseline['reward']:.4f})" if baseline and baseline.get("reward") is not None
                       else ""))
    else:
        console.print("no candidate trained successfully; see evaluations.csv for the rejection reasons")
    return {"best": best, "rows": len(rows), "rejected": len(rejected), "baseline": baseline}


def _csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seq", "key", "kd", "reward", "status", "reason", "ce", "gap", "seconds", "path"])
        for r in rows:
            writer.writerow([r["seq"], r["key"], r["kd"].strip(), r["reward"], r["status"], r["reason"],
                             r["ce"], r["gap"], round(r["seconds"] or 0.0, 3), r["path"]])


def _plot(path: Path, rows: list[dict], baseline: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best, curve = None, []
    for r in rows:
        if r["status"] == "ok" and (best is None or r["reward"] > best):
            best = r["reward"]
        curve.append(best)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = [i + 1 for i, v in enumerate(curve) if v is not None]
    ax.plot(xs, [v for v in curve if v is not None], drawstyle="steps-post", label="best so far")
    if baseline and baseline.get("reward") is not None:
        ax.axhline(baseline["reward"], color="grey", linestyle="--", label="KD baseline")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("reward")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _first_line(kd: str) -> str:
    lines = [ln.strip() for ln in kd.splitlines()[1:] if ln.strip()]
    return " ; ".join(lines)


def _report(path: Path, rows, ok, cfg, baseline) -> None:
    lines = [f"# Search report: {Path(cfg.space_file).name}", "",
             f"- {cfg.teacher_text()}, student {cfg.student}, data {cfg.data} at {'x'.join(map(str, cfg.input_size))}",
             f"- strategy {cfg.strategy}"
             + (f" (UCT c = {cfg.c}, {cfg.rollout} rollouts)" if cfg.strategy == "mcts" else "")
             + f", budget {cfg.budget}, seed {cfg.seed}, workers {cfg.workers}",
             f"- proxy settings: `{json.dumps(cfg.proxy.model_dump())}`",
             f"- {REWARD_TEXT}", f"- evaluated {len(rows)}, trained {len(ok)}, rejected {len(rows) - len(ok)}", ""]
    if baseline:
        lines += [f"{_base(cfg)} baseline under the same proxy: reward {_fmt(baseline['reward'])} "
                  f"(CE {_fmt(baseline['ce'])}, gap {_fmt(baseline['gap'])})", ""]
    lines += ["| rank | reward | val CE | gap | distiller |", "|---|---|---|---|---|"]
    for i, r in enumerate(ok[:10], 1):
        lines.append(f"| {i} | {r['reward']:.4f} | {r['ce']:.4f} | {r['gap']:.4f} | `{_first_line(r['kd'])}` |")
    reasons: dict[str, int] = {}
    for r in rows:
        if r["status"] != "ok":
            reasons[r["reason"].split(":")[0]] = reasons.get(r["reason"].split(":")[0], 0) + 1
    if reasons:
        lines += ["", "Rejections: " + ", ".join(f"{k} ({v})" for k, v in sorted(reasons.items()))]
    lines += ["", "![best reward so far](best_reward.png)", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _fmt(value) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _leaderboard(console: Console, ok: list[dict], baseline: dict | None, cfg) -> None:
    table = Table("rank", "reward", "val CE", "gap", "distiller", title="leaderboard")
    for i, r in enumerate(ok[:5], 1):
        table.add_row(str(i), f"{r['reward']:.4f}", f"{r['ce']:.4f}", f"{r['gap']:.4f}", _first_line(r["kd"]))
    if baseline and baseline.get("reward") is not None:
        table.add_row(_base(cfg), f"{baseline['reward']:.4f}", f"{baseline['ce']:.4f}", f"{baseline['gap']:.4f}",
                      f"library/{_base(cfg).lower()}.kd")
    console.print(table)


def _base(cfg) -> str:
    """The baseline's name: KD, or AVER (KD from each teacher, equal weights) with several teachers."""
    return "AVER" if len(cfg.teachers) > 1 else "KD"
