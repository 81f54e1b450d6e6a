"""Monte Carlo tree search over the levels of a choice space, as in Auto-KD."""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Callable

import networkx as nx

from .base import _StrategyBase
from .protocols import ChoiceSpace, Path
from .surrogate import AdditiveModel
from .tree import Node, tree_graph

SelectionRule = Callable[[float, int, int, float], float]
"""``rule(q, n, parent_n, c) -> score``: q is the child's mean normalised reward in [0, 1] (pending visits
count at the minimum), n its visit count (told + pending, >= 1), parent_n the parent's, c the exploration
constant. Selection descends to the child with the highest score (first in option order on ties)."""


def uct(q: float, n: int, parent_n: int, c: float) -> float:
    """UCT (Kocsis & Szepesvari 2006): ``q + c * sqrt(ln(parent_n) / n)``."""
    return q + c * math.sqrt(math.log(max(parent_n, 1)) / n)


def greedy(q: float, n: int, parent_n: int, c: float) -> float:
    """Pure exploitation (ignores ``c``); for ablations."""
    return q


MCTS_DEFAULT_C = 2.0
"""UCT exploration constant used by the product, on rank-normalised values (see MCTS_TUNING_4; 0.7 was the
constant for min-max normalised values, tuned in the note below)."""

MCTS_DEFAULT_ROOT_C_SCALE = 1.5
"""The root's exploration constant is this multiple of ``c`` (see MCTS_TUNING_6)."""

MCTS_TUNING_6 = """Tuning note for root_c_scale (issue 15). On a gated table the first choice decides which of two
differently scaled subtables a candidate falls in; when the best candidates lie under the first choice with the
lower mean, rank values put that branch's samples below the other's, and UCT's split at the root is what decides
whether it is explored. Tables never reported, 20 search seeds, MCTS's median ÷ random search's median over 2,000
seeds: geometric mean (worst table), runs stuck above 5x random's median. 31 "hard" gated tables among seeds
1000-1599 (all of the top 1 % under the first choice whose mean is more than 3 sd of the other branch lower):
root c 2 (the same c as below the root) 0.49 (2.4), 31 stuck; root c 2.5 0.42 (1.6), 12; root c 3 0.40 (0.83), 2;
root c 4 0.36 (0.62), 0. Gated 1600-1629: 0.35 (0.71) 5 stuck; 0.35 (0.55) 1; 0.35 (0.54) 0; 0.38 (0.51) 0.
Structured 1700-1719 (the P3 shape): 0.32 / 0.32 / 0.35 for root c 2 / 3 / 4. The Fashion-MNIST measured table
(100 seeds): 0.99 / 0.95 / 1.17. Root c 3 is as good as 2 or better on every family by the geometric mean (its worst
structured table is worse: 0.62 against 0.52) and removes almost all stuck runs; 4 costs on structured tables and
on the measured one. Kept: 3, i.e. 1.5 x c."""

ROOT_RULES = ("uct", "tail")

MCTS_DEFAULT_ROOT = "uct"
"""How the root picks a first choice: ``"uct"`` (as every other node, with ``root_c_scale``) or ``"tail"`` (see
:class:`MCTS` and MCTS_TUNING_7)."""

MCTS_DEFAULT_ROOT_MIX = 0.5
"""With ``root="tail"``, the share of asks in which the root still picks by UCT."""

MCTS_TUNING_7 = """Tuning note for root="tail" (issue 15). On the measured tables MCTS spread its evaluations almost
evenly over the five taps (the Fashion-MNIST table, 40 seeds: 7-11 per tap before the first top-1 % hit), because
with rank values the taps' best candidates all sit near 1 and the root's exploration term decides; restricted to the
`embedding` tap, which holds most of the top 1 %, MCTS needs 10 evaluations against 39.5 over the whole space. The
tail rule instead picks the first choice whose next candidate most probably beats the best told (a normal model of
each branch's rewards, shrunk towards all rewards told; its mean drawn from its posterior, so that the pick is
randomised). Alone it locked runs in on gated tables (1600-1629, 20 seeds: 66 stuck runs of 600, UCT 0), so half
of the asks still pick by UCT. Tables never reported, MCTS's median ÷ random's (1,000 seeds), geometric mean
(worst): the Fashion-MNIST table, 100 seeds, UCT 0.98, tail with mix 0.4 / 0.5 / 0.6 0.70 / 0.62 / 0.75; its two
check tables (_2600, _2ep), 100 seeds, UCT 0.69 (0.80), tail 0.56 (0.62) / 0.54 (0.59) / 0.54 (0.55); with mix 0.5:
gated 1600-1614 UCT 0.334 (0.52), tail 0.330 (0.44); structured 1700-1709 0.338 (0.66) against 0.290 (0.46); the 31
hard gated tables of MCTS_TUNING_6 0.396 (0.81) with 1 stuck run against 0.369 (0.59) with 3 stuck. Not kept: a
prior weight of 0.5 or 2 (Fashion 0.73 / 0.75), two visits more before the rule applies (0.76), the mean without a
draw (0.86), rewards raised to the branch median first (gated 1600-1629: 130 stuck runs without the mix). The rule
is kept as an option and the default stays "uct" until P4 (bench/search_quality.py) is run with it."""

MCTS_DEFAULT_FPU: float | None = 0.2
"""First-play urgency reduction used by the product (see :class:`MCTS`)."""

