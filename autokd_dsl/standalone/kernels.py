"""Tensor implementations of the ops, one small function each (torch only).

This module is copied verbatim into every file `autokd-dsl compile` writes, so it imports nothing but torch
and the standard library. Kernels see real tensors; layouts are (N,C,H,W) maps, (N,L,D) tokens, (N,A,B)
matrices, (N,D) vectors / logits and (N,N) relations. ``dims`` arguments are resolved by the compiler.
"""

import math

import torch
import torch.nn.functional as F

EPS = 1e-7


def _over(x, dims, fn):
    """Apply ``fn(x, dim)`` over several dims by flattening them into one (moved last when not adjacent)."""
    dims = tuple(dims)
    if len(dims) == 1:
        return fn(x, dims[0])
    if dims != tuple(range(dims[0], dims[-1] + 1)):
        order = [d for d in range(x.dim()) if d not in dims] + list(dims)
        moved = x.permute(*order)
        keep = x.dim() - len(dims)
        out = fn(moved.reshape(*moved.shape[:keep], -1), keep).reshape(moved.shape)
        return out.permute(*[order.index(d) for d in range(x.dim())])
    first = dims[0]
    flat = x.flatten(first, dims[-1])
    return fn(flat, first).view(x.shape)


# ---- attention and masking ------------------------------------------------------------------------


def _power(x, p):
    """|x|^p: x·x for p = 2 (faster than pow, and its backward too), no abs for other even p."""
    if p == 2:
        return x * x
    return (x if float(p) % 2 == 0 else x.abs()).pow(p)


def spatial_attention(x, p=2.0):
    return _power(x, p).mean(1, keepdim=True)


def channel_attention(x):
    return x.mean((2, 3), keepdim=True)


def attention(x, p=2.0):
    return F.normalize(_power(x, p).mean(1).flatten(1), dim=1)


def _position_mask(x, keep):
    shape = (x.shape[0], 1, *x.shape[2:]) if x.dim() >= 4 else x.shape[:2] + (1,) * (x.dim() - 2)
    return (torch.rand(shape, device=x.device) < keep).to(x.dtype)


def _channel_mask(x, ratio):
    shape = x.shape[:2] + (1,) * (x.dim() - 2) if x.dim() != 3 else (x.shape[0], 1, x.shape[2])
    return (torch.rand(shape, device=x.device) >= ratio).to(x.dtype)


def mask(s, t, ratio, over="positions"):
    m = _channel_mask(t, ratio) if over == "channels" else _position_mask(t, 1.0 - ratio)
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


class _Gram(torch.autograd.Function):
    """f·fᵀ (over the last two dims) with the symmetric backward (g + gᵀ)·f: one matrix product, where autograd
    makes two (one per operand)."""

    @staticmethod
    def forward(ctx, f):
        ctx.save_for_backward(f)
        return f @ f.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad):
        (f,) = ctx.saved_tensors
        return (grad + grad.transpose(-1, -2)).to(f.dtype) @ f


def batch_gram(x):
    return F.normalize(_Gram.apply(x.flatten(1)), dim=1)


def channel_gram(x):
    f = x.flatten(2)
    return _Gram.apply(f) / f.shape[2]


def transpose(x):
    return x.t()


def softmax(x, t=1.0, dims=(1,)):
    """Softmax of x / t over ``dims`` (adjacent dims, taken together)."""
    x = x if t == 1 else x / t
    return x.softmax(dims[0]) if len(dims) == 1 else x.flatten(dims[0], dims[-1]).softmax(dims[0]).view(x.shape)


def log_softmax(x, t=1.0, dims=(1,)):
    x = x if t == 1 else x / t
    if len(dims) > 1:
        return x.flatten(dims[0], dims[-1]).log_softmax(dims[0]).view(x.shape)
    return x.log_softmax(dims[0])


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


def abs(x):  # shadows the builtin: the op's name
    return x.abs()


def square(x):
    return x * x


def pow(x, e):  # shadows the builtin: the op's name
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


def l2(s, t, dims=None):
    if dims is not None:
        return (s - t).pow(2).sum(dim=tuple(dims)).mean()
    return (s - t).pow(2).flatten(1).sum(1).mean()


def smooth_l1(s, t, beta=1.0):
    return F.smooth_l1_loss(s, t, beta=beta)


def pairwise(s, t):
    return (s - t).flatten(1).norm(dim=1).mean()


