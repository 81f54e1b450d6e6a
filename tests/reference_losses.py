"""Reference implementations of the library distillers, written from the papers' formulas (and the CIFAR-100
benchmark code's reductions and weights) with plain torch — nothing here imports autokd_dsl.

Each function takes ``a`` (activations by the compiled loss's input names: ``s_stage1``, ``t_stage1_pre``,
``s_logits`` …), the labels ``y``, the ``epoch``, ``w`` (the learnable or teacher-derived tensors, taken from
the compiled module so both start from the same weights) and ``state`` (a dict kept across calls, for CRD's
memory banks), and returns the total loss. BatchNorm layers run in training mode (batch statistics), as the
compiled loss's do while training.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F


def _ce(a, y):
    return F.cross_entropy(a["s_logits"], y)


def _kl_soft(s_logits, t_logits, temp):
    """Hinton's soft-target loss: KL(p_t ‖ p_s) at temperature T, summed over classes, batch mean."""
    log_ps = F.log_softmax(s_logits / temp, dim=1)
    pt = F.softmax(t_logits / temp, dim=1)
    return (pt * (torch.log(pt) - log_ps)).sum(1).mean()


def _bn(x, weight, bias):
    return F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5)


def _resize_to(x, size):
    return x if tuple(x.shape[2:]) == tuple(size) else F.adaptive_avg_pool2d(x, size)


# ---- logits ---------------------------------------------------------------------------------------------


def kd(a, y, epoch, w, state, temp=4.0, alpha=0.9):
    return alpha * temp**2 * _kl_soft(a["s_logits"], a["t_logits"], temp) + (1 - alpha) * _ce(a, y)


def kd_ls(a, y, epoch, w, state, temp=2.0, alpha=9.0, gamma=0.1):
    def z(x):  # logit standardisation: zero mean, unit (unbiased) standard deviation per sample
        return (x - x.mean(1, keepdim=True)) / (1e-7 + x.std(1, keepdim=True))

    return alpha * temp**2 * _kl_soft(z(a["s_logits"]), z(a["t_logits"]), temp) + gamma * _ce(a, y)


def dkd(a, y, epoch, w, state, temp=4.0, alpha=1.0, beta=8.0, warm=20):
    s, t = a["s_logits"], a["t_logits"]
    gt = F.one_hot(y, s.shape[1]).to(s.dtype)
    ps, pt = F.softmax(s / temp, dim=1), F.softmax(t / temp, dim=1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], dim=1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], dim=1)
    tckd = (bt * (torch.log(bt) - torch.log(bs))).sum() / s.shape[0]
    pt2 = F.softmax(t / temp - 1000.0 * gt, dim=1)
    log_ps2 = F.log_softmax(s / temp - 1000.0 * gt, dim=1)
    nckd = torch.where(pt2 > 0, pt2 * (torch.log(pt2) - log_ps2), torch.zeros_like(pt2)).sum() / s.shape[0]
    ramp = min(epoch / warm, 1.0)
    return _ce(a, y) + ramp * temp**2 * (alpha * tckd + beta * nckd)


def dist(a, y, epoch, w, state, temp=4.0, beta=2.0, gamma=2.0):
    def pearson(u, v):  # mean over rows of the correlation of u_i and v_i
        u, v = u - u.mean(1, keepdim=True), v - v.mean(1, keepdim=True)
        return ((u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1) + 1e-8)).mean()  # the paper's code: + 1e-8

    ys, yt = F.softmax(a["s_logits"] / temp, dim=1), F.softmax(a["t_logits"] / temp, dim=1)
    inter = 1 - pearson(ys, yt)
    intra = 1 - pearson(ys.t(), yt.t())
    return _ce(a, y) + temp**2 * (beta * inter + gamma * intra)


# ---- features ------------------------------------------------------------------------------------------------


def fitnet(a, y, epoch, w, state, beta=100.0):
    # FitNet's regressor as in RepDistiller's ConvReg for equal sizes: conv (with bias) + BN + ReLU
    hint = F.relu(_bn(F.conv2d(a["s_stage2"], w["conv"], w["conv_bias"]), w["bn_w"], w["bn_b"]))
    return _ce(a, y) + beta * ((hint - a["t_stage2"]) ** 2).mean()


def _attention(f, p=2):
    return F.normalize(f.pow(p).mean(1).view(f.shape[0], -1), dim=1)


