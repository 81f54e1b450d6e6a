"""The proxy evaluator: compile a candidate, reject broken losses on a probe batch, train briefly, score.

Reward (larger is better): ``-(0.5 × CE_val + 0.5 × gap)`` where CE_val is the student's cross-entropy on the
held-out validation split and gap is ``MSE(P·s, t) / Var(t)`` between the student's and the teacher's pooled
last-stage features (``embedding``), through a fixed random projection P where their widths differ. The test
split is never read here.

The teacher runs once, before the search (:class:`ProxyContext`): its tapped activations for the proxy subset
and the validation split are kept, and candidates train the student against them (``offline_teacher``). With
several teachers each runs once, and the gap is the mean over the teachers of each teacher's gap.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from ..compiler.build import compile_distiller
from ..errors import KDError
from ..lang import ir
from ..models import create_model
from ..standalone.attach import TapCapture


class ProxySettings(pydantic.BaseModel):
    """What one candidate's evaluation costs; stored (hashed) with every result."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    epochs: int = 6  # on digits: validation CE ≈ 0.03-0.09 after 6 epochs, but 2.7-9.9 after 2 (too noisy)
    subset: float = 1.0  # fraction of the training split; below 1 drawn by teacher entropy
    entropy_sampling: bool = True
    batch_size: int = 64
    lr: float = 0.05
    offline_teacher: bool = True
    sparse_density: float | None = None  # e.g. 0.5: magnitude pruning with random regrowth
    seed: int = 0

    def key(self) -> str:
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Outcome:
    reward: float | None
    status: str  # "ok" | "rejected"
    reason: str = ""
    ce: float | None = None
    gap: float | None = None
    seconds: float = 0.0
    losses: dict = field(default_factory=dict)