MCTS_DEFAULT_MAX_WEIGHT = 1.0
"""How much a node's value is its subtree's best reward rather than its mean (see :class:`MCTS`).

Tuning note for the MCTS defaults (c, fpu, max_weight). Two families of synthetic tables, never the ones that
bench/search_efficiency.py reports (table seed 0), shapes 2x5x5x6x7, 2x6x6x5x4x4, 3x6x6x5x4 and 4x6x6x5x4, 20
search seeds each; evaluations to the top 1% divided by random search's, geometric mean over tables (worst
table in brackets):

* structured (:meth:`TabulatedSpace.synthetic`): mean values, c = 0.15, fpu 0, MAST rollouts on seeds 101-102:
  0.29 (0.48); max values, fpu 0.2, c = 0.5 / 0.7 / 1.0 on seeds 101-103: 0.27 (0.52) / 0.32 (0.52) / 0.30 (0.62).
* gated (:meth:`TabulatedSpace.gated`: each first-level option scales and shifts its own structured subtable,
  so a branch with a lower mean can hold the best candidates, as `logits` and `stage3` do in the Auto-KD
  space): mean values, c = 0.15, MAST rollouts on seeds 201-203: 7.2 (43), i.e. far worse than random: one bad
  first sample shuts a branch for good. Max values, fpu 0.2, on seeds 201-206, c = 0.7 / 1.0 / 1.4: 0.41 (0.78)
  / 0.43 (0.80) / 0.42 (0.79); c = 0.5 on seeds 201-204: 0.55 (2.6).

c = 0.7 with max values has the best worst case over both families.
"""

MCTS_DEFAULT_ROLLOUT = "mast"
"""Rollout policy used by the product: ``"mast"``, ``"random"`` or ``"thompson"`` (see :class:`MCTS`; MCTS_TUNING_5 says
why Thompson rollouts are not the default).

MAST rollouts (temperature 0.1, 20% uniform picks) needed ~0.30x as many evaluations as random search to reach
the top 1% (geometric mean over the tuning tables: shapes 3x6x6x5x4x4, 6^5, 10x10x8x8, 4^7, table seeds
101-106, 20 search seeds each) against ~0.48x for uniform rollouts; with strong interactions (sd 1.0 instead
of 0.3, seeds 107-108) 0.29x against 0.35x. Temperatures 0.05-0.2 and 0-20% uniform picks all gave 0.28-0.35x.
"""

MCTS_DEFAULT_NORM = "rank"
"""How the search's statistics normalise a reward: ``"rank"``, the fraction of the told rewards at or below it, or
``"minmax"``, its place between a floor (``norm_quantile``) and the best reward (see :class:`MCTS`)."""

MCTS_TUNING_4 = """Tuning note for norm, and c with it. A second table of measured rewards,
bench/data/measured_rewards_fashion_mnist.csv (the sub-space of bench/data/measured_rewards.csv scored on
Fashion-MNIST; bench/measured_table.py), showed what min-max normalisation does to real rewards: a few rewards far
below the rest (-6 against a median of -1.39) squeeze every other candidate into the top few per cent of [0, 1], so
UCT picks by its exploration term alone (round-robin at the root) and MAST's softmax is almost uniform. Ranks are
immune to that and to any monotone change of the reward's scale (the rewards of --reward differ in scale).
Tables: the fashion one, gated seeds 1-6, structured 1-4 and twelve more gated (301-306, 406-408, 411, 412, 424),
23 in all, none of them reported. MCTS's median evaluations to the top 1% over 60 search seeds divided by random
search's (200 seeds): geometric mean (worst table), and the runs "stuck" above 5x random's median, of 1,380:
minmax c 0.7 (the previous defaults) 0.33 (1.43, the fashion table), 14 stuck; rank c 0.25 0.33 (0.62), 259
stuck; rank c 1.0 / 1.2 / 1.4 / 2.0: 0.35 (1.59) 50, 0.32 (0.55) 15, 0.32 (0.61) 5, 0.32 (0.76) 0. The fashion
table alone: minmax c 0.7 1.43, rank c 2.0 0.76. A low c looks good by the median and locks runs into one branch:
a median misses that, so the count of stuck runs decided. To measure that count better, 30 more gated tables
(seeds 501-530, 30 search seeds each, 900 runs): rank c 1.4 0.34 (0.80), 5 stuck; rank c 2.0 0.32 (0.52), 0
stuck; minmax c 0.7 0.34 (0.53), 1 stuck. Tried and not kept: the tail estimate (mean + 2 sd, or + 2 upper
semi-deviations) taken in reward units and then ranked (no stuck runs, but the fashion table 1.35 / 1.33); ranks
for the tree only (42x on gated 2 at c 0.3), for MAST only (fashion 1.21); the mean of rank and min-max values
(0.33 (0.60)); an upper semi-deviation instead of the sd in tail_z (fashion 0.79 with min-max; on skewed gated
tables 0.40 against 0.35); a MAST choice worth mean + k upper semi-deviations (fashion 0.57 at k 2, skewed gated
tables 0.36 (0.71))."""

MCTS_DEFAULT_NORM_QUANTILE = 0.0
"""Values are normalised between this quantile of the told rewards (values below it are raised to it) and the best
reward told; 0 is min-max normalisation (see :class:`MCTS`)."""

MCTS_DEFAULT_EXPAND = "mast"
"""How an untried child is chosen when a node expands: ``"random"`` or ``"mast"`` (as a rollout would pick)."""