def at(a, y, epoch, w, state, beta=1000.0):
    loss = sum(((_attention(a[f"s_stage{k}"]) - _attention(a[f"t_stage{k}"])) ** 2).mean() for k in (1, 2, 3))
    return _ce(a, y) + beta * loss


def sp(a, y, epoch, w, state, beta=3000.0):
    def gram(f):
        f = f.view(f.shape[0], -1)
        g = f @ f.t()
        return g / g.norm(dim=1, keepdim=True)

    n = a["s_stage3"].shape[0]
    return _ce(a, y) + beta * ((gram(a["t_stage3"]) - gram(a["s_stage3"])) ** 2).sum() / (n * n)


def nst(a, y, epoch, w, state, beta=50.0):
    def poly(u, v):  # (u_i · v_j)² over all channel pairs, averaged
        return torch.einsum("nip,njp->nij", u, v).pow(2).mean()

    loss = 0.0
    for k in (1, 2, 3):
        fs = F.normalize(a[f"s_stage{k}"].flatten(2), dim=2)
        ft = F.normalize(a[f"t_stage{k}"].flatten(2), dim=2)
        loss = loss + poly(ft, ft) + poly(fs, fs) - 2 * poly(fs, ft)
    return _ce(a, y) + beta * loss


def vid(a, y, epoch, w, state, beta=1.0, eps=1e-5):
    loss = 0.0
    for k in (1, 2, 3):
        h = F.relu(F.conv2d(a[f"s_stage{k}"], w[f"mlp{k}_0"]))
        h = F.relu(F.conv2d(h, w[f"mlp{k}_1"]))
        mean = F.conv2d(h, w[f"mlp{k}_2"])
        var = (torch.log(1.0 + torch.exp(w[f"log_scale{k}"])) + eps).view(1, -1, 1, 1)
        loss = loss + (0.5 * ((mean - a[f"t_stage{k}"]) ** 2 / var + torch.log(var))).mean()
    return _ce(a, y) + beta * loss


def ab(a, y, epoch, w, state, init=30, margin=1.0):
    loss = 0.0
    for k, weight in ((1, 0.25), (2, 0.5), (3, 1.0)):  # 2^(i - n + 1)
        s, t = a[f"s_stage{k}_pre"], a[f"t_stage{k}_pre"]  # equal shapes: the connector is the identity
        term = ((s + margin) ** 2 * ((s > -margin) & (t <= 0)) + (s - margin) ** 2 * ((s <= margin) & (t > 0)))
        loss = loss + weight * term.sum() / s.shape[0] / 1000 * 3
    return (epoch >= init) * _ce(a, y) + (epoch < init) * loss


def fsp(a, y, epoch, w, state, init=30):
    def matrices(feats):
        out = []
        for bot, top in itertools.pairwise(feats):
            if bot.shape[2] > top.shape[2]:
                bot = F.adaptive_avg_pool2d(bot, top.shape[2:])
            elif bot.shape[2] < top.shape[2]:
                top = F.adaptive_avg_pool2d(top, bot.shape[2:])
            bot = bot.unsqueeze(1).flatten(3)  # (N, 1, C_bot, HW)
            top = top.unsqueeze(2).flatten(3)  # (N, C_top, 1, HW)
            out.append((bot * top).mean(-1))
        return out

    names = ["stem", "stage1", "stage2", "stage3"]
    gs, gt = matrices([a[f"s_{n}"] for n in names]), matrices([a[f"t_{n}"] for n in names])
    loss = sum(((s - t) ** 2).mean() for s, t in zip(gs, gt))
    return (epoch >= init) * _ce(a, y) + (epoch < init) * loss


def cwd(a, y, epoch, w, state, tau=1.0, beta=5.0):
    s, t = a["s_stage3"], a["t_stage3"]  # equal channels: no connector
    n, c, h, wd = t.shape
    pt = F.softmax(t.reshape(-1, h * wd) / tau, dim=1)
    loss = (pt * F.log_softmax(t.reshape(-1, h * wd) / tau, dim=1)
            - pt * F.log_softmax(s.reshape(-1, h * wd) / tau, dim=1)).sum() * tau**2
    return _ce(a, y) + beta * loss / (c * n)


