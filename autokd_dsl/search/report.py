"""A finished search's outputs: best.kd, evaluations.csv, the tree (GraphML), report.md and a PNG.

Every candidate is shown by its full `.kd` text with its parameter values, next to its reward, the reward's
parts (validation cross-entropy, representation gap), its validation accuracy and its seconds, and next to the
baselines scored under the same proxy.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .evaluate import REWARDS
from .export import export_tree
from .store import Store

GAP_TEXT = ("gap = MSE(P·student embedding, teacher embedding) / Var(teacher embedding), P a fixed random "
            "projection where widths differ (with several teachers, the mean of each teacher's gap)")


def teachers_text(names) -> str:
    """How a report names the teachers: ``resnet8`` for one, ``resnet8 (1), resnet14 (2)`` for several.

    >>> teachers_text(["resnet8", "resnet14"])
    'resnet8 (1), resnet14 (2)'
    """
    names = list(names) if isinstance(names, (list, tuple)) else [names]
    return names[0] if len(names) == 1 else ", ".join(f"{n} ({k})" for k, n in enumerate(names, 1))


def teachers_phrase(cfg) -> str:
    """``teacher resnet8``, or ``teachers resnet8 (1), resnet14 (2)``."""
    several = isinstance(cfg.teacher, (list, tuple)) and len(cfg.teacher) > 1
    return f"teacher{'s' if several else ''} {teachers_text(cfg.teacher)}"


def candidate_text(kd: str) -> str:
    """One line for a candidate: its parameters (if any) and its terms.

    >>> candidate_text("distiller mine(t = 4):\\n    ce: logits ~ labels -> ce -> 1\\n"
    ...                "    kd: logits -> kl(t = t) -> 2\\n")
    'mine(t = 4): ce: logits ~ labels -> ce -> 1 ; kd: logits -> kl(t = t) -> 2'
    >>> candidate_text("distiller autokd:\\n    kd: stage3 -> mse -> 5\\n")
    'kd: stage3 -> mse -> 5'
    """
    lines = [ln.strip() for ln in kd.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    header, terms = lines[0], " ; ".join(lines[1:])
    name = header.removeprefix("distiller ").rstrip(":")
    return f"{name}: {terms}" if "(" in name else terms


def leaders(rows: list[dict]) -> list[dict]:
    """Each trained candidate once, by its highest rung, best first (the highest rung first, then the reward).

    The row gets ``seconds_total`` (all its rungs) and ``rungs`` (how many it was scored at).
    """
    by_key: dict[str, list[dict]] = {}
    for r in rows:
        by_key.setdefault(r["key"], []).append(r)
    out = []
    for group in by_key.values():
        top = max(group, key=lambda r: r["rung"] or 0)
        if top["status"] == "ok":
            out.append(dict(top, seconds_total=sum(r["seconds"] or 0.0 for r in group), rungs=len(group)))
    return sorted(out, key=lambda r: (-(r["rung"] or 0), -r["reward"], r["seq"]))


def write_outputs(out: Path, store: Store, space, strategy, cfg, baselines: list[dict], console: Console) -> dict:
    rows = store.rows()
    ranked = leaders(rows)
    rejected = _rejected(rows)
    _csv(out / "evaluations.csv", store.rows(baseline=None))
    if hasattr(strategy, "tree_graph"):
        export_tree(strategy.tree_graph(), out / "tree.graphml")
    _plot(out / "best_reward.png", rows, baselines, cfg)
    best = ranked[0] if ranked else None
    scored = [b for b in baselines if b["row"] is not None and b["row"]["status"] == "ok"]
    against = "; ".join(f"{b['label']} {b['row']['reward']:.4f}" for b in scored)
    if best is not None:
        write_best(out, best, rows, cfg, baselines)
    _report(out / "report.md", rows, ranked, rejected, cfg, baselines)
    _leaderboard(console, ranked, baselines, f"leaderboard ({teachers_phrase(cfg)} → {cfg.student})")
    if best is not None:
        console.print(f"best reward {best['reward']:.4f} → {out / 'best.kd'}"
                      + (f" ({against})" if against else ""))
        above = baselines_above(best, baselines)
        if above:
            console.print(f"note: {above}", soft_wrap=True, markup=False, highlight=False)
    else:
        console.print("no candidate trained successfully; see report.md for the rejection reasons")
    return {"best": best, "leaders": ranked, "rows": len(rows), "rejected": len(rejected), "baselines": baselines}


def baselines_above(best: dict, baselines: list[dict]) -> str:
    """A sentence naming the baselines whose reward, after as many proxy epochs, is above the best candidate's
    (empty when there are none): the space then found nothing the proxy rates above a method the user has."""
    above = [b for b in baselines if b["row"] is not None and b["row"]["status"] == "ok"
             and b["row"]["epochs"] == best["epochs"] and b["row"]["reward"] > best["reward"]]
    if not above:
        return ""
    names = ", ".join(f"{b['label']} ({b['row']['reward']:.4f})" for b in above)
    return (f"under the same proxy {names} scored above every candidate of the space (best {best['reward']:.4f}); "
            "best.kd holds the best candidate, but the baseline is the stronger choice by this reward")


def write_best(out: Path, best: dict, rows: list[dict], cfg, baselines: list[dict], chosen_by: str = "") -> None:
    """best.kd: the candidate's program after a header saying how it was found (``chosen_by``: an extra line)."""
    scored = [b for b in baselines if b["row"] is not None and b["row"]["status"] == "ok"]
    against = "; ".join(f"{b['label']} {b['row']['reward']:.4f}" for b in scored)
    header = (f"# Found by `autokd-dsl search {Path(cfg.space_file).name}` ({cfg.strategy}, seed {cfg.seed}, "
              f"{len({r['key'] for r in rows})} candidates): {teachers_phrase(cfg)}, student {cfg.student}, "
              f"data {cfg.data}.\n"
              f"# reward {best['reward']:.4f} after {best['epochs']} proxy epochs (validation CE {best['ce']:.4f}, "
              f"representation gap {best['gap']:.4f}, validation accuracy {_pct(best['acc'])})"
              + (f"; under the same proxy: {against}" if against else "") + "\n"
              + (f"# {chosen_by}\n" if chosen_by else "")
              + (f"# note: {above}\n" if (above := baselines_above(best, baselines)) and not chosen_by else ""))
    (out / "best.kd").write_text(header + best["kd"], encoding="utf-8")