MCTS_TUNING_3 = """Tuning note for expand and norm_quantile. Tables never reported: gated (2x6x6x5x4x4) seeds 1-6,
structured (the P3 shape with its exclusions) seeds 1-4, and eight tables of synthetic rewards on the paths of
bench/data/measured_rewards.csv (its rewards unused: per first choice an offset and a scale of 0.3 or 1, additive
effects with first-choice interactions, pairwise interactions, noise; odd seeds through -exp(-0.6 x), which gives a
long low tail). Evaluations to the top 1% divided by random search's median (100 seeds), geometric mean per family
(worst table), 40 search seeds: expand random (the previous defaults, 20 seeds) gated 0.29 (0.50), structured 0.36
(0.43), measured-like 0.37 (0.84); expand mast 0.25 (0.46), 0.23 (0.31), 0.30 (0.57); with norm_quantile 0.1 the
same (0.25 (0.39), 0.23 (0.31), 0.30 (0.58)). Not kept: normalising from the 25% or 50% quantile (at 20 seeds one
gated table 5.5x / 10x random: a branch whose samples fall below the floor loses its spread and is never revisited),
tail_z 1.5, fpu 0.1, mast_context 2, mast_prior 1, mast_tau 0.05 / 0.15, c 0.4 / 0.5 / 1.0 (all within noise or
worse). norm_quantile 0.1 was first the default; the reported gated table then showed that lock-in (a median of
2,892), and the default went back to 0. Also tried afterwards, with six more gated-at-a-deeper-level tables (one level
1-5 scales and shifts the rest per option, P3 shape, seeds 1-6; 20 search seeds), against the kept defaults'
0.26 / 0.22 / 0.31 / 0.30 (gated / structured / measured-like / deeper): a MAST choice worth mean + k sd, k 0.5 / 1 /
2: 0.32 / 0.30 / 0.31 / 0.34, 0.28 / 0.28 / 0.34 / 0.27, 0.35 / 0.32 / 0.39 / 0.37; a MAST temperature relative to
the spread of the option means (0.5 / 1 / 2 sd): 0.31 / 0.32 / 0.30 / 0.33, 0.31 / 0.30 / 0.32 / 0.32, 0.42 / 0.48 /
0.36 / 0.42. None kept."""

ROLLOUTS = ("mast", "random", "thompson")

TS_DEFAULT_PRECISION = 3.0
"""Prior precision of each (level, option) weight of the additive model (prior sd ``ts_scale / sqrt(ts_precision)``)."""

TS_DEFAULT_CONTEXT_PRECISION = 0.3
"""Prior precision of each (first choice, level, option) weight: a wider prior than the global weights', so that a
branch's own rewards soon outweigh what was learned under the other first choices (see MCTS_TUNING_5)."""

TS_DEFAULT_SCALE = 0.05
"""Noise scale of the additive model: the posterior sd of a weight told n times is ``ts_scale / sqrt(n +
ts_precision)``."""

TS_DEFAULT_POWER = 4.0
"""The model learns rank ** ts_power: a choice is worth how often it reaches the top more than its typical reward."""

MCTS_TUNING_5 = """Tuning note for the Thompson rollout (issue 15). The measured tables were first remade the way the
search keys candidates (bench/measured_table.py now keys by the function computed, so `attention(2) -> normalize(c)`
and `attention(2)` are one candidate; the digits table also gained the per-term rejections: 437 distinct functions,
432 scored). On the remade Fashion-MNIST table MAST rollouts needed 0.94x random search's evaluations to the top 1%:
its best candidates use `pearson` and weight 10, choices whose *mean* reward is poor, so rollouts that follow the
mean steer away from them. Tables never reported: the fashion table, gated seeds 1-6 and 301-303, structured seeds
1-4, 40 search seeds (random: 200); MCTS's median ÷ random's, geometric mean (worst table): MAST 0.323 (0.94);
Thompson rollouts on rank values, scale 0.1, 0.301 (0.94); MAST on rank ** 4 0.326 (0.78), rank ** 8 0.360 (0.82);
Thompson on rank ** 2 (scale 0.1) 0.299 (0.76), on rank ** 4 scale 0.07 0.283 (0.76), scale 0.05 0.275 (0.80). On
eleven more (gated 304-306, 406-408, 411, 412, structured 311-313): MAST 0.303 (0.38), Thompson rank ** 4 scale 0.07
0.268 (0.40), scale 0.05 0.251 (0.30). No run got stuck (above 5x random's median) in any of these. With c 1.0 or
1.4 the fashion table improves (0.52-0.71) but gated table 2 gets 4-15 stuck runs of 40-200: c stays 2.0.
Thompson rollouts (scale 0.05, rank ** 4) were then measured by bench/search_efficiency.py, 20 search seeds: on its
60 fresh tables (gated and structured seeds 7-36) they beat MAST (median ratio 0.24 / 0.26 against 0.33 / 0.37, at
most 0.5 on 29 / 30 tables of each kind against 27 / 26, no stuck run), but on the reported gated table (seed 0)
half the runs locked into one branch (median 2.78x random against MAST's 0.88x, worst run 2,920 evaluations), and on
the reported measured table they needed 0.72x against MAST's 0.59x. A default must not lock in: MAST stays.
Lock-in was then looked for on fresh gated tables (600-799, 10 search seeds): Thompson 7 stuck runs of 2,000, MAST 1,
mostly on tables 702 and 721, whose best candidates lie under the first choice with the lower mean. There the
starved branch's rollouts followed weights learned under the other first choice: the (first choice, level, option)
weights had the same narrow prior as the global ones. Stuck runs over gated 628, 702, 721, 731 and 527 (60 search
seeds, 300 runs), global / context prior precision: 1 / 1 (the first Thompson rollouts) 39, 3 / 3 43, 1 / 0.1 13,
3 / 0.1 3, 3 / 0.3 10, 10 / 0.1 8; MAST 5. On 200 further fresh gated tables (800-999, 10 seeds, 2,000 runs): 1 / 1
10 stuck (geometric mean 0.274), 1 / 0.1 4 (0.285), 3 / 0.3 3 (0.272), 10 / 0.1 4 (0.291); MAST 0 (0.325). On the
tuning tables above: 1 / 1 0.275 (0.80), 3 / 0.3 0.295 (0.84). Kept: 3 / 0.3. ε-uniform picks in the rollout (10%,
20%) did not lower the stuck runs (15 against 17 on the five tables, 30 seeds) and were dropped. With 3 / 0.3 the
reported tables read 0.31 / 0.80 / 0.67 (structured / gated / measured, 20 seeds; MAST 0.26 / 0.88 / 0.59), and some
runs on the reported gated table still lock in (mean 153 evaluations at 100 seeds, MAST's 52): MAST stays."""