def pkd(a, y, epoch, w, state, beta=6.0):
    def norm(f):  # per channel over the batch and positions, as in the paper's reference code
        n, c, h, wd = f.shape
        f = f.permute(1, 0, 2, 3).reshape(c, -1)
        f = (f - f.mean(-1, keepdim=True)) / (f.std(-1, keepdim=True) + 1e-6)
        return f.reshape(c, n, h, wd).permute(1, 0, 2, 3)

    return _ce(a, y) + beta * F.mse_loss(norm(a["s_stage3"]), norm(a["t_stage3"])) / 2


def mgd(a, y, epoch, w, state, ratio=0.15, alpha=7e-5):
    s, t = a["s_stage3"], a["t_stage3"]  # equal channels: no align conv
    n, c = t.shape[:2]
    mat = torch.rand((n, c, 1, 1))  # MGD's classification masks: whole channels
    mat = torch.where(mat < ratio, 0, 1).to(s.dtype)
    new = F.conv2d(F.relu(F.conv2d(s * mat, w["g0"], w["g0_b"], padding=1)), w["g1"], w["g1_b"], padding=1)
    return _ce(a, y) + alpha * ((new - t) ** 2).sum() / n


def ickd(a, y, epoch, w, state, beta=2.5):
    f_s = _bn(F.conv2d(a["s_stage3"], w["conv"]), w["bn_w"], w["bn_b"])  # Embed: conv1×1 + BN
    f_t = a["t_stage3"]
    bsz, ch = f_s.shape[:2]
    f_s, f_t = f_s.view(bsz, ch, -1), f_t.view(bsz, ch, -1)
    e_s = F.normalize(torch.bmm(f_s, f_s.permute(0, 2, 1)), dim=2)
    e_t = F.normalize(torch.bmm(f_t, f_t.permute(0, 2, 1)), dim=2)
    return _ce(a, y) + beta * ((e_s - e_t) ** 2).sum() / (ch * bsz)


def ofd_margins(gamma, beta):
    """OFD's margin per channel from the BatchNorm before the teacher's ReLU (paper, eq. for E[x | x < 0])."""
    out = []
    for s, m in zip(gamma.tolist(), beta.tolist()):
        s = abs(s)
        cdf = 0.5 * (1 + math.erf(-m / s / math.sqrt(2)))
        if cdf > 0.001:
            out.append(-s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / cdf + m)
        else:
            out.append(-3 * s)
    return torch.tensor(out, dtype=torch.float64).view(1, -1, 1, 1)


def ofd(a, y, epoch, w, state, feat_weight=0.001):
    loss = 0.0
    for i, k in enumerate((1, 2, 3)):
        s = _bn(F.conv2d(a[f"s_stage{k}_pre"], w[f"conv{k}"]), w[f"bn{k}_w"], w[f"bn{k}_b"])
        t, m = a[f"t_stage{k}_pre"], w[f"margin{k}"].to(s.dtype)
        part = ((s - m) ** 2 * ((s > m) & (t <= m)) + (s - t) ** 2 * ((s > t) & (t > m) & (t <= 0))
                + (s - t) ** 2 * (t > 0))
        loss = loss + part.abs().mean(dim=0).sum() / 2 ** (3 - i - 1)
    return _ce(a, y) + feat_weight * loss


def reviewkd(a, y, epoch, w, state, weight=5.0, warm=20):
    def abf(x, res, p, out_size):
        x = _bn(F.conv2d(x, p["c1"]), p["bn1_w"], p["bn1_b"])
        n, _, h, wd = x.shape
        if res is not None:
            res = F.interpolate(res, (h, wd), mode="nearest")
            z = torch.sigmoid(F.conv2d(torch.cat([x, res], dim=1), p["att_w"], p["att_b"]))
            x = x * z[:, 0].view(n, 1, h, wd) + res * z[:, 1].view(n, 1, h, wd)
        if x.shape[-1] != out_size:
            x = F.interpolate(x, (out_size, out_size), mode="nearest")
        return _bn(F.conv2d(x, p["c2"], padding=1), p["bn2_w"], p["bn2_b"]), x

    def hcl(fs, ft):
        total = 0.0
        for s, t in zip(fs, ft):
            h = s.shape[2]
            loss, cnt, tot = F.mse_loss(s, t), 1.0, 1.0
            for size in (4, 2, 1):
                if size >= h:
                    continue
                cnt /= 2.0
                loss = loss + F.mse_loss(F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)) * cnt
                tot += cnt
            total = total + loss / tot
        return total

    xs = [a["s_stage1"], a["s_stage2"], a["s_stage3"], a["s_embedding"][:, :, None, None]]
    ts = [a["t_stage1_pre"], a["t_stage2_pre"], a["t_stage3_pre"], a["t_embedding"][:, :, None, None]]
    results, res = [None] * 4, None
    for i in (3, 2, 1, 0):
        results[i], res = abf(xs[i], res, w[f"abf{i}"], ts[i].shape[-1])
    return _ce(a, y) + weight * min(epoch / warm, 1.0) * hcl(results, ts)