def _rejected(rows: list[dict]) -> list[dict]:
    seen, out = set(), []
    for r in rows:
        if r["status"] != "ok" and r["key"] not in seen:
            seen.add(r["key"])
            out.append(r)
    return out


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _fmt(value) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seq", "key", "kd", "reward", "status", "reason", "ce", "gap", "acc", "seconds", "rung",
                         "epochs", "baseline", "path"])
        for r in rows:
            writer.writerow([r["seq"], r["key"], r["kd"].strip(), r["reward"], r["status"], r["reason"],
                             r["ce"], r["gap"], r["acc"], round(r["seconds"] or 0.0, 3), r["rung"], r["epochs"],
                             r["label"] or "" if r["baseline"] else "", r["path"]])


def _plot(path: Path, rows: list[dict], baselines: list[dict], cfg) -> None:
    """One point per candidate (its reward at the first rung, in the order evaluated; rejected ones as crosses
    at the bottom), the best so far, and a line per baseline scored at that rung."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    first = [r for r in rows if (r["rung"] or 0) == 0]
    xs = list(range(1, len(first) + 1))
    ok = [(x, r["reward"]) for x, r in zip(xs, first) if r["status"] == "ok"]
    lines = [(b["label"], b["rows"].get(0)) for b in baselines]
    lines = [(label, row["reward"]) for label, row in lines if row is not None and row["status"] == "ok"]
    values = [v for _, v in ok] + [v for _, v in lines]
    floor = min(values) if values else 0.0
    fig, ax = plt.subplots(figsize=(7, 4))
    if ok:
        ax.scatter([x for x, _ in ok], [v for _, v in ok], s=14, color="tab:blue", label="candidate")
        best, curve = None, []
        for r in first:
            if r["status"] == "ok" and (best is None or r["reward"] > best):
                best = r["reward"]
            curve.append(best)
        ax.plot([x for x, v in zip(xs, curve) if v is not None], [v for v in curve if v is not None],
                drawstyle="steps-post", color="tab:blue", alpha=0.6, label="best so far")
    bad = [x for x, r in zip(xs, first) if r["status"] != "ok"]
    if bad:
        ax.scatter(bad, [floor] * len(bad), marker="x", color="tab:red", s=22, label="rejected")
    styles = ["--", ":", "-.", (0, (5, 1))]
    for i, (label, value) in enumerate(lines):
        ax.axhline(value, color="grey", linestyle=styles[i % len(styles)], label=label)
    epochs = (cfg.fidelity[0] if cfg.fidelity else cfg.proxy.epochs)
    ax.set_title(f"{cfg.strategy} search over {Path(cfg.space_file).name}: "
                 f"{teachers_text(cfg.teacher)} → {cfg.student}, {epochs} proxy epochs", fontsize=9)
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel("reward (larger is better)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if xs:
        ax.set_xlim(0.5, len(xs) + 0.5)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _baseline_cells(b: dict) -> list[str]:
    row = b["row"]
    if row is None:
        return ["-", "-", "-", "-", "-", "-", b["reason"] or "not scored"]
    if row["status"] != "ok":
        return ["-", "-", "-", "-", str(row["epochs"]), f"{row['seconds']:.1f}", f"rejected: {row['reason']}"]
    return [f"{row['reward']:.4f}", f"{row['ce']:.4f}", f"{row['gap']:.4f}", _pct(row["acc"]), str(row["epochs"]),
            f"{row['seconds']:.1f}", candidate_text(row["kd"])]


def _reward_line(cfg, rungs: list[int]) -> str:
    names = list(cfg.rewards) if getattr(cfg, "rewards", None) else [cfg.proxy.reward]
    if len(set(names)) == 1:
        return f"- reward `{names[0]}` = {REWARDS[names[0]].text}, larger is better; {GAP_TEXT}"
    each = "; ".join(f"after {e} epochs `{n}` = {REWARDS[n].text}" for e, n in zip(rungs, names))
    return (f"- rewards per rung (larger is better): {each}; a candidate's reward is that of the highest rung it "
            f"reached; {GAP_TEXT}")


def _report(path: Path, rows, ranked, rejected, cfg, baselines) -> None:
    rungs = list(cfg.fidelity) if cfg.fidelity else [cfg.proxy.epochs]
    lines = [f"# Search report: {Path(cfg.space_file).name}", "",
             f"- {teachers_phrase(cfg)}, student {cfg.student}, data {cfg.data} "
             f"at {'x'.join(map(str, cfg.input_size))}",
             f"- strategy {cfg.strategy}"
             + (f" (UCT c = {cfg.c}, {cfg.rollout} rollouts, {cfg.root} root)" if cfg.strategy == "mcts" else "")
             + f", budget {cfg.budget}, seed {cfg.seed}, workers {cfg.workers}",
             (f"- rungs of {' / '.join(map(str, rungs))} proxy epochs, the best 1/{cfg.eta} promoted (ASHA); "
              "candidates are ranked by the highest rung they reached, then by reward" if len(rungs) > 1
              else f"- {rungs[0]} proxy epochs per candidate"),
             f"- proxy settings: `{json.dumps(cfg.proxy.model_dump())}`",
             _reward_line(cfg, rungs),
             f"- candidates {len({r['key'] for r in rows})}, trained {len(ranked)}, rejected {len(rejected)}", "",
             "## Leaderboard", "",
             "| rank | reward | val CE | gap | val acc | epochs | seconds | distiller |",
             "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(ranked[:10], 1):
        lines.append(f"| {i} | {r['reward']:.4f} | {r['ce']:.4f} | {r['gap']:.4f} | {_pct(r['acc'])} | "
                     f"{r['epochs']} | {r['seconds_total']:.1f} | `{candidate_text(r['kd'])}` |")
    lines += ["", "## Baselines under the same proxy", "",
              "| baseline | reward | val CE | gap | val acc | epochs | seconds | distiller |",
              "|---|---|---|---|---|---|---|---|"]
    for b in baselines:
        cells = _baseline_cells(b)
        cells[-1] = cells[-1] if b["row"] is None or b["row"]["status"] != "ok" else f"`{cells[-1]}`"
        lines.append(f"| {b['label']} | " + " | ".join(cells) + " |")
    above = baselines_above(ranked[0], baselines) if ranked else ""
    if above:
        lines += ["", f"Note: {above}."]
    if rejected:
        lines += ["", f"## Rejected candidates ({len(rejected)})", "", "| distiller | reason |", "|---|---|"]
        for r in rejected:
            lines.append(f"| `{candidate_text(r['kd'])}` | {r['reason']} |")
    lines += ["", "![reward of each candidate](best_reward.png)", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _leaderboard(console: Console, ranked: list[dict], baselines: list[dict], title: str = "leaderboard") -> None:
    """The five best and the baselines: the figures in a table, then each one's full text (any terminal width)."""
    table = Table("", "reward", "val CE", "gap", "val acc", "epochs", "seconds", title=title)
    texts = []
    for i, r in enumerate(ranked[:5], 1):
        table.add_row(f"rank {i}", f"{r['reward']:.4f}", f"{r['ce']:.4f}", f"{r['gap']:.4f}", _pct(r["acc"]),
                      str(r["epochs"]), f"{r['seconds_total']:.0f}")
        texts.append(f"rank {i}: {candidate_text(r['kd'])}")
    for b in baselines:
        cells = _baseline_cells(b)
        table.add_row(b["label"].split(" (")[0], *cells[:5], cells[5].split(".")[0])
        texts.append(f"{b['label']}: {cells[6]}")
    console.print(table)
    for text in texts:
        console.print(text, soft_wrap=True, markup=False, highlight=False)
