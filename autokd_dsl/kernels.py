"""Tensor implementations of the ops, one small function each (torch only).

This module is copied verbatim into every file `autokd-dsl compile` writes, so it imports nothing but torch
and the standard library. Kernels see real tensors; layouts are (N,C,H,W) maps, (N,L,D) tokens, (N,A,B)
matrices, (N,D) vectors / logits and (N,N) relations. ``dims`` arguments are resolved by the compiler.
"""

import torch
import torch.nn.functional as F

EPS = 1e-7


def _over(x, dims, fn):
    """Apply ``fn(x, dim)`` over several trailing dims by flattening them into one."""
    dims = tuple(dims)
    if len(dims) == 1:
        return fn(x, dims[0])
    first = dims[0]
    flat = x.flatten(first, dims[-1])
    return fn(flat, first).view(x.shape)


# ---- attention and masking ------------------------------------------------------------------------


def spatial_attention(x, p=2.0):
    return x.abs().pow(p).mean(1, keepdim=True)


def channel_attention(x):
    return x.mean((2, 3), keepdim=True)


def attention(x, p=2.0):
    return F.normalize(x.abs().pow(p).mean(1).flatten(1), dim=1)


def _position_mask(x, keep):
    shape = (x.shape[0], 1, *x.shape[2:]) if x.dim() >= 4 else x.shape[:2] + (1,) * (x.dim() - 2)
    return (torch.rand(shape, device=x.device) < keep).to(x.dtype)


def mask(s, t, ratio):
    m = _position_mask(t, 1.0 - ratio)
    return s * m, t * m


def dropout(s, t, p):
    m = (torch.rand_like(t) >= p).to(t.dtype) / (1.0 - p)
    return s * m, t * m


# ---- granularity ---------------------------------------------------------------------------------------


def pool(x, size):
    return F.adaptive_avg_pool2d(x, size)


def spp(x):
    return torch.cat([F.adaptive_avg_pool2d(x, k).flatten(1) for k in (1, 2, 4)], dim=1)


def patches(x, n):
    b, c, h, w = x.shape
    x = x.view(b, c, n, h // n, n, w // n).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * n * n, c, h // n, w // n)


def gap(x):
    return x.mean((2, 3)) if x.dim() == 4 else x.mean(1)


def flatten(x):
    return x.flatten(1)


def channel_flatten(x):
    return x.flatten(2)


# ---- relations and normalisations -----------------------------------------------------------------------


def batch_gram(x):
    f = x.flatten(1)
    return F.normalize(f @ f.t(), dim=1)


def channel_gram(x):
    f = x.flatten(2)
    return f @ f.transpose(1, 2) / f.shape[2]


def transpose(x):
    return x.t()


def softmax(x, t=1.0, dims=(1,)):
    return _over(x / t, dims, lambda v, d: v.softmax(d))


def log_softmax(x, t=1.0, dims=(1,)):
    return _over(x / t, dims, lambda v, d: v.log_softmax(d))


def normalize(x, dims=(1,)):
    return _over(x, dims, lambda v, d: F.normalize(v, dim=d))


def standardize(x, dims=(1,)):
    def z(v, d):
        return (v - v.mean(d, keepdim=True)) / (v.std(d, keepdim=True) + EPS)

    return _over(x, dims, z)


def minmax(x):
    f = x.flatten(1)
    lo, hi = f.min(1, keepdim=True).values, f.max(1, keepdim=True).values
    return ((f - lo) / (hi - lo + EPS)).view(x.shape)


# ---- element-wise -------------------------------------------------------------------------------------------


def abs(x):  # noqa: A001 - the op's name
    return x.abs()


def square(x):
    return x * x


def pow(x, e):  # noqa: A001 - the op's name
    return x.sign() * x.abs().pow(e)


def sqrt(x):
    return x.sign() * x.abs().sqrt()


def signed_log(x):
    return x.sign() * torch.log1p(x.abs())


def exp(x):
    return x.exp()


def sigmoid(x):
    return torch.sigmoid(x)


def tanh(x):
    return torch.tanh(x)


def relu(x):
    return F.relu(x)


def scale(x, factor):
    return x * factor


# ---- batch relations of published distillers --------------------------------------------------------


def _pdist(e):
    sq = (e * e).sum(1)
    d = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * e @ e.t()).clamp(min=1e-12).sqrt()
    return d * (1 - torch.eye(e.shape[0], device=e.device, dtype=e.dtype))


