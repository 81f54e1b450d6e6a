"""The additive reward model behind Thompson rollouts, and MCTS with ``rollout="thompson"``."""

from __future__ import annotations

import random

import numpy as np
import pytest

from autokd_dsl.search.core import run_search
from autokd_dsl.search.mcts import MCTS
from autokd_dsl.search.surrogate import AdditiveModel
from autokd_dsl.search.testing import TabulatedSpace


def _posterior_mean(model: AdditiveModel, draws: int = 400) -> dict:
    rng = random.Random(0)
    samples = [model.draw(rng) for _ in range(draws)]
    features = [(lv, o) for lv in range(2) for o in range(3)]
    return {f: float(np.mean([w(f) for w in samples])) for f in features}


def test_the_joint_fit_separates_choices_that_were_made_together():
    # level 0 option 0 is worth +1, everything else 0; level 1 option 0 was chosen mostly together with it.
    # A per-choice average credits (1, 0) with most of (0, 0)'s effect; the joint fit does not.
    model = AdditiveModel(context=0, precision=0.01, scale=0.01)
    rows = [((0, 0), 1.0)] * 9 + [((0, 1), 1.0)] + [((1, 0), 0.0)] + [((1, 1), 0.0)] * 9 + [((2, 2), 0.0)] * 5
    for path, value in rows:
        model.add(path, value)
    mean = _posterior_mean(model)
    ones = [v for p, v in rows if p[1] == 0]
    per_choice_gap = np.mean(ones) - np.mean([v for p, v in rows if p[1] == 1])  # what MAST would see: 0.8
    assert per_choice_gap > 0.7
    assert abs(mean[(1, 0)] - mean[(1, 1)]) < 0.1
    assert mean[(0, 0)] - mean[(0, 1)] > 0.9


def test_draws_spread_by_the_posterior_and_unseen_features_by_the_prior():
    model = AdditiveModel(context=0, precision=1.0, scale=0.5)
    for _ in range(50):
        model.add((0,), 1.0)  # one level: option 0 told 50 times, option 1 once, option 2 never
    model.add((1,), 0.0)
    rng = random.Random(1)
    draws = [model.draw(rng) for _ in range(600)]
    told_often = np.std([w((0, 0)) for w in draws])
    told_once = np.std([w((0, 1)) for w in draws])
    never = np.std([w((0, 2)) for w in draws])
    # a weight told n times has posterior sd scale / sqrt(n + precision); an unseen one the prior's, scale / 1
    assert told_often == pytest.approx(0.5 / np.sqrt(51), rel=0.25)
    assert told_once < never
    assert never == pytest.approx(0.5, rel=0.15)
    # the same feature within one draw keeps its value (a rollout compares options of one sample)
    one = draws[0]
    assert one((3, 7)) == one((3, 7))


def test_revalue_replaces_the_values_and_checks_their_number():
    model = AdditiveModel(context=0, precision=0.01, scale=0.001)
    model.add((0,), 0.0)
    model.add((1,), 1.0)
    model.revalue([1.0, 0.0])
    mean = {o: np.mean([w((0, o)) for w in (model.draw(random.Random(s)) for s in range(50))]) for o in (0, 1)}
    assert mean[0] > mean[1] + 0.9
    with pytest.raises(ValueError, match="3 values for 2 paths"):
        model.revalue([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="precision"):
        AdditiveModel(precision=0.0)


def _additive_space(levels: int, options: int) -> TabulatedSpace:
    """Option 0 is the best at every level: a table that is the sum of one effect per level."""
    effect = (np.arange(options) == 0).astype(float) - 0.01 * np.arange(options)
    return TabulatedSpace((options,) * levels, sum(np.meshgrid(*[effect] * levels, indexing="ij")))


def test_thompson_mcts_is_deterministic_and_follows_a_retold_reward():
    space = _additive_space(levels=3, options=3)

    def evaluate(paths):
        return [space.reward(p) for p in paths]

    first = [r.path for r in run_search(MCTS(space, seed=3, rollout="thompson"), evaluate, budget=15)]
    again = [r.path for r in run_search(MCTS(space, seed=3, rollout="thompson"), evaluate, budget=15)]
    assert first == again
    mcts = MCTS(space, seed=0, rollout="thompson")
    results = run_search(mcts, evaluate, budget=12)
    worst = min(results, key=lambda r: r.reward)
    mcts.retell(worst.path, 100.0)
    row = mcts._model_paths[worst.path]
    assert mcts._model_raw[row] == 100.0
    assert mcts._model._values[row] == pytest.approx(1.0)  # now the best told: rank 1


def test_the_model_learns_each_told_reward_as_its_rank_to_the_power():
    space = TabulatedSpace.synthetic((3, 4, 4, 3), seed=5)
    mcts = MCTS(space, seed=2, rollout="thompson", ts_power=4.0)

    def evaluate(paths):  # the worst candidates are rejected: they count at rank 0
        return [None if space.reward(p) < -1.0 else space.reward(p) for p in paths]

    results = run_search(mcts, evaluate, budget=40)
    mcts._rebase(force=True)
    ref = sorted(r.reward for r in results if r.reward is not None)
    expected = [0.0 if r.reward is None else (sum(x <= r.reward for x in ref) / len(ref)) ** 4 for r in results]
    assert [mcts._model_raw[mcts._model_paths[r.path]] for r in results] == [
        -float("inf") if r.reward is None else r.reward for r in results]
    got = [mcts._model._values[mcts._model_paths[r.path]] for r in results]
    assert got == pytest.approx(expected)
    assert max(got) == 1.0 and any(r.reward is None for r in results) == (min(got) == 0.0)
    with pytest.raises(ValueError, match="ts_power"):
        MCTS(space, ts_power=0.0)


def test_weights_per_first_choice_have_their_own_prior():
    model = AdditiveModel(context=1, precision=4.0, scale=0.5, context_precision=0.25)
    assert model.features((2,), 1, 3) == [(1, 3), ((2,), 1, 3)]
    model.add((0, 0), 1.0)
    rng = random.Random(2)
    draws = [model.draw(rng) for _ in range(800)]
    assert np.std([w((1, 4)) for w in draws]) == pytest.approx(0.5 / 2.0, rel=0.15)  # global: scale / sqrt(4)
    assert np.std([w(((1,), 1, 4)) for w in draws]) == pytest.approx(0.5 / 0.5, rel=0.15)  # per first choice
    with pytest.raises(ValueError, match="precision"):
        AdditiveModel(context_precision=-1.0)