MAST_DEFAULT_TAU = 0.1
MAST_DEFAULT_EPSILON = 0.2

MCTS_DEFAULT_TAIL_Z: float | None = 2.0
"""A node is worth the larger of its best reward and ``mean + tail_z · sd`` of the rewards below it (see
:class:`MCTS`). With ``max_weight`` 1 alone a branch whose typical candidate is poor but whose spread is wide
(it holds the best candidates) is explored only once one of its samples beats the best of a narrow branch with
a higher mean; the spread says so after two or three samples."""

MAST_DEFAULT_CONTEXT = 1
"""MAST statistics are also kept per first choice (the tap, in a distiller space: it decides what every later
choice means), and a rollout uses a choice's mean among candidates with the same first choice, shrunk towards
its global mean with weight ``mast_prior``."""

MAST_DEFAULT_PRIOR = 0.3

MCTS_TUNING_2 = """Tuning note for tail_z, mast_context and mast_prior (issue 15). Tables never reported: gated
(:meth:`TabulatedSpace.gated`, 2x6x6x5x4x4) seeds 301-306 and structured (the P3 shape with its exclusions) seeds
311-313, 40 search seeds each; evaluations to the top 1% ÷ random search's, geometric mean (worst table):
previous defaults 0.32 (0.50); tail_z 2 + mast_context 1 (prior 0.3) 0.30 (0.40); the same with prior 1.0
0.31 (0.52), with c 0.5 0.35 (0.74); tail_z 2.5 0.34 (0.69). At 20 seeds: tail_z 1 / 2 / 3 alone 0.34 (0.86) /
0.30 (0.54) / 0.33 (0.83); mast_context 1 alone, prior 0.3 / 1 / 3: 0.29 (0.55) / 0.33 (0.79) / 0.35 (0.72).
On six more gated tables where the branch with the lower mean holds the top 1% (seeds 406, 407, 408, 411, 412,
424; 20 search seeds): the new defaults 0.50 / 0.51 / 0.36 / 0.52 / 0.13 / 0.41, the previous ones 0.65 / 0.66 /
0.40 / 0.84 / 0.21 / 0.32. Tried and not kept: shrinking a node's spread towards the tree's (worst 0.60-0.81),
three or four forced visits per first-level option (worst 0.78-0.94)."""