def entropy_subset(logits: torch.Tensor, size: int, seed: int, bins: int = 10) -> torch.Tensor:
    """DisWOT-style sampler: histogram the log-entropy of the teacher's predictions; rare bins are favoured.

    >>> idx = entropy_subset(torch.randn(100, 10), 30, seed=0)
    >>> len(idx), len(set(idx.tolist()))
    (30, 30)
    """
    p = logits.softmax(1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
    log_h = entropy.clamp_min(1e-8).log()
    edges = torch.linspace(float(log_h.min()), float(log_h.max()) + 1e-6, bins + 1)
    which = torch.bucketize(log_h, edges[1:-1])
    counts = torch.bincount(which, minlength=bins).float()
    weights = 1.0 / counts[which]
    generator = torch.Generator().manual_seed(seed)
    return torch.multinomial(weights, size, replacement=False, generator=generator).sort().values


class ProxyContext:
    """Everything shared by all candidates: data, the teachers' cached outputs, and the settings.

    ``teacher`` is one network or a list (``teacher_name`` then a list too); ``train_acts`` and ``val_acts``
    hold one dict of tapped activations per teacher, in order. The entropy subset follows the first teacher.
    """

    def __init__(self, space, teacher: nn.Module | list[nn.Module], student_name: str, bundle,
                 settings: ProxySettings, teacher_name: str | list[str] = "teacher", device: str = "cpu"):
        self.device = torch.device(device)
        self.teachers = [t.to(self.device).eval() for t in (teacher if isinstance(teacher, (list, tuple))
                                                            else [teacher])]
        names = teacher_name if isinstance(teacher_name, (list, tuple)) else [teacher_name]
        self.teacher_names = list(names) + [f"teacher{k}" for k in range(len(names) + 1, len(self.teachers) + 1)]
        self.teacher, self.teacher_name = self.teachers[0], self.teacher_names[0]
        self.student_name, self.bundle, self.settings = student_name, bundle, settings
        self.input_size = tuple(bundle.train.images.shape[1:])
        self.num_classes = bundle.num_classes
        self.train_x, self.train_y = bundle.train.images.to(self.device), bundle.train.labels.to(self.device)
        self.val_x, self.val_y = bundle.val.images.to(self.device), bundle.val.labels.to(self.device)
        self.teacher_taps = [self._teacher_taps(space, k) for k in range(1, len(self.teachers) + 1)]
        self.train_acts = self._run_teachers(self.train_x)
        if settings.subset < 1.0:
            size = max(self.num_classes, int(round(settings.subset * len(self.train_x))))
            if settings.entropy_sampling:
                idx = entropy_subset(self.train_acts[0]["__logits__"].cpu(), size, settings.seed)
            else:
                idx = torch.randperm(len(self.train_x), generator=torch.Generator().manual_seed(settings.seed))[:size]
            self.train_x, self.train_y = self.train_x[idx], self.train_y[idx]
            self.train_acts = [{k: v[idx] for k, v in acts.items()} for acts in self.train_acts]
        self.val_acts = self._run_teachers(self.val_x)
        self.teacher_runs = 1  # the teachers' forward passes happen here, never per candidate

    def _teacher_taps(self, space, k: int) -> dict[str, str]:
        """Every tap of teacher ``k`` any candidate may use, plus the logits and embedding the reward needs."""
        from ..compiler.taps import resolve_point

        teacher, taps = self.teachers[k - 1], {}
        for slots in space.slots:
            for slot in slots:
                if slot.role == "tap":
                    for tap in (t for option in slot.options for t in ir.option_taps(option)):
                        point = tap.teacher_point
                        if not point.is_labels and (tap.each_teacher or point.teacher_number == k):
                            taps[resolve_point(teacher, point, self.teacher_names[k - 1])] = None
        aliases = getattr(teacher, "kd_aliases", {})
        taps[aliases.get("logits", "")] = None
        taps[aliases.get("embedding", "")] = None
        return {spec: spec for spec in taps if spec}

    def teacher_activations(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """One live forward of every teacher (only when ``offline_teacher`` is off)."""
        self.teacher_runs += 1
        return self._run_teachers(x)

    def _run_teachers(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return [self._run_teacher(t, taps, x) for t, taps in zip(self.teachers, self.teacher_taps)]

    @staticmethod
    def _run_teacher(teacher: nn.Module, taps: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
        capture = TapCapture(teacher, taps, detach=True)
        chunks: dict[str, list] = {}
        try:
            with torch.no_grad():
                for start in range(0, len(x), 256):
                    teacher(x[start:start + 256])
                    for k, v in capture.values.items():
                        chunks.setdefault(k, []).append(v)
        finally:
            capture.remove()
        out = {k: torch.cat(v) for k, v in chunks.items()}
        aliases = getattr(teacher, "kd_aliases", {})
        out["__logits__"] = out[aliases["logits"]]
        out["__embedding__"] = out[aliases["embedding"]]
        return out


def evaluate(block: ir.Block, ctx: ProxyContext) -> Outcome:
    """Evaluate one candidate distiller under the proxy settings (seeded: same inputs, same outcome)."""
    start = time.perf_counter()
    s = ctx.settings
    torch.manual_seed(s.seed)
    student = create_model(ctx.student_name, num_classes=ctx.num_classes, in_chans=ctx.input_size[0]).to(ctx.device)
    try:
        several = len(ctx.teachers) > 1
        loss = compile_distiller(block, ctx.teachers if several else ctx.teacher, student, ctx.input_size,
                                 teacher_name=ctx.teacher_names if several else ctx.teacher_name,
                                 student_name=ctx.student_name)
    except KDError as err:
        return Outcome(None, "rejected", f"does not compile: {err.message}", seconds=time.perf_counter() - start)
    runner = _Runner(student, loss, ctx)
    reason = runner.probe()
    if reason:
        return Outcome(None, "rejected", reason, seconds=time.perf_counter() - start)
    terms = runner.train()
    if terms is None:
        return Outcome(None, "rejected", "loss became NaN or infinite during training",
                       seconds=time.perf_counter() - start)
    ce, gap = runner.score()
    reward = -(0.5 * ce + 0.5 * gap)
    if not math.isfinite(reward):
        return Outcome(None, "rejected", "non-finite validation score", seconds=time.perf_counter() - start)
    return Outcome(reward, "ok", "", ce, gap, time.perf_counter() - start, terms)


class _Runner:
    """Trains one student against the cached teacher activations."""

    def __init__(self, student: nn.Module, loss, ctx: ProxyContext):
        self.student, self.loss, self.ctx = student, loss, ctx
        self.capture = TapCapture(student, loss.student_taps)
        # per teacher: placeholder name → the cached spec
        self.t_names = list(getattr(loss, "teachers_taps", [loss.teacher_taps]))
        self.params = list(student.parameters()) + list(loss.parameters())
        self.generator = torch.Generator().manual_seed(ctx.settings.seed)
        self.masks = _sparse_masks(student, ctx.settings.sparse_density, self.generator)

    def losses(self, x, y, acts, idx, epoch):
        if not self.ctx.settings.offline_teacher:  # live teacher inference, for comparison with the cache
            acts, idx = self.ctx.teacher_activations(x), slice(None)
        out = self.student(x)
        t_vals = {name: per_teacher[spec][idx] for per_teacher, taps in zip(acts, self.t_names)
                  for name, spec in taps.items()}
        values = self.loss(**self.capture.values, **t_vals, labels=y, epoch=epoch)
        return out, values

    def probe(self) -> str:
        n = min(32, len(self.ctx.train_x))
        idx = torch.arange(n)
        self.student.train()
        _, values = self.losses(self.ctx.train_x[:n], self.ctx.train_y[:n], self.ctx.train_acts, idx, 0)
        total = values["total"]
        if not torch.isfinite(total):
            return "loss is NaN or infinite on the probe batch"
        if total.abs() > 1e6:
            return f"loss explodes on the probe batch ({float(total.detach()):.3g})"
        distill = [v for k, v in values.items() if k != "total" and v.requires_grad]
        if not distill:
            return "no loss term depends on the student"
        grads = torch.autograd.grad(total, [p for p in self.student.parameters()], allow_unused=True)
        norm = sum(float(g.abs().sum()) for g in grads if g is not None)
        if not math.isfinite(norm):
            return "gradient is NaN or infinite on the probe batch"
        if norm == 0.0:
            return "no gradient reaches the student"
        return ""

    def train(self):
        s = self.ctx.settings
        opt = torch.optim.SGD(self.params, lr=s.lr, momentum=0.9, weight_decay=5e-4)
        n = len(self.ctx.train_x)
        steps = s.epochs * math.ceil(n / s.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=steps, pct_start=0.15,
                                                    anneal_strategy="cos", cycle_momentum=False)
        self.student.train()
        sums: dict[str, float] = {}
        for epoch in range(1, s.epochs + 1):
            order = torch.randperm(n, generator=self.generator)
            for b in range(0, n, s.batch_size):
                idx = order[b:b + s.batch_size]
                _, values = self.losses(self.ctx.train_x[idx], self.ctx.train_y[idx], self.ctx.train_acts, idx, epoch)
                total = values["total"]
                if not torch.isfinite(total):
                    return None
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                sched.step()
                _apply_masks(self.masks)
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
            _regrow(self.masks, self.generator)
        return {k: v / max(1, steps) for k, v in sums.items()}

    @torch.no_grad()
    def score(self) -> tuple[float, float]:
        ctx = self.ctx
        self.student.eval()
        emb_spec = getattr(self.student, "kd_aliases", {}).get("embedding")
        cap = TapCapture(self.student, {"emb": emb_spec}, detach=True)
        logits, embs = [], []
        try:
            for b in range(0, len(ctx.val_x), 256):
                logits.append(self.student(ctx.val_x[b:b + 256]))
                embs.append(cap.values["emb"])
        finally:
            cap.remove()
        ce = float(F.cross_entropy(torch.cat(logits), ctx.val_y))
        s_emb = torch.cat(embs).flatten(1)
        gaps = [_gap(s_emb, acts["__embedding__"].flatten(1)) for acts in ctx.val_acts]
        return ce, sum(gaps) / len(gaps)


def _gap(s_emb: torch.Tensor, t_emb: torch.Tensor) -> float:
    if s_emb.shape[1] != t_emb.shape[1]:
        proj = torch.randn(s_emb.shape[1], t_emb.shape[1], generator=torch.Generator().manual_seed(1234))
        s_emb = s_emb @ proj.to(s_emb.device) / math.sqrt(s_emb.shape[1])
    return float(F.mse_loss(s_emb, t_emb) / t_emb.var().clamp_min(1e-8))


# ---- sparse student: magnitude pruning with random regrowth ---------------------------------------------


def _sparse_masks(student: nn.Module, density: float | None, generator) -> list:
    if not density or density >= 1:
        return []
    masks = []
    for module in student.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight
            keep = max(1, int(density * w.numel()))
            threshold = w.detach().abs().flatten().kthvalue(w.numel() - keep + 1).values
            masks.append((w, (w.detach().abs() >= threshold).float()))
    _apply_masks(masks)
    return masks


@torch.no_grad()
def _apply_masks(masks) -> None:
    for w, m in masks:
        w.mul_(m)


@torch.no_grad()
def _regrow(masks, generator, fraction: float = 0.1) -> None:
    """Drop the smallest active weights and regrow as many inactive ones at random."""
    for w, m in masks:
        active = m.bool().flatten()
        k = int(fraction * int(active.sum()))
        if k == 0 or int((~active).sum()) < k:
            continue
        mags = w.abs().flatten().masked_fill(~active, float("inf"))
        drop = mags.topk(k, largest=False).indices
        inactive = (~active).nonzero().flatten()
        grow = inactive[torch.randperm(len(inactive), generator=generator)[:k]]
        flat = m.view(-1)
        flat[drop] = 0.0
        flat[grow] = 1.0
        w.view(-1)[grow] = 0.0
