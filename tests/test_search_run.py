"""The search put together: kind-valid candidates, the store, resume after SIGKILL, rejections."""

import csv
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from autokd_dsl.errors import KDError
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.printer import print_block
from autokd_dsl.search.core import make_strategy, run_search
from autokd_dsl.search.space import SearchSpace

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "examples" / "space.kd"


def autokd_space():
    return SearchSpace(check_text(SPACE.read_text(), str(SPACE)).blocks[0])


def test_only_kind_valid_candidates_from_the_example_space():
    space = autokd_space()
    rng = random.Random(0)
    for _ in range(300):
        path = ()
        while len(path) < space.num_levels():
            path += (rng.choice(space.options(path)),)
        text = print_block(space.candidate(path))
        again = check_text(text).blocks[0]  # raises KDError if the candidate were ill-kinded
        assert again.key == space.candidate(path).key


SMALL = ("space s:\n    ce: logits ~ labels -> ce -> 1\n"
         "    kd: stage3 -> (none | pool(2) | patches(4)) -> (mse | l1 | cosine) -> (1 | 5)\n")


def test_shape_pruning_asks_once_per_term_pipeline():
    block = check_text(SMALL).blocks[0]
    calls = []

    def fits(one):
        text = print_block(one)
        calls.append(text)
        return "patches(4)" not in text

    space = SearchSpace(block, term_fits=fits)
    paths = list(space.paths())
    assert len(paths) == 12 and SearchSpace(block).size() == 18
    assert not any("patches(4)" in print_block(space.candidate(p)) for p in paths)
    assert len(calls) == len(set(calls)) == 1 + 9  # the fixed CE term, and 3 x 3 pipelines of the kd term
    assert all(len(check_text(c).blocks[0].terms) == 1 for c in calls)  # one term at a time


def test_shape_pruning_on_real_networks():
    from autokd_dsl.data import DataConfig, load_data
    from autokd_dsl.models import create_model
    from autokd_dsl.search.run import CompilesOn

    bundle = load_data(DataConfig(name="digits", input_size=(1, 8, 8)))
    teacher = create_model("resnet8", num_classes=10, in_chans=1)
    space = SearchSpace(check_text(SMALL).blocks[0], term_fits=CompilesOn(teacher, "resnet8", "resnet8", bundle))
    # resnet8's stage3 is 2x2 at 8x8 inputs: pool(2) fits, patches(4) does not
    assert [space.label(0, o) for o in space.options(())] == ["none", "pool(2)"]
    with pytest.raises(KDError, match="shape-valid"):
        SearchSpace(check_text(SMALL.replace("(none | pool(2) | patches(4))", "patches(4)")).blocks[0],
                    term_fits=CompilesOn(teacher, "resnet8", "resnet8", bundle))


def test_pruning_removes_ill_kinded_candidates():
    space = autokd_space()
    # `stage3` with no transform before `kl` is not a distribution: kl must not be offered there
    distance = next(i for i, lv in enumerate(space.levels) if lv.role == "distance")
    prefix = tuple(next(o for o in range(len(space.levels[i].options)) if space.label(i, o) in ("stage3", "none"))
                   for i in range(distance))  # stage3, then `none` in every transform slot
    assert space.label(0, prefix[0]) == "stage3" and len(prefix) >= 4
    labels = [space.label(distance, o) for o in space.options(prefix)]
    assert labels and not any(lbl.startswith("kl") for lbl in labels)
    all_labels = [space.label(distance, o) for o in range(len(space.levels[distance].options))]
    assert any(lbl.startswith("kl") for lbl in all_labels)


def test_mcts_on_the_space_proposes_only_valid_distinct_candidates():
    space = autokd_space()
    strategy = make_strategy("mcts", space, seed=1)
    seen = []

    def evaluate(paths):
        for p in paths:
            check_text(print_block(space.candidate(p)))
            seen.append(space.key(p))
        return [float(int(space.key(p)[:4], 16)) for p in paths]

    run_search(strategy, evaluate, budget=40)
    assert len(seen) == 40 and len(set(seen)) == 40


# ---- end to end through the CLI (small: resnet8 at 1x8x8 on digits) ----------------------------------


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    from rich.console import Console

    from autokd_dsl.data import DataConfig
    from autokd_dsl.training.teacher import Recipe, train_teacher

    out = tmp_path_factory.mktemp("teacher") / "t.pt"
    return train_teacher("resnet8", DataConfig(name="digits", input_size=(1, 8, 8)),
                         Recipe(epochs=2, schedule="cosine"), out, Console(quiet=True))


