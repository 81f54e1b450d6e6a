"""Training-free weights of several teachers, for terms that tap each teacher (`teachers.logits`).

Like `kernels`, this module is copied verbatim into compiled files: torch and the standard library only. Every
rule gives K weights (one per teacher) that sum to 1:

- ``equal``: 1/K (fixed).
- ``confidence``: CA-MKD (Zhang, Chen, Wang, ICASSP 2022), per sample and recomputed on every batch:
  ``w_k = (1 - softmax_k(CE_k)) / (K - 1)`` with ``CE_k`` teacher k's cross-entropy on the sample's label, so a
  teacher that is surer of the right class weighs more.
- ``agreement``: how well the student's activations agree with teacher k's, as the term's distance sees them
  (after its transforms), on the first training batch: linear CKA (Kornblith et al., 2019) or the mean cosine
  similarity, clipped at 1e-6 and normalised to sum 1. Then kept (a buffer, saved with the connectors).
- ``balance``: loss balancing on the first training batch: ``w_k = mean_j(L_j) / (K · L_k)``, so every teacher's
  weighted loss starts out equal and together they equal the mean loss. Then kept.
"""

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels  # in a compiled file, the kernels namespace defined above this code


def equal(teachers):
    """K weights of 1/K."""
    return torch.full((teachers,), 1.0 / teachers)


def confidence(labels, logits=()):
    """(K, N) CA-MKD weights from the teachers' logits (a sequence of K (N, classes) tensors) and the labels."""
    ce = torch.stack([F.cross_entropy(z, labels, reduction="none") for z in logits])
    if len(logits) == 1:
        return torch.ones_like(ce)
    return (1.0 - ce.softmax(0)) / (len(logits) - 1)


def linear_cka(x, y):
    """Linear CKA between two batches of activations (any shapes with the same batch size), in [0, 1]."""
    x, y = x.detach().flatten(1).double(), y.detach().flatten(1).double()
    x, y = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
    gx, gy = x @ x.T, y @ y.T  # centred Gram matrices (N, N): cheaper than the feature products when N is small
    denom = gx.norm() * gy.norm()
    return (gx * gy).sum() / denom if denom > 0 else torch.zeros((), dtype=x.dtype, device=x.device)


def mean_cosine(x, y):
    """The batch mean of the per-sample cosine similarity of two activations of one shape."""
    return F.cosine_similarity(x.detach().flatten(1), y.detach().flatten(1), dim=1, eps=1e-8).mean()


def normalised(scores):
    """Scores clipped at 1e-6 and divided by their sum (equal weights when every score is 0)."""
    scores = scores.clamp_min(1e-6)
    return scores / scores.sum()


def agreement(pairs, teachers=1, measure="cka"):
    """K weights from (student, teacher) activation pairs, ``len(pairs) / teachers`` pairs per teacher in
    teacher order (a term with several taps): each teacher's score is the mean over its taps."""
    score = linear_cka if measure == "cka" else mean_cosine
    scores = torch.stack([score(s, t).float() for s, t in pairs]).reshape(teachers, -1).mean(1)
    return normalised(scores)


def balance(losses):
    """K weights from the teachers' unweighted losses (a sequence): mean(L) / (K · L_k)."""
    values = torch.stack([torch.as_tensor(v).detach().float().reshape(()) for v in losses])
    if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
        return torch.full_like(values, 1.0 / len(values))
    return values.mean() / (len(values) * values)


def per_sample(distance, s, t, /, **kwargs):
    """The distance kernel ``distance`` (a name) on each sample on its own: (N,) values whose mean is the
    distance of the batch."""
    fn = getattr(kernels, distance)
    with warnings.catch_warnings():  # kl_div has no batching rule: vmap loops over the samples, and says so
        warnings.simplefilter("ignore", UserWarning)
        return torch.vmap(lambda a, b: fn(a.unsqueeze(0), b.unsqueeze(0), **kwargs))(s, t)


class TeacherWeights(nn.Module):
    """Weights fixed on the first training batch (``agreement``, ``balance``), then kept in a buffer.

    ``forward`` takes the K unweighted losses (``balance``) or the K (student, teacher) activation pairs
    flattened (``agreement``) and returns the K weights. Before the first training batch, in eval mode, it
    returns the weights of the batch it is given without keeping them.
    """

    def __init__(self, rule, teachers, measure="cka"):
        super().__init__()
        self.args = (rule, teachers, measure)
        self.rule, self.measure = rule, measure
        self.register_buffer("weights", torch.full((teachers,), 1.0 / teachers))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    def compute(self, values):
        with torch.no_grad():
            if self.rule == "balance":
                return balance(values)
            return agreement(list(zip(values[0::2], values[1::2])), len(self.weights), self.measure)

    def forward(self, *values):
        if bool(self.ready):
            return self.weights
        weights = self.compute(values).to(self.weights)
        if self.training:
            self.weights.copy_(weights)
            self.ready.fill_(True)
        return weights