# ---- penultimate features (embedding) ---------------------------------------------------------------------


def rkd(a, y, epoch, w, state, wd=25.0, wa=50.0):
    def pdist(e, eps=1e-12):
        sq = e.pow(2).sum(1)
        d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
        d[range(len(e)), range(len(e))] = 0
        return d

    def angles(e):
        diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(diff, diff.transpose(1, 2)).view(-1)

    s, t = a["s_embedding"], a["t_embedding"]
    dt = pdist(t)
    dt = dt / dt[dt > 0].mean()
    ds = pdist(s)
    ds = ds / ds[ds > 0].mean()
    return _ce(a, y) + wd * F.smooth_l1_loss(ds, dt) + wa * F.smooth_l1_loss(angles(s), angles(t))


def pkt(a, y, epoch, w, state, beta=30000.0, eps=1e-7):
    def cond(f):
        f = f / (torch.sqrt((f**2).sum(1, keepdim=True)) + eps)
        sim = (f @ f.t() + 1.0) / 2.0
        return sim / sim.sum(1, keepdim=True)

    ps, pt = cond(a["s_embedding"]), cond(a["t_embedding"])
    return _ce(a, y) + beta * (pt * torch.log((pt + eps) / (ps + eps))).mean()


def _embed(f, weight, bias):  # RepDistiller's Embed: linear, then divide by the L2 norm
    x = F.linear(f.view(f.shape[0], -1), weight, bias)
    return x / x.pow(2).sum(1, keepdim=True).pow(0.5)


def cc(a, y, epoch, w, state, beta=0.02):
    fs = _embed(a["s_embedding"], w["s_w"], w["s_b"])
    ft = _embed(a["t_embedding"], w["t_w"], w["t_b"])
    delta = torch.abs(fs - ft)
    return _ce(a, y) + beta * torch.mean((delta[:-1] * delta[1:]).sum(1))


def crd(a, y, epoch, w, state, index=None, beta=0.8, n_data=50000, k=16384, temp=0.07, momentum=0.5):
    """CRD with memory banks in ``state`` (initialised from the compiled module's); negatives drawn uniformly."""
    v1 = _embed(a["s_embedding"], w["s_w"], w["s_b"])  # student
    v2 = _embed(a["t_embedding"], w["t_w"], w["t_b"])  # teacher
    mem1, mem2 = state.setdefault("mem1", w["memory_s"].clone()), state.setdefault("mem2", w["memory_t"].clone())
    bsz, dim = v1.shape
    idx = torch.randint(0, n_data, (bsz, k + 1))
    idx.select(1, 0).copy_(index)
    w1 = torch.index_select(mem1, 0, idx.view(-1)).detach().view(bsz, k + 1, dim)
    out_v2 = torch.exp(torch.bmm(w1, v2.view(bsz, dim, 1)) / temp)
    w2 = torch.index_select(mem2, 0, idx.view(-1)).detach().view(bsz, k + 1, dim)
    out_v1 = torch.exp(torch.bmm(w2, v1.view(bsz, dim, 1)) / temp)
    if "z1" not in state:
        state["z1"] = (out_v1.mean() * n_data).item()
        state["z2"] = (out_v2.mean() * n_data).item()
    out_v1, out_v2 = out_v1 / state["z1"], out_v2 / state["z2"]
    with torch.no_grad():
        for mem, v in ((mem1, v1), (mem2, v2)):
            pos = torch.index_select(mem, 0, index) * momentum + v * (1 - momentum)
            mem.index_copy_(0, index, pos / pos.pow(2).sum(1, keepdim=True).pow(0.5))

    def contrast(x, eps=1e-7):  # NCE with noise distribution 1 / n_data (CRD eq. 18)
        m, pn = x.size(1) - 1, 1 / float(n_data)
        p_pos = x.select(1, 0)
        log_d1 = torch.div(p_pos, p_pos.add(m * pn + eps)).log()
        p_neg = x.narrow(1, 1, m)
        log_d0 = torch.div(p_neg.clone().fill_(m * pn), p_neg.add(m * pn + eps)).log()
        return -(log_d1.sum(0) + log_d0.view(-1, 1).sum(0)) / x.shape[0]

    return _ce(a, y) + beta * (contrast(out_v1.squeeze(2)) + contrast(out_v2.squeeze(2))).squeeze()