def _search_cmd(space: Path, out: Path, ckpt: Path, budget: int, *extra):
    return [sys.executable, "-m", "autokd_dsl", "search", str(space), "--teacher", "resnet8", "--student",
            "resnet8", "--teacher-weights", str(ckpt), "--data", "digits", "--input-size", "1x8x8", "--epochs",
            "1", "--subset", "0.2", "--seed", "0", "--budget", str(budget), "--out", str(out), *extra]


def _rows(out: Path, baselines: bool = False):
    """The candidates' rows of evaluations.csv (or, with ``baselines``, the baselines')."""
    with open(out / "evaluations.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if bool(r["baseline"]) == baselines]


@pytest.mark.slow
def test_search_writes_best_and_records_rejections(tmp_path, teacher_ckpt):
    space = tmp_path / "s.kd"
    space.write_text("space s:\n    ce: logits ~ labels -> ce -> 1\n"
                     "    kd: stage3 -> (patches(4) | none) -> (mse | l1) -> (1 | 5 | 10000000)\n")
    out = tmp_path / "run"
    proc = subprocess.run(_search_cmd(space, out, teacher_ckpt, 6), capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    assert len(rows) == 6 and len({r["key"] for r in rows}) == 6
    # resnet8's stage3 is 2x2 at 8x8 inputs: patches(4) cannot apply, so the tree never offers it and the six
    # candidates are the other pipelines; the weight 10^7 makes the loss explode on the probe batch
    assert not any("patches(4)" in r["kd"] for r in rows)
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert len(rejected) == 2 and all("10000000" in r["kd"] and "explodes" in r["reason"] for r in rejected)
    check = subprocess.run([sys.executable, "-m", "autokd_dsl", "check", str(out / "best.kd")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert (out / "report.md").read_text().count("|") > 10 and (out / "tree.graphml").exists()
    # the CE-only, KD and FitNet baselines are scored under the same proxy: in the store and in the report
    baselines = _rows(out, baselines=True)
    assert sorted(r["baseline"] for r in baselines) == ["ce_only", "fitnet", "kd"]
    assert all(r["status"] == "ok" and float(r["reward"]) < 0 and r["epochs"] == "1" for r in baselines)
    report = (out / "report.md").read_text()
    for label in ("CE only", "KD (library/kd.kd)", "FitNet (library/fitnet.kd)"):
        assert f"| {label} | -" in report
    assert "## Rejected candidates (2)" in report and report.count("loss explodes on the probe batch") == 2
    assert "CE only" in proc.stderr and "FitNet" in proc.stderr and "rank 1: ce: logits ~ labels" in proc.stderr
    again = subprocess.run(_search_cmd(space, out, teacher_ckpt, 6), capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    other = subprocess.run(_search_cmd(space, out, teacher_ckpt, 6, "--resume", "--rollout", "random"),
                           capture_output=True, text=True, cwd=ROOT)
    assert other.returncode == 2 and "other settings (rollout)" in other.stderr and "Traceback" not in other.stderr
    bad = subprocess.run(_search_cmd(space, tmp_path / "bad", teacher_ckpt, 6, "--rollout", "greedy"),
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "unknown rollout policy" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_resume_after_sigkill_keeps_every_row(tmp_path, teacher_ckpt):
    out = tmp_path / "run"
    proc = subprocess.Popen(_search_cmd(SPACE, out, teacher_ckpt, 10), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    db = out / "search.sqlite"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                n = sqlite3.connect(db).execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
            except sqlite3.Error:
                n = 0
            if n >= 3:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = sqlite3.connect(db).execute("SELECT key FROM evaluations ORDER BY seq").fetchall()
    resumed = subprocess.run(_search_cmd(SPACE, out, teacher_ckpt, 10, "--resume"), capture_output=True, text=True,
                             cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    rows = _rows(out)
    keys = [r["key"] for r in rows]
    assert len(rows) == 10 and len(set(keys)) == 10
    assert [k for (k,) in before] == keys[: len(before)]


@pytest.mark.slow
def test_final_retraining_reports_test_accuracy(tmp_path, teacher_ckpt):
    out = tmp_path / "run"
    proc = subprocess.run(_search_cmd(SPACE, out, teacher_ckpt, 3, "--final-epochs", "1", "--final-seeds", "2"),
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    import json

    final = json.loads((out / "final.json").read_text())
    labels = [r["label"] for r in final]
    assert labels[-3:] == ["CE only", "KD (library/kd.kd)", "FitNet (library/fitnet.kd)"]
    assert labels[:-3] == [f"rank {i}" for i in range(1, len(labels) - 2)] and len(labels) >= 4
    best_baseline = max(r["mean"] for r in final[-3:])
    for r in final:
        assert len(r["accuracies"]) == 2 and all(0.0 <= a <= 1.0 for a in r["accuracies"])
        assert r["delta"] == pytest.approx(r["mean"] - best_baseline)
    report = (out / "report.md").read_text()
    assert ("Final retraining" in report and "Δ best baseline" in report
            and "`ce: logits ~ labels -> ce -> 1 ; kd:" in report)
    # the winner is the retrained top candidate with the best mean validation accuracy, read from its own runs
    vals = {}
    for r in final[:-3]:
        runs = sorted((out / "final").glob(f"rank-{r['label'].split()[-1]}-*-seed*/result.json"))
        assert len(runs) == 2
        vals[r["label"]] = sum(json.loads(f.read_text())["final_val_accuracy"] for f in runs) / 2
    top = max(vals.values())
    winner = min(label for label, v in vals.items() if v == top)  # ties: the better reward rank
    best_kd = (out / "best.kd").read_text()
    program = next(r["kd"] for r in final if r["label"] == winner)
    assert best_kd.endswith(program)
    assert ("chosen by the final retraining" in best_kd) == (winner != "rank 1")


@pytest.mark.slow
def test_process_pool_gives_the_in_process_outcomes():
    import torch

    from autokd_dsl.data import DataConfig, load_data
    from autokd_dsl.models import create_model
    from autokd_dsl.search.evaluate import ProxyContext, ProxySettings
    from autokd_dsl.search.executor import InProcess, ProcessPool, make_executor

    torch.manual_seed(0)
    bundle = load_data(DataConfig(name="digits", input_size=(1, 8, 8)))
    teacher = create_model("resnet8", num_classes=10, in_chans=1).eval()
    space = SearchSpace(check_text(SMALL).blocks[0])
    ctx = ProxyContext(space, teacher, "resnet8", bundle, ProxySettings(epochs=1, subset=0.2), teacher_name="resnet8")
    texts = [print_block(space.candidate(p)) for p in [(0, 0, 0), (1, 1, 1), (2, 2, 0)]]  # the last: patches(4)
    assert isinstance(make_executor(ctx, 1), InProcess)
    pool = make_executor(ctx, 2)
    assert isinstance(pool, ProcessPool)
    try:
        parallel = pool.map(texts)
    finally:
        pool.close()
    serial = InProcess(ctx).map(texts)
    assert [o.status for o in parallel] == [o.status for o in serial] == ["ok", "ok", "rejected"]
    for a, b in zip(parallel[:2], serial[:2]):
        assert a.reward == pytest.approx(b.reward, rel=1e-3, abs=1e-4)
    assert "does not compile" in parallel[2].reason


def test_the_final_pick_is_the_best_validation_accuracy_among_the_candidates():
    from autokd_dsl.search.final import final_pick

    def row(label, val, baseline=False):
        return {"label": label, "val": val, "baseline": baseline}

    rows = [row("rank 1", 0.80), row("rank 2", 0.83), row("rank 3", 0.83), row("KD", 0.90, baseline=True)]
    assert final_pick(rows)["label"] == "rank 2"  # baselines are never picked; a tie keeps the reward's order
    assert final_pick([row("rank 1", float("nan")), row("rank 2", 0.5)])["label"] == "rank 2"
    assert final_pick([row("KD", 0.9, baseline=True)]) is None


def test_a_baseline_above_every_candidate_is_said_in_best_kd_the_console_and_the_report(tmp_path):
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from autokd_dsl.search.report import baselines_above, write_best
    from autokd_dsl.search.run import choose_by_final

    def scored(label, reward, epochs=6, status="ok"):
        return {"label": label, "row": {"reward": reward, "epochs": epochs, "status": status, "kd": ""}}

    best = {"reward": -1.3082, "epochs": 6, "ce": 0.8, "gap": 1.8, "acc": 0.71, "kd": "distiller d:\n"}
    # only a baseline scored after as many epochs and with a higher reward counts
    assert baselines_above(best, [scored("CE only", -1.46), scored("FitNet", -1.30, epochs=2),
                                  scored("KD", -1.0, status="rejected")]) == ""
    note = baselines_above(best, [scored("CE only", -1.46), scored("FitNet", -1.3042)])
    assert "FitNet (-1.3042)" in note and "CE only" not in note and "-1.3082" in note
    cfg = SimpleNamespace(space_file="space.kd", strategy="mcts", seed=0, teacher="resnet56", student="resnet20",
                          data="fashion-mnist")
    write_best(tmp_path, best, [{"key": "a"}], cfg, [scored("FitNet", -1.3042)])
    assert "# note: under the same proxy FitNet (-1.3042)" in (tmp_path / "best.kd").read_text()
    write_best(tmp_path, best, [{"key": "a"}], cfg, [scored("FitNet", -1.4)])
    assert "note" not in (tmp_path / "best.kd").read_text()

    # after the final retraining the comparison is by mean validation accuracy
    (tmp_path / "report.md").write_text("# report\n")
    final = [{"label": "rank 1", "val": 0.80, "baseline": False}, {"label": "rank 2", "val": 0.78, "baseline": False},
             {"label": "FitNet", "val": 0.82, "baseline": True}, {"label": "KD", "val": 0.79, "baseline": True}]
    buf = io.StringIO()
    choose_by_final(tmp_path, {"final": final}, None, None, [], Console(file=buf, width=300))
    said = buf.getvalue()
    assert "FitNet (82.00%) has a better mean validation accuracy" in said and "KD (" not in said
    assert "FitNet (82.00%)" in (tmp_path / "report.md").read_text()
    buf = io.StringIO()
    choose_by_final(tmp_path, {"final": final[:2] + final[3:]}, None, None, [], Console(file=buf, width=300))
    assert "better mean validation accuracy" not in buf.getvalue()


@pytest.mark.slow
def test_a_reward_per_rung_scores_each_rung_by_its_own_reward(tmp_path, teacher_ckpt):
    space = tmp_path / "s.kd"
    space.write_text("space s:\n    ce: logits ~ labels -> ce -> 1\n"
                     "    kd: stage3 -> (none | pool(2)) -> (mse | l1 | cosine) -> (1 | 5)\n")
    out = tmp_path / "run"
    rungs = ("--fidelity", "1,2", "--eta", "2", "--baselines", "kd")
    ladder = (*rungs, "--reward", "ce+gap,acc-ce")
    proc = subprocess.run(_search_cmd(space, out, teacher_ckpt, 4, *ladder), capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    low = [r for r in rows if r["rung"] == "0" and r["status"] == "ok"]
    high = [r for r in rows if r["rung"] == "1" and r["status"] == "ok"]
    assert len(low) >= 2 and high, rows
    # each rung's reward is its own formula of the parts stored with it (README: the rewards)
    for r in low:
        assert float(r["reward"]) == pytest.approx(-(0.5 * float(r["ce"]) + 0.5 * float(r["gap"])), abs=1e-9)
    for r in high:
        assert r["epochs"] == "2"
        assert float(r["reward"]) == pytest.approx(float(r["acc"]) - float(r["ce"]), abs=1e-9)
    # the baseline is scored at both rungs, each with that rung's reward
    kd = {r["rung"]: r for r in _rows(out, baselines=True) if r["baseline"] == "kd"}
    assert float(kd["1"]["reward"]) == pytest.approx(float(kd["1"]["acc"]) - float(kd["1"]["ce"]), abs=1e-9)
    assert float(kd["0"]["reward"]) == pytest.approx(-(0.5 * float(kd["0"]["ce"]) + 0.5 * float(kd["0"]["gap"])),
                                                     abs=1e-9)
    report = (out / "report.md").read_text()
    assert "after 1 epochs `ce+gap`" in report and "after 2 epochs `acc-ce`" in report, report
    assert "rewards ce+gap / acc-ce" in proc.stderr
    # --resume with another reward ladder is another search
    other = subprocess.run(_search_cmd(space, out, teacher_ckpt, 4, *rungs, "--reward", "ce+gap,acc", "--resume"),
                           capture_output=True, text=True, cwd=ROOT)
    assert other.returncode == 2 and "other settings (rewards)" in other.stderr, other.stderr
    # as many rewards as rungs, or one
    bad = subprocess.run(_search_cmd(space, tmp_path / "bad", teacher_ckpt, 4, "--reward", "ce+gap,acc-ce"),
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--reward `ce+gap,acc-ce` names 2 rewards for 1 rung" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
    typo = subprocess.run(_search_cmd(space, tmp_path / "bad", teacher_ckpt, 4, *rungs, "--reward", "ce+gap,acc-c"),
                          capture_output=True, text=True, cwd=ROOT)
    assert typo.returncode == 2 and "unknown reward `acc-c`" in typo.stderr and "acc-ce" in typo.stderr, typo.stderr


@pytest.mark.slow
def test_search_with_thompson_rollouts_runs_and_resumes(tmp_path, teacher_ckpt):
    out = tmp_path / "ts"
    first = subprocess.run(_search_cmd(SPACE, out, teacher_ckpt, 3, "--rollout", "thompson"), capture_output=True,
                           text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr
    before = [(r["key"], r["reward"]) for r in _rows(out)]
    assert len(before) == 3 and len({k for k, _ in before}) == 3
    # resuming replays the three told rows into the model and asks two more, none of them a repeat
    again = subprocess.run(_search_cmd(SPACE, out, teacher_ckpt, 5, "--rollout", "thompson", "--resume"),
                           capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    after = [(r["key"], r["reward"]) for r in _rows(out)]
    assert after[:3] == before and len(after) == 5 and len({k for k, _ in after}) == 5
