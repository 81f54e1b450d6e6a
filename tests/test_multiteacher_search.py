"""`autokd-dsl search` with several teachers: each teacher runs once over the proxy data, a space choosing the
weighting rule is searched, the report names the teachers, resume keeps the rows, bad inputs are located
errors before any work, and a bf16 search on the CPU. Small: resnet8 and wrn_16_1 teachers trained for one
epoch on digits at 1x8x8, 200 training images, one proxy epoch."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
import torch
from two_teachers import TEACHERS, assert_located_errors, ckpts, cli, teacher_args  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from autokd_dsl.cli import app
from autokd_dsl.data import DataConfig, load_data
from autokd_dsl.errors import KDError
from autokd_dsl.lang.check import check_text
from autokd_dsl.models import create_model
from autokd_dsl.search.evaluate import ProxyContext, ProxySettings, evaluate
from autokd_dsl.search.ray_executor import pack_context, unpack_context
from autokd_dsl.search.space import SearchSpace

RULES = ("equal", "confidence", "agreement")
RULE_SPACE = ("space rule:\n    ce: logits ~ labels -> ce -> 1\n"
              "    kd: logits ~ teachers.logits -> softmax(4) -> kl -> 4 * (equal | confidence | agreement)\n")
TINY = ["--student", "resnet8", "--data", "digits", "--input-size", "1x8x8", "--train-subset", "200",
        "--epochs", "1", "--no-tensorboard"]

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(
            "SELECT seq, key, kd, status, reward, baseline, label FROM evaluations ORDER BY seq"
        ).fetchall()


def test_each_teacher_runs_once_and_its_taps_are_cached():
    bundle = load_data(DataConfig(name="digits", input_size=(1, 8, 8), train_subset=60))
    torch.manual_seed(0)
    nets = [create_model(name, num_classes=10, in_chans=1).eval() for name in TEACHERS]
    calls = [0, 0]
    for k, net in enumerate(nets):
        net.register_forward_hook(lambda *_, k=k: calls.__setitem__(k, calls[k] + 1))
    space = SearchSpace(check_text(RULE_SPACE).blocks[0])
    ctx = ProxyContext(space, nets, "resnet8", bundle, ProxySettings(epochs=1, batch_size=32),
                       teacher_name=list(TEACHERS))
    assert calls == [2, 2]  # the training subset and the validation split, one batch each
    for k, net in enumerate(nets, 1):  # against a plain forward of each teacher
        with torch.no_grad():
            assert torch.allclose(ctx.train_acts[f"{k}|fc"], net(bundle.train.images), atol=1e-5)
            assert torch.allclose(ctx.val_acts[f"{k}|fc"], net(bundle.val.images), atol=1e-5)
    runs = list(calls)
    outcome = evaluate(space.candidate((1,)), ctx)  # confidence weighting
    assert outcome.status == "ok" and math.isfinite(outcome.reward), outcome.reason
    # compiling the first candidate probes each teacher's shapes once (on a tiny batch); training reads the cache
    assert all(now - before <= 1 for now, before in zip(calls, runs)), (calls, runs)
    runs = list(calls)
    outcome = evaluate(space.candidate((2,)), ctx)  # agreement weighting
    assert outcome.status == "ok" and math.isfinite(outcome.reward), outcome.reason
    assert calls == runs and ctx.teacher_runs == 1  # candidates never run the teachers
    # the context as a Ray worker gets it (through the object store): the same teachers' cache, the same result
    again = unpack_context(pack_context(ctx))
    assert len(again.teachers) == 2 and again.teacher_name == list(TEACHERS)
    assert evaluate(space.candidate((2,)), again).reward == pytest.approx(outcome.reward, abs=1e-6)


def test_two_teacher_search_on_a_weighting_rule_space_and_resume(ckpts, cli, tmp_path):
    space, out = tmp_path / "rule.kd", tmp_path / "search"
    space.write_text(RULE_SPACE)
    args = ["search", space, *teacher_args(ckpts), *TINY, "--budget", "3", "--baselines", "kd", "--out", out]
    code, text = cli(*args)
    assert code == 0, text
    assert "teachers: resnet8 (1), wrn_16_1 (2)" in text
    found = rows(out / "search.sqlite")
    candidates = [r for r in found if not r[5]]
    assert len(candidates) == 3 and all(r[3] == "ok" for r in candidates), candidates
    assert sorted(next(rule for rule in RULES if f"4 * {rule}" in r[2]) for r in candidates) == sorted(RULES)
    labels = {r[6] for r in found if r[5]}
    assert labels == {"ce_only", "kd", "aver"}, labels
    report = (out / "report.md").read_text()
    assert "teachers resnet8 (1), wrn_16_1 (2), student resnet8" in report
    assert "| KD (library/kd.kd; teacher 1: resnet8) |" in report and "| AVER (library/aver.kd) |" in report
    assert "teachers resnet8 (1), wrn_16_1 (2)" in (out / "best.kd").read_text().splitlines()[0]

    code, text = cli(*args, "--resume")  # nothing is trained again
    assert code == 0 and "3 already evaluated" in text, text
    assert rows(out / "search.sqlite") == found

    swapped = ["search", space, *teacher_args(ckpts[::-1], TEACHERS[::-1]), *TINY, "--budget", "3",
               "--baselines", "kd", "--out", out, "--resume"]
    code, text = cli(*swapped)
    assert code == 2 and "holds a search with other settings (teacher, teacher_weights)" in text, text
    assert "resnet8 (1), wrn_16_1 (2); this run gives wrn_16_1 (1), resnet8 (2)" in text
    assert "Traceback" not in text and rows(out / "search.sqlite") == found


def test_bad_teachers_are_located_errors_before_any_work(ckpts, cli, tmp_path):
    third, rule = tmp_path / "third.kd", tmp_path / "rule.kd"
    third.write_text("space third:\n    kd: logits ~ teacher3.logits -> softmax(4) -> kl -> (1 | 2)\n")
    rule.write_text(RULE_SPACE)
    odd = tmp_path / "seven.pt"
    torch.save(create_model("resnet8", num_classes=7, in_chans=1).state_dict(), odd)
    out = tmp_path / "search"
    cases = [
        (["search", third, *teacher_args(ckpts), *TINY, "--out", out],
         f"{third}:2:18: error: `teacher3.logits` names teacher 3, and the command gave 2",
         "teacher1 = resnet8, teacher2 = wrn_16_1"),
        (["search", rule, "--teacher", "resnet8", "--teacher-weights", ckpts[0], *TINY, "--out", out],
         f"{rule}:3:18: error: `teachers.logits` distils from several teachers", "--teacher A --teacher B"),
        (["search", rule, "--teacher", "resnet8", "--teacher", "multiteacher_nets:seven_classes",
          "--teacher-weights", ckpts[0], "--teacher-weights", odd, *TINY, "--out", out],
         f"{rule}:3:18: error: teacher2 (multiteacher_nets:seven_classes) predicts 7 classes", "same dataset"),
        (["search", rule, *teacher_args(ckpts)[:4], "--teacher-weights", ckpts[0], *TINY, "--out", out],
         "--teacher-weights is given 1 time(s) for 2 teacher(s)", "one checkpoint per --teacher"),
        (["search", rule, *teacher_args(ckpts), *TINY, "--amp", "fp16", "--out", out],
         "--amp fp16: candidates train on cpu", "--amp bf16"),
    ]

    def nothing_written(args):
        assert not out.exists(), args

    assert_located_errors(cli, cases, nothing_written)


def test_the_api_and_a_config_file_check_the_option_ranges(tmp_path):
    import autokd_dsl

    rule = tmp_path / "rule.kd"
    rule.write_text(RULE_SPACE)
    for field, value, expected in (("budget", 0, "a whole number >= 1"), ("subset", 1.5, "a number in (0, 1]"),
                                   ("eta", 1, "a whole number >= 2")):
        with pytest.raises(KDError, match=rf"setting `{field}`: .*{expected.replace('(', '.').replace(']', '.')}"):
            autokd_dsl.search(space_file=rule, teacher=list(TEACHERS), student="resnet8", out=tmp_path / "s",
                              **{field: value})
    with pytest.raises(KDError, match="unknown rollout policy `bogus`"):
        autokd_dsl.search(space_file=rule, teacher="resnet8", student="resnet8", rollout="bogus")
    with pytest.raises(KDError, match="epochs per rung must be increasing"):
        autokd_dsl.search(space_file=rule, teacher="resnet8", student="resnet8", fidelity=(6, 2))
    code, text = _run_cli(["search", rule, "--teacher", "resnet8", "--student", "resnet8", "--fidelity", "2,x"])
    assert code == 2 and "--fidelity `2,x` is not a list of epoch counts (command-line value)" in text, text
    config = tmp_path / "run.toml"
    config.write_text("final-seeds = 0\n")
    code, text = _run_cli(["search", rule, "--teacher", "resnet8", "--student", "resnet8", "--config", config])
    assert code == 2 and f"{config}:1:1: error: setting `final_seeds`: 0 is out of range" in text, text
    assert not (tmp_path / "s").exists()


def _run_cli(args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_bf16_search_on_the_cpu_with_a_space_reading_teacher_one(ckpts, cli, tmp_path, monkeypatch):
    from autokd_dsl.search import evaluate as proxy

    dtypes = []
    made = proxy.create_model

    def student(*args, **kwargs):  # record the dtype the student computes in during training
        net = made(*args, **kwargs)
        net.register_forward_hook(lambda module, _, out: dtypes.append((module.training, out.dtype)))
        return net

    monkeypatch.setattr(proxy, "create_model", student)
    space, out = tmp_path / "one.kd", tmp_path / "search"
    space.write_text("space one:\n    ce: logits ~ labels -> ce -> 1\n    kd: logits -> softmax(4) -> kl -> (1 | 2)\n")
    code, text = cli("search", space, *teacher_args(ckpts), *TINY, "--budget", "1", "--baselines", "", "--amp",
                     "bf16", "--out", out)
    assert code == 0, text
    assert "no candidate reads teacher 2" in text
    found = [r for r in rows(out / "search.sqlite") if not r[5]]
    assert len(found) == 1 and found[0][3] == "ok" and math.isfinite(found[0][4]), found
    assert (True, torch.bfloat16) in dtypes  # training forwards ran under bf16 autocast
    assert (False, torch.float32) in dtypes  # the validation score in fp32