def srrl(a, y, epoch, w, state, temp=4.0, alpha=1.0, beta=1.0):
    # SRRL's transfer: conv1×1 + BN + ReLU on the pooled feature as a 1×1 map; then the teacher's classifier
    f = a["s_embedding"][:, :, None, None]
    trans = F.relu(_bn(F.conv2d(f, w["conv"][:, :, None, None]), w["bn_w"], w["bn_b"])).flatten(1)
    pred = F.linear(trans, w["cls_w"], w["cls_b"])
    logit_t = F.linear(a["t_embedding"], w["cls_w"], w["cls_b"])  # the teacher's logits from its feature
    kd_term = temp**2 * _kl_soft(a["s_logits"], a["t_logits"], temp)
    return _ce(a, y) + kd_term + alpha * F.mse_loss(trans, a["t_embedding"]) + beta * F.mse_loss(pred, logit_t)


# ---- several teachers: activations of teacher k are named t1_…, t2_…; every teacher's logits here --------------


def _teacher_logits(a):
    names = [k for k in a if k.endswith("_logits") and k[0] == "t" and k[1].isdigit()]
    return [a[k] for k in sorted(names, key=lambda n: int(n[1:].split("_")[0]))]


def _entropy(p):
    return -(p * torch.log(p)).sum(1)


def aver(a, y, epoch, w, state, temp=4.0, alpha=0.9):
    """You et al. 2017: KL from the teachers' averaged soft targets, plus the constant H(mean p) − mean H(p_k)
    that makes it equal to the mean of the per-teacher KLs (the two have the same gradients)."""
    ps = [F.softmax(t / temp, dim=1) for t in _teacher_logits(a)]
    mean_p = sum(ps) / len(ps)
    log_q = F.log_softmax(a["s_logits"] / temp, dim=1)
    kl_mean = (mean_p * (torch.log(mean_p) - log_q)).sum(1).mean()
    constant = _entropy(mean_p).mean() - sum(_entropy(p).mean() for p in ps) / len(ps)
    return alpha * temp**2 * (kl_mean + constant) + (1 - alpha) * _ce(a, y)


def ca_mkd(a, y, epoch, w, state, temp=4.0, alpha=1.0):
    """Zhang, Chen, Wang 2022, eq. (1)-(3): w_k = (1 − softmax_k(L_CE^k)) / (K − 1) per sample."""
    teachers = _teacher_logits(a)
    n, k = a["s_logits"].shape[0], len(teachers)
    log_q = F.log_softmax(a["s_logits"] / temp, dim=1)
    total = torch.zeros((), dtype=a["s_logits"].dtype)
    for i in range(n):  # sample by sample, as the paper writes it
        ce = torch.stack([-F.log_softmax(t[i], dim=0)[y[i]] for t in teachers])
        weights = (1 - torch.exp(ce) / torch.exp(ce).sum()) / (k - 1)
        for j, t in enumerate(teachers):
            p = F.softmax(t[i] / temp, dim=0)
            total = total + weights[j] * (p * (torch.log(p) - log_q[i])).sum()
    return _ce(a, y) + alpha * temp**2 * total / n


REFERENCES = {
    "kd": kd, "kd_ls": kd_ls, "dkd": dkd, "dist": dist, "fitnet": fitnet, "at": at, "sp": sp, "nst": nst,
    "vid": vid, "ab": ab, "fsp": fsp, "cwd": cwd, "pkd": pkd, "mgd": mgd, "ickd": ickd, "ofd": ofd,
    "reviewkd": reviewkd, "rkd": rkd, "pkt": pkt, "cc": cc, "crd": crd, "srrl": srrl,
    "aver": aver, "ca_mkd": ca_mkd,
}
MULTI_TEACHER = {"aver", "ca_mkd"}  # compiled with several teachers (tests/test_multiteacher.py)