def kl(s, target, mode="p", dims=(1,), t=1.0, reduce="batch", weight=1.0):
    """KL(target ‖ s) summed over ``dims``, averaged over the rest (reduce "all": over every entry), on "p", "logp",
    or "logits" (an exact log-softmax of x / t first); times ``weight`` (a term's weight, folded into the mean's
    division)."""
    if mode == "p":
        total = (target * (torch.log(target + EPS) - torch.log(s + EPS))).sum()
    else:
        if mode == "logits":
            s, target = log_softmax(s, t, dims), log_softmax(target, t, dims)
        total = F.kl_div(s, target, reduction="sum", log_target=True)
    return total * (weight / (s.numel() if reduce == "all" else s.numel() // math.prod(s.shape[d] for d in dims)))


def js(s, target, mode="p", dims=(1,), t=1.0, weight=1.0):
    """Jensen-Shannon divergence, summed over ``dims`` and averaged over the rest, times ``weight``."""
    if mode == "logits":
        s, target = softmax(s, t, dims), softmax(target, t, dims)
    log_m = torch.log(0.5 * (s + target) + EPS)
    per = s * (torch.log(s + EPS) - log_m) + target * (torch.log(target + EPS) - log_m)
    return per.sum() * (0.5 * weight / (s.numel() // math.prod(s.shape[d] for d in dims)))


def cosine(s, t):
    return torch.rsub(F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1, eps=1e-8).mean(), 1.0)


def pearson(s, t, dim=1, mean=None):
    """1 − ρ per sample (``dim`` 0: per column, the rows of the transposed tensors), averaged; ρ = Σ a·b / (‖a‖ ‖b‖
    + 1e-8) over the centred rows, DIST's form (not clamped norms, which differ where the student is close to the
    teacher and the centred norms are small). ``mean``: the rows' mean where it is known (1/K for a softmax)."""
    s, t = (s, t) if s.dim() == 2 else (s.flatten(1), t.flatten(1))
    if mean is None:
        s, t = s - s.mean(dim, keepdim=True), t - t.mean(dim, keepdim=True)
    else:
        s, t = s - mean, t - mean
    rho = (s * t).sum(dim) / (s.norm(dim=dim) * t.norm(dim=dim) + 1e-8)
    return torch.rsub(rho.mean(), 1.0)


def mmd(s, t, d=2, c=0.0):
    s, t = s.flatten(2), t.flatten(2)

    def k(a, b):  # (x_i · y_j + c)^d over all channel pairs, as one batched matrix product
        return (b @ a.transpose(1, 2)).add(c).pow(d).mean()

    return k(t, t) + k(s, s) - 2 * k(s, t)


def ce(s, target, soft=False, t=1.0):
    """Cross-entropy of the logits ``s`` / t against class labels, or a distribution (``soft``)."""
    s = s if t == 1 else s / t
    return -(target * F.log_softmax(s, dim=1)).sum(1).mean() if soft else F.cross_entropy(s, target)


def cc(s, t):
    d = (s - t).abs().flatten(1)
    return (d[:-1] * d[1:]).sum(1).mean()


def boundary(s, t, margin=1.0):
    on = ((s > -margin) & (t <= 0)).to(s.dtype)
    off = ((s <= margin) & (t > 0)).to(s.dtype)
    return ((s + margin).pow(2) * on + (s - margin).pow(2) * off).sum() / s.shape[0]


def partial_l2(s, t):
    where = ((s > t) | (t > 0)).to(s.dtype)
    return ((s - t).pow(2) * where).sum() / s.shape[0]


def hcl(s, t):
    loss, weight, norm = F.mse_loss(s, t), 1.0, 1.0
    for size in (4, 2, 1) if s.dim() == 4 else ():
        if size < s.shape[2]:
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size))
            norm += weight
    return loss / norm


# ---- labels inside a transform, relations across taps --------------------------------------------------------


def _need_labels(labels):
    if labels is None:
        raise ValueError("this distiller uses the labels inside a transform: pass labels=")
    return labels


def target_binary(x, labels, log=False):
    """(p of the label's class, p of the rest); on log-probabilities the same in logs (exact, no epsilon)."""
    target = F.one_hot(_need_labels(labels), x.shape[1]).bool()
    own = x.gather(1, labels[:, None])
    if log:
        return torch.cat([own, x.masked_fill(target, float("-inf")).logsumexp(1, keepdim=True)], dim=1)
    return torch.cat([own, x.masked_fill(target, 0.0).sum(1, keepdim=True)], dim=1)


def drop_target(x, labels, value=1000.0):
    return x - value * F.one_hot(_need_labels(labels), x.shape[1]).to(x.dtype)


def fsp(*xs):
    """One FSP matrix per consecutive pair of maps: (N, C_b, C_a), the larger map average-pooled first."""
    out = []
    for a, b in zip(xs[:-1], xs[1:]):  # consecutive pairs (compiled files import no itertools)
        if a.shape[2] > b.shape[2]:
            a = F.adaptive_avg_pool2d(a, b.shape[2:])
        elif a.shape[2] < b.shape[2]:
            b = F.adaptive_avg_pool2d(b, a.shape[2:])
        out.append(b.flatten(2) @ a.flatten(2).transpose(1, 2) / (a.shape[2] * a.shape[3]))
    return tuple(out)


# ---- weights ---------------------------------------------------------------------------------------------


# ``now`` is the current epoch; the other arguments are the op's parameters


def warmup(now, epochs):
    return min(float(now) / epochs, 1.0)


def after(now, epoch):
    return 1.0 if now >= epoch else 0.0


def before(now, epoch):
    return 1.0 if now < epoch else 0.0


def linear(now, start, end, epochs):
    return start + (end - start) * min(float(now) / epochs, 1.0)


def check_taps(shapes, **taps):
    """Name the tap whose activation (per sample) is not the shape the loss was compiled for."""
    for name, x in taps.items():
        if x.shape[1:] != shapes[name]:
            raise ValueError(f"tap `{name}`: expected {shapes[name]} per sample, as compiled, received "
                             f"{tuple(x.shape[1:])}: compile the distiller again for this input size")


