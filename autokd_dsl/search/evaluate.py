"""The proxy evaluator: compile a candidate, reject broken losses on a probe batch, train briefly, score.

Reward (larger is better; ``--reward``, one of :data:`REWARDS`): by default ``-(0.5 × CE_val + 0.5 × gap)`` where
CE_val is the student's cross-entropy on the held-out validation split and gap is ``MSE(P·s, t) / Var(t)``
between the student's and the teacher's pooled last-stage features (``embedding``), through a fixed random
projection P where their widths differ; with several teachers, the mean of each teacher's gap. The test split is
never read here.

The teachers run once, before the search (:class:`ProxyContext`): each one's tapped activations for the proxy
subset and the validation split are kept, and candidates train the student against them (``offline_teacher``).
Candidates train in ``--amp`` precision (autocast, and a gradient scaler for fp16); they are scored in fp32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
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
from ..training.runtime import Precision


@dataclass(frozen=True)
class Reward:
    """A reward made of one proxy run's validation parts (larger is better)."""

    text: str
    value: Callable[[dict], float]


# name → reward; the parts are ce (validation cross-entropy), gap (the embedding gap to the teacher), acc
# (validation accuracy) and tkl (KL(teacher ‖ student) of the predictions on the validation split)
REWARDS = {
    "ce+gap": Reward("-(0.5 × validation cross-entropy + 0.5 × representation gap)",
                     lambda p: -(0.5 * p["ce"] + 0.5 * p["gap"])),
    "ce": Reward("-validation cross-entropy", lambda p: -p["ce"]),
    "ce+0.1gap": Reward("-(validation cross-entropy + 0.1 × representation gap)",
                        lambda p: -(p["ce"] + 0.1 * p["gap"])),
    "kl": Reward("-KL(teacher ‖ student) on the validation split", lambda p: -p["tkl"]),
    "acc": Reward("validation accuracy", lambda p: p["acc"]),
    "acc-ce": Reward("validation accuracy - validation cross-entropy", lambda p: p["acc"] - p["ce"]),
}
DEFAULT_REWARD = "ce+gap"


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
    reward: str = DEFAULT_REWARD  # a name of REWARDS

    @pydantic.field_validator("reward")
    @classmethod
    def _known_reward(cls, name: str) -> str:
        if name not in REWARDS:
            raise ValueError(f"unknown reward `{name}`; the rewards are {', '.join(REWARDS)}")
        return name

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
    acc: float | None = None  # validation accuracy
    tkl: float | None = None  # KL(teacher ‖ student) on the validation split


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

    ``teacher`` is one network or a list (several teachers, teacher1 first; ``teacher_name`` then a list too).
    Each teacher runs once here, in inference mode, over the proxy data; its taps are cached under
    ``"K|spec"`` (K counted from 1). ``amp`` (``off``, ``bf16``, ``fp16``) is the candidates' training precision.
    """

    def __init__(self, space, teacher: nn.Module | list[nn.Module], student_name: str, bundle,
                 settings: ProxySettings, teacher_name: str | list[str] = "teacher", device: str = "cpu",
                 extra_taps=(), amp: str = "off"):
        self.device = torch.device(device)
        nets = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        self.teachers = nn.ModuleList(nets).to(self.device).eval()
        self.teacher_names = list(teacher_name) if isinstance(teacher_name, (list, tuple)) else [teacher_name]
        self.student_name, self.bundle, self.settings, self.amp = student_name, bundle, settings, amp
        self.input_size = tuple(bundle.train.images.shape[1:])
        self.num_classes = bundle.num_classes
        self.train_x, self.train_y = bundle.train.images.to(self.device), bundle.train.labels.to(self.device)
        self.val_x, self.val_y = bundle.val.images.to(self.device), bundle.val.labels.to(self.device)
        self.teacher_taps = self._teacher_taps(space, extra_taps)
        self.train_acts = self._run_teachers(self.train_x)
        if settings.subset < 1.0:
            size = max(self.num_classes, round(settings.subset * len(self.train_x)))
            if settings.entropy_sampling:
                idx = entropy_subset(self.train_acts["__logits__"].float().cpu(), size, settings.seed)
            else:
                idx = torch.randperm(len(self.train_x), generator=torch.Generator().manual_seed(settings.seed))[:size]
            self.train_x, self.train_y = self.train_x[idx], self.train_y[idx]
            self.train_acts = {k: v[idx] for k, v in self.train_acts.items()}
        self.val_acts = self._run_teachers(self.val_x)
        self.teacher_runs = 1  # the teachers' forward passes happen here, never per candidate

    @property
    def teacher(self) -> nn.Module | list[nn.Module]:
        """The network compiled against: the teacher, or the list of teachers."""
        return self.teachers[0] if len(self.teachers) == 1 else list(self.teachers)

    @property
    def teacher_name(self) -> str | list[str]:
        return self.teacher_names[0] if len(self.teacher_names) == 1 else list(self.teacher_names)

    def _teacher_taps(self, space, extra_taps=()) -> list[dict[str, str]]:
        """Per teacher, every tap any candidate (or a distiller of ``extra_taps``, e.g. the baselines) may read
        of it, plus the logits and embedding the reward needs."""
        from ..compiler.taps import resolve_point

        points = [(tap, True) for slots in space.slots for slot in slots if slot.role == "tap"
                  for option in slot.options for tap in ir.option_taps(option)]
        points += [(tap, False) for block in extra_taps for term in block.terms for tap in term.taps
                   if isinstance(tap, ir.Tap)]
        found: list[dict[str, None]] = [{} for _ in self.teachers]
        for tap, needed in points:
            point = tap.teacher_point
            if point.is_labels:
                continue
            numbers = (range(1, len(self.teachers) + 1) if tap.each_teacher
                       else [point.teacher_number or 1])
            for k in numbers:
                if k > len(self.teachers):
                    continue  # a baseline over more teachers than given: it does not apply
                try:
                    found[k - 1][resolve_point(self.teachers[k - 1], point, self.teacher_names[k - 1])] = None
                except KDError:  # a baseline's layer this teacher lacks: that baseline does not apply
                    if needed:
                        raise
        for net, taps in zip(self.teachers, found):
            aliases = getattr(net, "kd_aliases", {})
            taps[aliases.get("logits", "")] = None
            taps[aliases.get("embedding", "")] = None
        return [{spec: spec for spec in taps if spec} for taps in found]

    def teacher_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One live forward of every teacher (only when ``offline_teacher`` is off)."""
        self.teacher_runs += 1
        return self._run_teachers(x)

    def _run_teachers(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every teacher's taps on ``x`` (in inference mode), as ``"K|spec"``; ``__logits__`` (the teachers'
        mean prediction, as log-probabilities with several) and ``__embedding__`` (teacher 1's) for the reward
        and the subset sampler, and ``__embedding_K__`` per teacher."""
        out: dict[str, torch.Tensor] = {}
        for k, (net, taps) in enumerate(zip(self.teachers, self.teacher_taps), 1):
            capture = TapCapture(net, taps, detach=True)
            chunks: dict[str, list] = {}
            try:
                with torch.inference_mode():
                    for start in range(0, len(x), 256):
                        net(x[start:start + 256])
                        for spec, v in capture.values.items():
                            chunks.setdefault(spec, []).append(v)
            finally:
                capture.remove()
            # inference tensors cannot be saved for backward; a clone outside inference mode is an ordinary one
            out |= {f"{k}|{spec}": torch.cat(v).clone() for spec, v in chunks.items()}
            aliases = getattr(net, "kd_aliases", {})
            out[f"__embedding_{k}__"] = out[f"{k}|{aliases['embedding']}"]
        logits = [out[f"{k}|{getattr(net, 'kd_aliases', {})['logits']}"] for k, net in enumerate(self.teachers, 1)]
        out["__logits__"] = logits[0] if len(logits) == 1 else torch.stack(
            [t.float().softmax(1) for t in logits]).mean(0).clamp_min(1e-12).log()
        out["__embedding__"] = out["__embedding_1__"]
        return out


def evaluate(block: ir.Block, ctx: ProxyContext, settings: ProxySettings | None = None) -> Outcome:
    """Evaluate one candidate distiller under the proxy settings (seeded: same inputs, same outcome).

    ``settings`` overrides the context's (a rung of multi-fidelity promotion trains more epochs); the teacher
    outputs cached in the context serve every setting.
    """
    start = time.perf_counter()
    s = settings or ctx.settings
    torch.manual_seed(s.seed)
    student = create_model(ctx.student_name, num_classes=ctx.num_classes, in_chans=ctx.input_size[0]).to(ctx.device)
    try:
        loss = compile_distiller(block, ctx.teacher, student, ctx.input_size, teacher_name=ctx.teacher_name,
                                 student_name=ctx.student_name)
    except KDError as err:
        return Outcome(None, "rejected", f"does not compile: {err.message}", seconds=time.perf_counter() - start)
    runner = _Runner(student, loss, ctx, block, s)
    reason = runner.probe()
    if reason:
        return Outcome(None, "rejected", reason, seconds=time.perf_counter() - start)
    terms = runner.train()
    if terms is None:
        return Outcome(None, "rejected", "loss became NaN or infinite during training",
                       seconds=time.perf_counter() - start)
    parts = runner.score()
    ce, gap, acc = parts["ce"], parts["gap"], parts["acc"]
    reward = REWARDS[s.reward].value(parts)
    if not math.isfinite(reward):
        return Outcome(None, "rejected", "non-finite validation score", seconds=time.perf_counter() - start)
    return Outcome(reward, "ok", "", ce, gap, time.perf_counter() - start, terms, acc, parts["tkl"])


class _Runner:
    """Trains one student against the cached teacher activations."""

    def __init__(self, student: nn.Module, loss, ctx: ProxyContext, block: ir.Block | None = None,
                 settings: ProxySettings | None = None):
        self.student, self.loss, self.ctx, self.block = student, loss, ctx, block
        self.settings = settings or ctx.settings
        self.capture = TapCapture(student, loss.student_taps)
        # teacher placeholder name → its cached activations ("K|spec", teacher K counted from 1)
        self.t_names = {name: f"{k}|{spec}" for k, taps in enumerate(loss.teachers_taps, 1)
                        for name, spec in taps.items()}
        self.precision = Precision(getattr(ctx, "amp", "off"), ctx.device)
        self.params = list(student.parameters()) + list(loss.parameters())
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self.masks = _sparse_masks(student, self.settings.sparse_density, self.generator)

    def losses(self, x, y, acts, idx, epoch):
        if not self.settings.offline_teacher:  # live teacher inference, for comparison with the cache
            acts, idx = self.ctx.teacher_activations(x), slice(None)
        with self.precision.autocast():
            out = self.student(x)
            t_vals = {name: acts[key][idx] for name, key in self.t_names.items()}
            values = self.loss(**self.capture.values, **t_vals, labels=y, epoch=epoch)
        return out, {k: v.float() if torch.is_tensor(v) else v for k, v in values.items()}

    def probe(self) -> str:
        """Why the loss cannot train this student (empty when it can), from two different probe batches.

        The total must be finite and not explode, and every distillation term (a term that does not read the
        labels) must be finite on both batches, differ between them, and give the student a gradient, at the first,
        the middle or the last epoch of the proxy run (a scheduled weight such as `warmup(20)` is 0 at the first).
        """
        n = min(32, len(self.ctx.train_x) // 2) or 1
        first, second = torch.arange(n), torch.arange(n, min(2 * n, len(self.ctx.train_x)))
        self.student.train()
        _, values = self.losses(self.ctx.train_x[first], self.ctx.train_y[first], self.ctx.train_acts, first, 0)
        shapes = {name: tuple(v.shape[1:]) for name, v in self.capture.values.items()}
        total = values["total"]
        if not torch.isfinite(total):
            return "loss is NaN or infinite on the probe batch"
        if total.abs() > 1e6:
            return f"loss explodes on the probe batch ({float(total.detach()):.3g})"
        distill = [v for k, v in values.items() if k != "total" and v.requires_grad]
        if not distill:
            return "no loss term depends on the student"
        params = [p for p in self.student.parameters()]
        # a term's weight may follow a schedule (`warmup(20)` is 0 at epoch 0), so a term that fails at the first
        # epoch is looked at again at the middle and the last epoch of the proxy run; it must teach at one of them
        epochs = sorted({0, self.settings.epochs // 2, max(0, self.settings.epochs - 1)})
        at = {0: values}
        seconds = {}

        def batches(epoch):
            if epoch not in at:
                at[epoch] = self.losses(self.ctx.train_x[first], self.ctx.train_y[first], self.ctx.train_acts,
                                        first, epoch)[1]
            if epoch not in seconds:
                seconds[epoch] = {}
                if len(second):
                    with torch.no_grad():
                        seconds[epoch] = self.losses(self.ctx.train_x[second], self.ctx.train_y[second],
                                                     self.ctx.train_acts, second, epoch)[1]
            return at[epoch], seconds[epoch]

        for term, name in self._distillation_terms():
            faults = []
            for epoch in epochs:
                faults.append(self._term_fault(term, name, *batches(epoch), shapes, params))
                if not faults[-1]:
                    break
            else:
                return faults[0]
        grads = torch.autograd.grad(total, params, allow_unused=True)
        norm = sum(float(g.abs().sum()) for g in grads if g is not None)
        if not math.isfinite(norm):
            return "gradient is NaN or infinite on the probe batch"
        if norm == 0.0:
            return "no gradient reaches the student"
        return ""

    def _term_fault(self, term: ir.Term, name: str, values: dict, others: dict, shapes: dict, params) -> str:
        """Why one distillation term cannot teach, on the two probe batches at one epoch (empty when it can)."""
        value = values[name]
        if not torch.isfinite(value) or (name in others and not torch.isfinite(others[name])):
            return f"term `{name}` is NaN or infinite on the probe batches"
        a = float(value.detach())
        if name in others:
            b = float(others[name])
            if abs(a - b) <= 1e-7 * max(1.0, abs(a)):
                why = _why_constant(term, self._tap_shape(term, shapes))
                return f"term `{name}` is constant {a:.3g} on two different probe batches" + (f": {why}" if why else "")
        grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True) if value.requires_grad else []
        if sum(float(g.abs().sum()) for g in grads if g is not None) == 0.0:
            return f"term `{name}` gives the student no gradient"
        return ""

    def _distillation_terms(self):
        """(term, name) of every term that does not read the labels."""
        if self.block is None:
            return []
        from ..compiler.lower import term_names

        out = []
        for term, name in zip(self.block.terms, term_names(self.block)):
            taps = [t for t in term.taps if isinstance(t, ir.Tap)]
            if taps and not any(t.teacher_point.is_labels for t in taps):
                out.append((term, name))
        return out

    def _tap_shape(self, term: ir.Term, shapes: dict) -> tuple | None:
        from ..compiler.taps import resolve_point

        try:
            spec = resolve_point(self.student, term.taps[0].student, self.ctx.student_name)
        except KDError:
            return None
        name = next((n for n, sp in dict(self.loss.student_taps).items() if sp == spec), None)
        return shapes.get(name)

    def train(self):
        s = self.settings
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
                self.precision.step(total, opt)
                sched.step()
                _apply_masks(self.masks)
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
            _regrow(self.masks, self.generator)
        return {k: v / max(1, steps) for k, v in sums.items()}

    @torch.no_grad()
    def score(self) -> dict[str, float]:
        """The validation parts every reward is made of: ce, gap, acc and tkl (see :data:`REWARDS`)."""
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
        logits = torch.cat(logits)
        ce = float(F.cross_entropy(logits, ctx.val_y))
        acc = float((logits.argmax(1) == ctx.val_y).float().mean())
        s_emb = torch.cat(embs).flatten(1).float()
        gaps = [_gap(s_emb, ctx.val_acts[f"__embedding_{k}__"].flatten(1).float())
                for k in range(1, len(ctx.teacher_taps) + 1)]
        t_log = ctx.val_acts["__logits__"].float().log_softmax(1)  # the teachers' mean prediction with several
        tkl = float(F.kl_div(logits.float().log_softmax(1), t_log, reduction="batchmean", log_target=True))
        return {"ce": ce, "gap": sum(gaps) / len(gaps), "acc": acc, "tkl": tkl}


def _gap(s_emb: torch.Tensor, t_emb: torch.Tensor) -> float:
    """MSE(P·s, t) / Var(t), P a fixed random projection where the widths differ."""
    if s_emb.shape[1] != t_emb.shape[1]:
        proj = torch.randn(s_emb.shape[1], t_emb.shape[1], generator=torch.Generator().manual_seed(1234))
        s_emb = s_emb @ proj.to(s_emb.device) / math.sqrt(s_emb.shape[1])
    return float(F.mse_loss(s_emb, t_emb) / t_emb.var().clamp_min(1e-8))


def _why_constant(term: ir.Term, shape: tuple | None) -> str:
    """A reading of why a term cannot change: a softmax or normalisation over an axis the transforms before it
    shrank to one entry (``patches(4)`` on a 4×4 map leaves 1×1 patches, and softmax over one position is 1)."""
    if shape is None or len(shape) != 3:
        return ""
    c, h, w = shape
    how = {"c": "", "hw": ""}
    for step in term.transforms:
        if not isinstance(step, ir.Call):
            continue
        arg = step.args[0].value if step.args else None
        k = arg.value if isinstance(arg, ir.Num) else None
        if step.op == "pool" and k:
            if (h, w) != (k, k):
                how["hw"] = f"pool({k}) leaves a {k}×{k} map" if k == 1 else ""
            h = w = k
        elif step.op == "patches" and k:
            h, w = h // k, w // k
            how["hw"] = f"patches({k}) on a {h * k}×{w * k} map leaves {h}×{w} patches"
        elif step.op == "spatial_attention":
            c, how["c"] = 1, "spatial_attention leaves one channel"
        elif step.op == "channel_attention":
            h = w = 1
            how["hw"] = "channel_attention leaves a 1×1 map"
        elif step.op in ("softmax", "normalize", "minmax"):
            axis = next((a.value.id for a in step.args if isinstance(a.value, ir.Name)), "c" if step.op != "minmax"
                        else "chw")
            if axis == "c" and c == 1 or axis == "hw" and h * w == 1 or axis == "chw" and c * h * w == 1:
                what = "one position" if axis == "hw" else "one channel" if axis == "c" else "one entry"
                result = {"softmax": "is 1", "normalize": "is ±1", "minmax": "is constant"}[step.op]
                cause = how["hw"] if axis == "hw" else how["c"] if axis == "c" else how["hw"] or how["c"]
                return (f"{cause}, and " if cause else "") + f"{step.op} over {what} {result}"
    return ""


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
