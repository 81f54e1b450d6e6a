"""Multi-fidelity promotion (ASHA): rungs and eta on a fake evaluator, comparable values, resume mid-rung."""

import json
import os
from pathlib import Path

import pytest

from autokd_dsl.search.driver import make_strategy, run_search
from autokd_dsl.search.fidelity import Job, Promotion, run_promotions
from autokd_dsl.search.testing import TabulatedSpace, fake_reward

GOLDEN = Path(__file__).parent / "golden" / "search" / "promotion.json"
RUNGS = (2, 6, 18)


def fake(job: Job) -> float | None:
    """A reward that grows with the epochs of the rung, plus a per-(candidate, rung) wobble; some rejections."""
    if fake_reward(job.key + "reject") < 0.05:
        return None
    return fake_reward(job.key) + 0.1 * job.rung + 0.05 * fake_reward(f"{job.key}@{job.rung}")


def _space():
    return TabulatedSpace.synthetic((4, 5, 4, 3), seed=3)


def test_promotion_follows_eta_and_rungs_golden():
    space = _space()
    jobs = run_promotions(make_strategy("mcts", space, seed=0), lambda js: [fake(j) for j in js], budget=30,
                          rungs=RUNGS, eta=3)
    record = {"space": "TabulatedSpace.synthetic((4, 5, 4, 3), seed=3)", "rungs": list(RUNGS), "eta": 3,
              "jobs": [f"{j.key} rung {j.rung}: " + ("rejected" if j.reward is None else f"{j.reward:.6f}")
                       for j in jobs]}
    text = json.dumps(record, indent=1) + "\n"
    if os.environ.get("AUTOKD_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text, encoding="utf-8")
    assert json.loads(GOLDEN.read_text(encoding="utf-8")) == record, "promotion order changed (AUTOKD_UPDATE_GOLDEN=1)"
    # the invariants behind the golden: 30 candidates start at rung 0; whenever a job started at rung r + 1, its
    # candidate was among the best floor(n / 3) finished at rung r so far
    assert sum(j.rung == 0 for j in jobs) == 30
    finished: dict[int, dict[str, float | None]] = {0: {}, 1: {}, 2: {}}
    for j in jobs:
        if j.rung:
            below = finished[j.rung - 1]
            ranked = sorted((k for k in below if below[k] is not None), key=lambda k: -below[k])
            assert j.key in ranked[: len(below) // 3], (j, len(below))
        finished[j.rung][j.key] = j.reward
    assert 10 <= len(finished[1]) <= 14 and 3 <= len(finished[2]) <= 6
    assert all(k in finished[0] for k in finished[1]) and all(k in finished[1] for k in finished[2])


def test_one_rung_is_the_plain_search():
    space = _space()
    plain = run_search(make_strategy("mcts", space, seed=4), lambda ps: [space.reward(p) for p in ps], 25, batch=3)
    rungs = run_promotions(make_strategy("mcts", space, seed=4), lambda js: [space.reward(j.path) for j in js], 25,
                           rungs=(6,), batch=3)
    assert [r.path for r in plain] == [r.path for r in rungs] and all(r.rung == 0 for r in rungs)


def test_values_are_comparable_across_rungs():
    promo = Promotion((1, 3), eta=2)
    for key, r0 in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        promo.record(Job((0,), key, 0), r0)
        promo.paths[key] = (len(promo.paths),)
    promo.record(Job((2,), "c", 1), 13.0)  # trained longer: +10 on everyone
    promo.record(Job((1,), "b", 1), 12.0)
    assert promo.shift(1) == pytest.approx(10.0)
    assert promo.value("c") == pytest.approx(3.0) and promo.value("b") == pytest.approx(2.0)
    assert promo.value("a") == 1.0


def test_strategies_hold_the_retold_value():
    space = _space()
    mcts = make_strategy("mcts", space, seed=0)
    paths = [mcts.ask() for _ in range(3)]
    for p, r in zip(paths, (0.1, 0.9, 0.5)):
        mcts.tell(p, r)
    mcts.retell(paths[1], 0.2)  # the best candidate turned out worse after longer training
    root = mcts.tree_graph().nodes[()]
    assert root["best"] == pytest.approx(0.5) and root["value_sum"] == pytest.approx(0.8)
    level0 = mcts._moves[(0, paths[1][0])]
    assert level0[0] == pytest.approx(sum(r for p, r in zip(paths, (0.1, 0.2, 0.5)) if p[0] == paths[1][0]))


class Killed(Exception):
    pass


def test_a_search_killed_mid_rung_resumes_without_repeating():
    space = _space()
    store: dict[tuple[str, int], float | None] = {}  # (key, rung) -> reward: the on-disk rows
    trained: list[tuple[str, int]] = []

    def evaluator(limit=None):
        def evaluate(jobs):
            out = []
            for j in jobs:
                if (j.key, j.rung) not in store:
                    if limit is not None and len(trained) >= limit:
                        raise Killed
                    trained.append((j.key, j.rung))
                    store[(j.key, j.rung)] = fake(j)
                out.append(store[(j.key, j.rung)])
            return out

        return evaluate

    full = run_promotions(make_strategy("mcts", space, seed=2), lambda js: [fake(j) for j in js], 24, RUNGS, batch=2)
    with pytest.raises(Killed):  # killed with rung-1 and rung-2 jobs among those finished
        run_promotions(make_strategy("mcts", space, seed=2), evaluator(limit=20), 24, RUNGS, batch=2)
    kept = dict(store)
    assert any(rung > 0 for _, rung in kept)
    resumed = run_promotions(make_strategy("mcts", space, seed=2), evaluator(), 24, RUNGS, batch=2)
    assert [(r.key, r.rung) for r in resumed] == [(r.key, r.rung) for r in full]
    assert len(trained) == len(set(trained)) == len(full)  # nothing finished was trained again
    assert all(store[k] == v for k, v in kept.items())