def distance_relation(x):
    d = _pdist(x.flatten(1))
    return d / (d.sum() / (d > 0).sum())


def angle_relation(x):
    e = x.flatten(1)
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).view(e.shape[0], -1)


def cond_prob(x):
    f = x.flatten(1)
    f = f / (f.norm(dim=1, keepdim=True) + EPS)
    sim = (f @ f.t() + 1.0) / 2.0
    return sim / sim.sum(1, keepdim=True)


# ---- distances ---------------------------------------------------------------------------------------------


def l1(s, t):
    return F.l1_loss(s, t)


def mse(s, t):
    return F.mse_loss(s, t)


def l2(s, t):
    return (s - t).pow(2).flatten(1).sum(1).mean()


def smooth_l1(s, t, beta=1.0):
    return F.smooth_l1_loss(s, t, beta=beta)


def pairwise(s, t):
    return (s - t).flatten(1).norm(dim=1).mean()


def _reduce(per_entry, dims, reduce):
    if reduce == "all":
        return per_entry.mean()
    return per_entry.sum(dim=tuple(dims)).mean()


def kl(s, t, mode="p", dims=(1,), temp=1.0, reduce="batch"):
    """KL(teacher ‖ student). mode: "logits" (softmax(x / temp) first), "p" or "logp"."""
    if mode == "logits":
        log_s, log_t = log_softmax(s, temp, dims), log_softmax(t, temp, dims)
        p_t = log_t.exp()
    elif mode == "logp":
        log_s, log_t, p_t = s, t, t.exp()
    else:
        log_s, log_t, p_t = torch.log(s + EPS), torch.log(t + EPS), t
    return _reduce(p_t * (log_t - log_s), dims, reduce)


def js(s, t, mode="p", dims=(1,), temp=1.0):
    if mode == "logits":
        s, t = softmax(s, temp, dims), softmax(t, temp, dims)
    m = 0.5 * (s + t)
    log_m = torch.log(m + EPS)
    per = 0.5 * s * (torch.log(s + EPS) - log_m) + 0.5 * t * (torch.log(t + EPS) - log_m)
    return _reduce(per, dims, "batch")


def cosine(s, t):
    return 1.0 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1, eps=1e-8).mean()


def pearson(s, t):
    s, t = s.flatten(1), t.flatten(1)
    s, t = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    return 1.0 - F.cosine_similarity(s, t, dim=1, eps=1e-8).mean()


def mmd(s, t, d=2, c=0.0):
    s, t = s.flatten(2), t.flatten(2)

    def k(a, b):
        return (a.unsqueeze(1) * b.unsqueeze(2)).sum(-1).add(c).pow(d).mean()

    return k(t, t) + k(s, s) - 2 * k(s, t)


def ce(s, t, soft=False, temp=1.0):
    if soft:
        return -(t * F.log_softmax(s / temp, dim=1)).sum(1).mean()
    return F.cross_entropy(s / temp, t)


# ---- weights ---------------------------------------------------------------------------------------------


def warmup(epoch, epochs):
    return min(float(epoch) / epochs, 1.0)


def after(epoch, at):
    return 1.0 if epoch >= at else 0.0


def linear(epoch, start, end, epochs):
    return start + (end - start) * min(float(epoch) / epochs, 1.0)


def total(*terms):
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return out


def fdiv(a, b):
    return a / b