class MCTS(_StrategyBase):
    """Monte Carlo tree search over the levels of a choice space, as in Auto-KD.

    The tree holds one level per choice node: a :class:`~autokd_dsl.search.tree.Node` per prefix (``visits``,
    ``value_sum``, ``best``, ``pending``, ``label`` and its children by option); :meth:`tree_graph` exports it.

    * **Selection** descends from the root by ``selection(q, n, parent_n, c)`` (default :func:`uct`; at the root
      with ``c * root_c_scale``, default 1.5: the first choice, the tap in a distiller space, splits the space into
      branches whose rewards differ in scale, and a wider look there keeps a poor-on-average branch alive; with
      ``root="tail"``, see below). A
      node's value ``q`` is ``(1 - max_weight) * mean + max_weight * best`` over the rewards backed up through
      it, normalised so that ``c`` is scale-free: by default (``norm="rank"``) each reward counts as the fraction
      of the told rewards at or below it, so a few very poor candidates cannot squeeze the rest together, and a
      monotone change of the reward changes nothing; with ``norm="minmax"`` the floor (see Backup) is 0 and the
      best reward told is 1.
      The search looks for the single best candidate, so by default (``max_weight=1``) a branch is worth its best
      candidate, not its average: a branch whose typical candidate is poor but which holds the best ones is not
      abandoned after one unlucky sample. ``max_weight=0`` is classic mean-value UCT. With ``tail_z`` (default 2) a
      node of two or more visits is worth at least ``mean + tail_z * sd`` of the values below it, an estimate of its
      upper tail, so a wide branch is deepened before one of its samples happens to beat a narrow branch. Subtrees
      whose candidates were all proposed are skipped.
    * **Tail root** (``root="tail"``): once every first choice has two told or pending candidates, the root picks,
      in all but ``root_mix`` of the asks (those pick by UCT), the first choice whose next candidate most probably
      beats the best reward told. Each branch's rewards (rejections left out) are modelled as normal, with mean and
      variance shrunk towards those of all told rewards with weight ``root_prior``; the mean is drawn from its
      posterior (sd / sqrt(n + root_prior + pending)), and the branch with the largest P(reward > best) is taken.
      A branch with a poor mean but a wide spread is worth more than a narrow one whose best is already known,
      and the rule needs no exploration constant.
    * **Expansion** adds ONE untried child at a time: with ``expand="mast"`` (default) picked among the untried
      legal options as the rollout would pick (so the tree grows first towards choices that did well
      elsewhere), with ``expand="random"`` uniformly.
      With ``fpu=None`` a node expands all its children before descending (classic UCT). With a float
      ``fpu`` (first-play urgency), the untried children are scored as one child with a single visit at
      the parent's normalised value minus ``fpu``; the node expands only when that beats every tried child,
      so good branches are deepened before all their siblings are tried.
    * **Rollout** completes the remaining levels. ``rollout="random"``: uniformly over the legal options.
      ``rollout="mast"`` (Move-Average Sampling Technique, Finnsson & Bjornsson 2008): every choice
      (level, option) keeps the mean of the rewards of all told candidates that made it, and a rollout picks
      among the legal options by a softmax of those means (normalised as above, temperature ``mast_tau``;
      a choice never told counts as 0.5), or uniformly with probability ``mast_epsilon``. A choice's
      statistics are shared across the whole tree, so what is learned under one branch guides rollouts under
      every other; with ``mast_context`` k (default 1) they are also kept per first k choices, and a rollout
      uses the mean among candidates sharing its first k choices, shrunk towards the global mean with weight
      ``mast_prior`` (a choice after a `logits` tap need not be good after a `stage3` tap).
      ``rollout="thompson"``: a Bayesian additive model of the reward over the choices (one weight per
      (level, option) and per (first ``mast_context`` choices, level, option); :mod:`~autokd_dsl.search.surrogate`)
      is fitted jointly to every told candidate's rank to the power ``ts_power``, its weights are drawn once per ask
      from the posterior (Thompson sampling), and the rollout takes at each level the legal option whose drawn
      weights are largest. A joint fit does not credit a choice with the effect of another it was often made with,
      and the power makes a choice worth how often it reaches the top, not its typical reward (strong weights and
      scale-free distances are poor on average and hold the best candidates). Expansion picks among the untried
      options the same way.
    * **Backup** adds the reward to every tree node on the path and raises their ``best``. The search's own
      statistics hold rewards raised to a floor: the ``norm_quantile`` of the told rewards (default 0, the
      minimum), moved as rewards come (whenever their number has grown by 10%). A rejected candidate stays at
      that floor wherever it moves, so its branch looks as poor as the worst candidate told, also when it was
      rejected before any reward (the exported ``value_sum`` and ``best`` keep :meth:`backup_value`: the
      minimum at the time, or 0.0). :meth:`retell` replaces a reward everywhere it was counted.

    Pending paths (asked, not told) count as visits at the current minimum reward (virtual loss) in the mean
    and in the visit count, so several asks in a row spread out over the tree. When a rollout ends on a key
    already told, its known reward is backed up along that path and the ask retries (``max_retries`` times,
    then a random unseen path); when nothing unseen is left, ``ask`` returns None.
    """

    def __init__(
        self,
        space: ChoiceSpace,
        seed: int = 0,
        c: float = MCTS_DEFAULT_C,
        selection: SelectionRule = uct,
        fpu: float | None = MCTS_DEFAULT_FPU,
        max_retries: int = 16,
        rollout: str = MCTS_DEFAULT_ROLLOUT,
        mast_tau: float = MAST_DEFAULT_TAU,
        mast_epsilon: float = MAST_DEFAULT_EPSILON,
        mast_context: int = MAST_DEFAULT_CONTEXT,
        mast_prior: float = MAST_DEFAULT_PRIOR,
        tail_z: float | None = MCTS_DEFAULT_TAIL_Z,
        max_weight: float = MCTS_DEFAULT_MAX_WEIGHT,
        norm_quantile: float = MCTS_DEFAULT_NORM_QUANTILE,
        expand: str = MCTS_DEFAULT_EXPAND,
        norm: str = MCTS_DEFAULT_NORM,
        ts_precision: float = TS_DEFAULT_PRECISION,
        ts_scale: float = TS_DEFAULT_SCALE,
        ts_power: float = TS_DEFAULT_POWER,
        ts_context_precision: float = TS_DEFAULT_CONTEXT_PRECISION,
        root_c_scale: float = MCTS_DEFAULT_ROOT_C_SCALE,
        root: str = MCTS_DEFAULT_ROOT,
        root_mix: float = MCTS_DEFAULT_ROOT_MIX,
        root_prior: float = 1.0,
    ) -> None:
        super().__init__(space, seed)
        self.c = float(c)
        if root not in ROOT_RULES:
            raise ValueError(f"root must be one of {', '.join(ROOT_RULES)}, not {root!r}")
        if not 0 <= root_mix <= 1 or root_prior <= 0:
            raise ValueError("root_mix must be in [0, 1] and root_prior > 0")
        self.root_rule, self.root_mix, self.root_prior = root, float(root_mix), float(root_prior)
        if root_c_scale <= 0:
            raise ValueError("root_c_scale must be > 0")
        self.root_c_scale = float(root_c_scale)
        self.selection = selection
        self.fpu = None if fpu is None else float(fpu)
        self.max_retries = int(max_retries)
        if rollout not in ROLLOUTS:
            raise ValueError(f"rollout must be one of {', '.join(ROLLOUTS)}, not {rollout!r}")
        if mast_tau <= 0 or not 0 <= mast_epsilon <= 1:
            raise ValueError("mast_tau must be > 0 and mast_epsilon in [0, 1]")
        if not 0 <= max_weight <= 1:
            raise ValueError("max_weight must be in [0, 1]")
        self.max_weight = float(max_weight)
        if not 0 <= norm_quantile < 1:
            raise ValueError("norm_quantile must be in [0, 1)")
        if expand not in ("mast", "random"):
            raise ValueError(f"expand must be 'mast' or 'random', not {expand!r}")
        self.norm_quantile = float(norm_quantile)
        self.expand = expand
        if norm not in ("rank", "minmax"):
            raise ValueError(f"norm must be 'rank' or 'minmax', not {norm!r}")
        self.norm = norm
        self._ref: list[float] = []  # norm="rank": the told rewards at the last rebase, ascending
        self._sorted: list[float] = []  # told rewards (not rejections), ascending
        self._raw: dict[str, float | None] = {}  # key -> the reward in _sorted (None: a rejection)
        self._lo: float | None = None  # the floor values are raised to (a quantile of the told rewards)
        self._next_rebase = 1
        # per (level, option) and per (context, level, option): the values told, and their sum above the floor
        self._move_values: dict[tuple, list[float]] = {}
        self._move_clip: dict[tuple, float] = {}
        self.rollout = rollout
        if ts_precision <= 0 or ts_scale <= 0 or ts_power <= 0:
            raise ValueError("ts_precision, ts_scale and ts_power must be > 0")
        self.ts_power = float(ts_power)
        self._model = AdditiveModel(context=mast_context, precision=ts_precision, scale=ts_scale,
                                    context_precision=ts_context_precision)
        self._model_paths: dict[Path, int] = {}  # told path -> its row in the model
        self._model_raw: list[float] = []  # the model's rows: the raw reward (-inf: a rejection)
        self._weights: Callable[[tuple], float] | None = None  # this ask's Thompson draw
        self.mast_tau = float(mast_tau)
        self.mast_epsilon = float(mast_epsilon)
        self._moves: dict[tuple[int, int], list[float]] = {}  # (level, option) -> [value sum, count]
        self.mast_context = int(mast_context)
        self.tail_z = None if tail_z is None else float(tail_z)
        self.mast_prior = float(mast_prior)
        # (first mast_context choices, level, option) -> [value sum, count], for levels after the context
        self._context_moves: dict[tuple[Path, int, int], list[float]] = {}
        self.root = Node((), "root")
        self.nodes: dict[Path, Node] = {(): self.root}  # every tree node by prefix, in the order added
        self._credited: dict[Path, list[Node]] = {}  # pending path -> tree nodes given a virtual visit

    # -- statistics ----------------------------------------------------------------------------------

    def _span(self) -> tuple[float, float] | None:
        """(floor, max - floor) of the normalisation, or None while all told rewards are equal (or none). Ranks are
        already in [0, 1]: (0, 1)."""
        if self.norm == "rank":
            return (0.0, 1.0) if self._ref and self._ref[0] < self._ref[-1] else None
        lo = self._lo
        if lo is None or self.rmax is None or self.rmax <= lo:
            return None
        return lo, self.rmax - lo

    def _clip(self, value: float) -> float:
        """A reward as the statistics hold it: ``norm="rank"``, the fraction of the rewards told by the last rebase
        that are at or below it (a rejection: 0); ``"minmax"``, raised to the floor."""
        if self.norm == "rank":
            return bisect.bisect_right(self._ref, value) / len(self._ref) if self._ref else 0.0
        return value if self._lo is None or value > self._lo else self._lo

    def _unit(self, value: float) -> float:
        """A reward as the additive model of Thompson rollouts learns it: on the statistics' [0, 1] scale (0.5 while
        the scale is unknown), to the power ``ts_power``."""
        span = self._span()
        return 0.5 if span is None else ((self._clip(value) - span[0]) / span[1]) ** self.ts_power

    def _rebase(self, force: bool = False) -> None:
        """Move the floor to the ``norm_quantile`` of the told rewards (``norm="rank"``: take the told rewards as
        the ranks' reference) and recompute the sums. Runs when the number of told rewards has grown by 10% since
        the last time, so the normalisation settles as rewards come."""
        n = len(self._sorted)
        if n == 0:
            return
        lo = self._sorted[int(self.norm_quantile * (n - 1))]
        if lo >= self._sorted[-1]:
            lo = self._sorted[0]
        self._next_rebase = max(n + 1, math.ceil(n * 1.1))
        if self.norm == "rank":
            self._ref = list(self._sorted)
        elif lo == self._lo and not force:
            return
        self._lo = lo
        for node in self.nodes.values():
            clipped = [self._clip(v) for v in node.values]
            node.clip_sum = sum(clipped)
            node.clip_sq = sum(v * v for v in clipped)
        for key, values in self._move_values.items():
            self._move_clip[key] = sum(self._clip(v) for v in values)
        if self.rollout == "thompson":
            self._model.revalue([self._unit(v) for v in self._model_raw])

    def _q(self, node: Node) -> tuple[float, int]:
        """(normalised value, visits incl. pending) of a node: ranks, or (``norm="minmax"``) values raised to the
        floor (``norm_quantile``) and scaled so that the floor is 0 and the best reward told is 1; pending visits
        count at 0."""
        n = node.visits + node.pending
        if n == 0:
            return 0.0, 0
        span = self._span()
        if span is None:
            return 0.5, n
        lo, width = span
        k = len(node.values)
        mean = (node.clip_sum - k * lo) / width / n if k else 0.0
        if self.tail_z is not None and k >= 2:
            m = node.clip_sum / k
            sd = math.sqrt(max(0.0, node.clip_sq / k - m * m))
            tail = (m - lo + self.tail_z * sd) / width
            best = (self._clip(node.top) - lo) / width
            return (max(best, tail) if self.max_weight else tail), n
        if self.max_weight and k:
            best = (self._clip(node.top) - lo) / width
            return (1.0 - self.max_weight) * mean + self.max_weight * best, n
        return mean, n

    # -- tree operations -----------------------------------------------------------------------------

    def _add_child(self, parent: Path, option: int) -> Path:
        child = Node(parent + (option,), self._label(parent, option))
        self.nodes[parent].children[option] = child
        self.nodes[child.prefix] = child
        return child.prefix

    def _label(self, prefix: Path, option: int) -> str:
        """The option's text for the tree: in context (``option_label(prefix, option)``, as the candidate prints it)
        when the space offers that, else ``label(level, option)``."""
        in_context = getattr(self.space, "option_label", None)
        if in_context is not None:
            return str(in_context(prefix, option))
        return str(self.space.label(len(prefix), option))

    def _in_tree(self, path: Path) -> list[Node]:
        """The tree nodes on ``path``, from the root down."""
        out = [self.root]
        node = self.root
        for option in path:
            node = node.children.get(option)
            if node is None:
                break
            out.append(node)
        return out

    def _backup(self, path: Path, value: float, reward: float | None) -> None:
        """Back up a told candidate: ``value`` (the exported statistics) and ``reward`` (the search's: a rejection
        stays at the floor, wherever the floor moves)."""
        own = -math.inf if reward is None else reward
        clipped = self._clip(own)
        for node in self._in_tree(path):
            node.visits += 1
            node.value_sum += value
            node.value_sq += value * value
            node.best = max(node.best, value)
            node.values.append(own)
            node.top = max(node.top, own)
            node.clip_sum += clipped
            node.clip_sq += clipped * clipped

    def _select_expand(self) -> tuple[Path, bool]:
        """Descend by the selection rule; return (node to roll out from, whether it was just added)."""
        node = self.root
        first = self._tail_pick() if self.root_rule == "tail" else None
        if first is not None:
            node = self.root.children[first]
        while node.level < self.levels:
            free = self._free(node.prefix)
            if not free:
                return node.prefix, False
            c = self.c * self.root_c_scale if node.level == 0 else self.c
            parent_q, parent_n = self._q(node)
            best_child, best_score = None, -math.inf
            untried = []
            for option in free:
                child = node.children.get(option)
                if child is None:
                    untried.append(option)
                    continue
                q, n = self._q(child)
                score = math.inf if n == 0 else self.selection(q, n, parent_n, c)
                if score > best_score:
                    best_child, best_score = child, score
            if untried:
                if self.fpu is None or best_child is None:
                    expand = True
                else:
                    expand = self.selection(parent_q - self.fpu, 1, parent_n, c) >= best_score
                if expand:
                    if self.expand == "mast" and self.rollout != "random":
                        option = self._guided_pick(node.prefix, untried)
                    else:
                        option = self.rng.choice(untried)
                    return self._add_child(node.prefix, option), True
            assert best_child is not None
            node = best_child
        return node.prefix, False

    def _tail_pick(self) -> int | None:
        """``root="tail"``: the first choice whose next candidate most probably beats the best reward told, or None
        (pick by UCT) in ``root_mix`` of the asks and until every free first choice has two told or pending
        candidates."""
        free = self._free(())
        if len(free) < 2 or self.root_mix >= 1 or self.rng.random() < self.root_mix:
            return None
        branches = {}
        for option in free:
            child = self.root.children.get(option)
            if child is None:
                return None
            rewards = [v for v in child.values if v > -math.inf]
            if len(rewards) + child.pending < 2:
                return None
            branches[option] = (rewards, child.pending)
        told = [v for v in self.root.values if v > -math.inf]
        if len(told) < 3:
            return None
        mean_all, var_all = statistics.fmean(told), statistics.pvariance(told)
        if var_all <= 0:
            return None
        best, k = max(told), self.root_prior
        scores = []
        for option in free:
            rewards, pending = branches[option]
            n = len(rewards)
            mean = statistics.fmean(rewards) if n else mean_all
            var = statistics.pvariance(rewards) if n > 1 else 0.0
            mean = (n * mean + k * mean_all) / (n + k)
            sd = math.sqrt((n * var + k * var_all) / (n + k))
            mean += self.rng.gauss(0.0, 1.0) * sd / math.sqrt(n + k + pending)
            scores.append(0.5 * math.erfc((best - mean) / (sd * math.sqrt(2.0))))
        return free[max(range(len(free)), key=scores.__getitem__)]

    # -- ask/tell ------------------------------------------------------------------------------------

    def ask(self) -> tuple[int, ...] | None:
        for _ in range(self.max_retries):
            if self.exhausted:
                return None
            self._weights = None
            node, created = self._select_expand()
            path = self._rollout(node)
            if path is None:
                self._drop_if_unvisited(node, created)
                continue
            key = self.space.key(path)
            if key in self._told:
                self._mark_exhausted(path)
                self._backup(path, self.backup_value(self._told[key]), self._told[key])
                continue
            if key in self._pending_keys:
                self._mark_exhausted(path)
                self._drop_if_unvisited(node, created)
                continue
            return self._start(path)
        path = self._random_unseen(())
        return None if path is None else self._start(path)

    def _rollout(self, prefix: Path) -> Path | None:
        """Complete ``prefix`` by the rollout policy over non-exhausted legal options (None: a dead end)."""
        if self.rollout == "random":
            return self._complete(prefix)
        path = prefix
        while len(path) < self.levels:
            free = self._free(path)
            if not free:
                self._mark_exhausted(path)
                return None
            path = path + (self._guided_pick(path, free),)
        return path

    def _guided_pick(self, prefix: Path, free: list[int]) -> int:
        return self._model_pick(prefix, free) if self.rollout == "thompson" else self._mast_pick(prefix, free)

    def _model_pick(self, prefix: Path, free: list[int]) -> int:
        """The option whose weights in this ask's Thompson draw of the additive model are largest."""
        if self._weights is None:
            self._weights = self._model.draw(self.rng)
        weight, level = self._weights, len(prefix)
        scores = [sum(weight(f) for f in self._model.features(prefix, level, o)) for o in free]
        return free[max(range(len(free)), key=scores.__getitem__)]

    def _move_mean(self, prefix: Path, option: int, lo: float, width: float) -> float | None:
        """The normalised mean value of choosing ``option`` after ``prefix``: the global (level, option) mean, or
        with ``mast_context`` the mean among candidates that share the first choices, shrunk towards the global one."""
        level = len(prefix)
        values = self._move_values.get((level, option))
        if not values:
            return None
        mean = (self._move_clip[(level, option)] / len(values) - lo) / width
        if self.mast_context and level >= self.mast_context:
            key = (prefix[: self.mast_context], level, option)
            local = self._move_values.get(key)
            if local:
                local_sum = (self._move_clip[key] - len(local) * lo) / width
                mean = (local_sum + self.mast_prior * mean) / (len(local) + self.mast_prior)
        return mean

    def _mast_pick(self, prefix: Path, free: list[int]) -> int:
        span = self._span()
        if self.rng.random() < self.mast_epsilon or span is None:
            return self.rng.choice(free)
        means = []
        for option in free:
            mean = self._move_mean(prefix, option, *span)
            means.append(0.5 if mean is None else mean)
        top = max(means)
        weights = [math.exp((m - top) / self.mast_tau) for m in means]
        draw = self.rng.random() * sum(weights)
        for option, weight in zip(free, weights):
            draw -= weight
            if draw <= 0:
                return option
        return free[-1]

    def _drop_if_unvisited(self, prefix: Path, created: bool) -> None:
        if created:
            node = self.nodes[prefix]
            if node.visits == 0 and node.pending == 0 and not node.children:
                del self.nodes[prefix]
                del self.nodes[prefix[:-1]].children[prefix[-1]]

    def _on_start(self, path: Path) -> None:
        credited = self._in_tree(path)
        for node in credited:
            node.pending += 1
        self._credited[path] = credited

    def _move_keys(self, path: Path) -> list[tuple]:
        """The MAST entries a told path adds to: (level, option) per level, and (context, level, option)."""
        keys: list[tuple] = []
        for level, option in enumerate(path):
            keys.append((level, option))
            if self.mast_context and level >= self.mast_context:
                keys.append((path[: self.mast_context], level, option))
        return keys

    def _on_tell(self, path: Path, key: str, value: float) -> None:
        for node in self._credited.pop(path, []):
            node.pending -= 1
        self._raw[key] = self._told[key]
        if self._told[key] is not None:
            bisect.insort(self._sorted, self._told[key])
        if len(self._sorted) >= self._next_rebase:
            self._rebase()
        reward = self._told[key]
        self._backup(path, value, reward)
        for level, option in enumerate(path):
            stats = self._moves.setdefault((level, option), [0.0, 0])
            stats[0] += value
            stats[1] += 1
        own = -math.inf if reward is None else reward
        clipped = self._clip(own)
        for move in self._move_keys(path):
            self._move_values.setdefault(move, []).append(own)
            self._move_clip[move] = self._move_clip.get(move, 0.0) + clipped
        if self.rollout == "thompson":
            self._model_paths[path] = len(self._model_raw)
            self._model_raw.append(own)
            self._model.add(path, self._unit(own))

    def _on_retell(self, path: Path, key: str, old: float, new: float) -> None:
        before, after = self._raw.get(key), self._told[key]
        old_own = -math.inf if before is None else before
        new_own = -math.inf if after is None else after
        for node in self._in_tree(path):
            if old_own not in node.values:  # the node joined the tree after the path was told
                continue
            node.values.remove(old_own)
            node.values.append(new_own)
            node.top = max(node.values)
            node.value_sum += new - old
            node.value_sq += new * new - old * old
            if new >= node.best:
                node.best = new
            elif old >= node.best:  # the best went down: the best of the other candidates below this node
                node.best = max(v for p, v in self._values.items() if p[: node.level] == node.prefix)
        for level, option in enumerate(path):
            self._moves[(level, option)][0] += new - old
        for move in self._move_keys(path):
            values = self._move_values[move]
            values.remove(old_own)
            values.append(new_own)
        if before is not None:
            del self._sorted[bisect.bisect_left(self._sorted, before)]
        if after is not None:
            bisect.insort(self._sorted, after)
        self._raw[key] = after
        if path in self._model_paths:
            self._model_raw[self._model_paths[path]] = new_own
        self._rebase(force=True)

    def tree_graph(self) -> nx.DiGraph:
        """A snapshot of the search tree as a ``networkx.DiGraph`` (node ids are prefix tuples; see
        :func:`autokd_dsl.search.tree.tree_graph`)."""
        return tree_graph(self.nodes)
