"""Learnable connectors (`adapt`): map a student activation onto the teacher's shape.

Copied verbatim into compiled files (torch only). Sized from the real shapes (without the batch axis):

* map → map: resize to the teacher's H×W (average pooling down, bilinear up), 1×1 conv, BatchNorm;
* tokens → map (ViT → CNN): drop leading class/distillation tokens, fold the rest into a square grid, then as
  map → map; map → tokens (CNN → ViT): resize the map to the token grid (side × side, the largest square in the
  token count), its positions in raster order as the patch tokens; the leading tokens the grid leaves over
  (class, distillation, register tokens) are matched with the map's average over positions;
* tokens → tokens: the same count as it is; otherwise the patch grid is resized as a map (as map → tokens) and
  the leading tokens are kept apart from it: passed through where both have as many, else their average for
  each of the teacher's (the grid's average where the student has none); then Linear on the feature axis;
* vector → vector: Linear; map or tokens → vector: average, then Linear.

The modules behind the other module-backed ops follow `Connector` (see `autokd_dsl.compiler.modules` for how they
are sized): `Align`, `Regressor`, `MLP`, `Generator`, `Project` and `ReviewFusion` are learnable transforms,
`GaussianNLL` a learnable distance, `ContrastMemory` a distance with state across batches, `TeacherMargin` and
`TeacherHead` hold values read from the teacher. All of them derive from `Part`, which spells out the two
hooks the rest of the pipeline relies on (``args`` and ``reads_teacher`` / ``copy_from_teacher``).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class Part(nn.Module):
    """The base of every module behind an op, with the two hooks the compiler and `attach` use:

    * ``args``: the constructor arguments (shapes without the batch axis, numbers, module paths); a compiled
      file rebuilds the module as ``type(module)(*module.args)``;
    * ``reads_teacher``: when True, ``copy_from_teacher(teacher)`` copies values out of the teacher model, at
      compile time and again whenever the loss is attached to a teacher (`Attached`).
    """

    reads_teacher = False

    def __init__(self, *args):
        super().__init__()
        self.args = args

    def copy_from_teacher(self, teacher):
        raise NotImplementedError(f"{type(self).__name__} reads nothing from the teacher")


def _resize(x, size):
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if x.shape[2] >= size[0] and x.shape[3] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Connector(Part):
    def __init__(self, student_shape, teacher_shape):
        super().__init__(tuple(student_shape), tuple(teacher_shape))
        self.student_shape, self.teacher_shape = self.args
        s, t = self.student_shape, self.teacher_shape
        if len(t) == 3:
            channels = s[0] if len(s) == 3 else s[1]
            self.conv = nn.Conv2d(channels, t[0], kernel_size=1, bias=False)
            self.bn = nn.BatchNorm2d(t[0])
        else:
            self.linear = nn.Linear(s[-1] if len(s) != 3 else s[0], t[-1])

    def _grid(self, x):
        n, length, dim = x.shape
        side = math.isqrt(length)
        return x[:, length - side * side:].transpose(1, 2).reshape(n, dim, side, side)

    def _tokens(self, grid, length, leading=None):
        """A map (N, D, H, W) onto ``length`` tokens: the map resized to the largest square in the count, in
        raster order, after the leading tokens the square leaves over. ``leading`` (N, K, D), a student's own
        leading tokens, is kept where K is that many, otherwise averaged; without any, the map's average."""
        side = math.isqrt(length)
        count = length - side * side
        cells = _resize(grid, (side, side)).flatten(2).transpose(1, 2)
        if leading is None or leading.shape[1] != count:
            none = leading is None or leading.shape[1] == 0
            leading = (grid.mean((2, 3))[:, None] if none else leading.mean(1, keepdim=True)).expand(-1, count, -1)
        return torch.cat([leading, cells], dim=1)

    def forward(self, x):
        s, t = self.student_shape, self.teacher_shape
        if len(t) == 3:
            if len(s) == 2:
                x = self._grid(x)
            return self.bn(self.conv(_resize(x, t[1:])))
        if len(t) == 2:
            if len(s) == 3:
                x = self._tokens(x, t[0])
            elif x.shape[1] != t[0]:
                x = self._tokens(self._grid(x), t[0], x[:, :x.shape[1] - math.isqrt(x.shape[1]) ** 2])
            return self.linear(x)
        if x.dim() == 4:
            x = x.mean((2, 3))
        elif x.dim() == 3:
            x = x.mean(1)
        return self.linear(x)


def connector_fits(student_shape, teacher_shape):
    """Can a connector map this student shape onto this teacher shape?"""
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(t) == 1:
        return len(s) in (1, 2, 3)
    return len(t) in (2, 3) and len(s) in (2, 3)


# ---- modules behind learnable, stateful and teacher-reading ops (each a `Part`) ---------------------------


def _conv1x1(c_in, c_out, bias=False):
    return nn.Conv2d(c_in, c_out, kernel_size=1, bias=bias)


class Align(Part):
    """Identity where the student already has the teacher's shape, otherwise a Connector."""

    def __init__(self, student_shape, teacher_shape):
        super().__init__(tuple(student_shape), tuple(teacher_shape))
        same = self.args[0] == self.args[1]
        self.connector = None if same else Connector(student_shape, teacher_shape)

    def forward(self, x):
        return x if self.connector is None else self.connector(x)


class Regressor(Part):
    """1×1 conv + BatchNorm + ReLU onto the teacher's channels (maps resized like Connector); on vectors
    linear + BatchNorm + ReLU. FitNet's hint regressor, SRRL's transfer layer."""

    def __init__(self, student_shape, teacher_shape):
        super().__init__(tuple(student_shape), tuple(teacher_shape))
        c_in, c_out = self.args[0][0], self.args[1][0]
        if len(self.args[1]) == 3:
            self.conv, self.bn = _conv1x1(c_in, c_out), nn.BatchNorm2d(c_out)
        else:
            self.conv, self.bn = nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out)

    def forward(self, x):
        if x.dim() == 4:
            x = _resize(x, self.args[1][1:])
        return F.relu(self.bn(self.conv(x)))


class MLP(Part):
    """VID's regressor of the mean: conv1×1 → ReLU → conv1×1 → ReLU → conv1×1 (no bias), onto the teacher's
    channels with the teacher's width in between; vectors are treated as 1×1 maps."""

    def __init__(self, student_shape, teacher_shape):
        super().__init__(tuple(student_shape), tuple(teacher_shape))
        c_in, c_out = self.args[0][0], self.args[1][0]
        self.layers = nn.Sequential(_conv1x1(c_in, c_out), nn.ReLU(), _conv1x1(c_out, c_out), nn.ReLU(),
                                    _conv1x1(c_out, c_out))

    def forward(self, x):
        if x.dim() == 2:
            return self.layers(x[:, :, None, None]).flatten(1)
        return self.layers(_resize(x, self.args[1][1:]))


class Generator(Part):
    """MGD's generation block: conv3×3 → ReLU → conv3×3 onto the teacher's channels."""

    def __init__(self, student_shape, teacher_shape):
        super().__init__(tuple(student_shape), tuple(teacher_shape))
        c_in, c_out = self.args[0][0], self.args[1][0]
        self.layers = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(c_out, c_out, 3, padding=1))

    def forward(self, x):
        return self.layers(_resize(x, self.args[1][1:]))


class Project(Part):
    """A learnable linear map of the flattened activation to ``dim`` features (one per network side)."""

    def __init__(self, in_features, dim):
        super().__init__(in_features, dim)
        self.linear = nn.Linear(in_features, dim)

    def forward(self, x):
        return self.linear(x.flatten(1))


class _ABF(nn.Module):
    """One attention-based fusion step of ReviewKD: this level's features fused with the residual of the
    deeper level, then a 3×3 conv onto the teacher's channels."""

    def __init__(self, c_in, c_mid, c_out, fuse):
        super().__init__()
        self.conv1 = nn.Sequential(_conv1x1(c_in, c_mid), nn.BatchNorm2d(c_mid))
        self.conv2 = nn.Sequential(nn.Conv2d(c_mid, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.att = nn.Sequential(nn.Conv2d(2 * c_mid, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, residual, out_size):
        x = self.conv1(x)
        if self.att is not None:
            residual = F.interpolate(residual, size=tuple(x.shape[2:]), mode="nearest")
            z = self.att(torch.cat([x, residual], dim=1))
            x = x * z[:, 0:1] + residual * z[:, 1:2]
        if tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


class ReviewFusion(Part):
    """ReviewKD across taps: from the deepest tap to the first, each level is fused with the level below it
    and mapped onto the teacher's shape. Vectors enter and leave as 1×1 maps."""

    def __init__(self, student_shapes, teacher_shapes):
        super().__init__(tuple(tuple(s) for s in student_shapes), tuple(tuple(t) for t in teacher_shapes))
        s_shapes, t_shapes = self.args
        mid = min(512, s_shapes[-1][0])
        last = len(s_shapes) - 1
        self.abfs = nn.ModuleList(_ABF(s[0], mid, t[0], i < last) for i, (s, t) in enumerate(zip(*self.args)))

    def forward(self, *xs):
        outs, residual = [None] * len(xs), None
        for i in reversed(range(len(xs))):
            x, t_shape = xs[i], self.args[1][i]
            x = x[:, :, None, None] if x.dim() == 2 else x
            out, residual = self.abfs[i](x, residual, t_shape[1:] if len(t_shape) == 3 else (1, 1))
            outs[i] = out if len(t_shape) == 3 else out.flatten(1)
        return tuple(outs)


class GaussianNLL(Part):
    """VID's distance: −log N(t; s, σ²) per entry (constants dropped), averaged; σ² per channel is learnable,
    softplus(θ) + eps, starting at ``init_var``."""

    def __init__(self, channels, init_var=5.0, eps=1e-5):
        super().__init__(channels, init_var, eps)
        start = math.log(math.exp(init_var - eps) - 1.0)
        self.log_scale = nn.Parameter(torch.full((channels,), float(start)))

    def forward(self, s, t):
        var = torch.log1p(torch.exp(self.log_scale)) + self.args[2]
        var = var.view(1, -1, *([1] * (s.dim() - 2)))
        return (0.5 * ((s - t) ** 2 / var + torch.log(var))).mean()


class ContrastMemory(Part):
    """CRD's contrastive loss with one memory bank per network holding an embedding of every training sample.

    Each sample is contrasted with ``k`` entries drawn uniformly from the other network's bank; the banks move
    towards the batch's embeddings (momentum) after each forward, and the normalising constants are set from
    the first batch, so this module carries state across batches. Needs the dataset index of each sample."""

    def __init__(self, n_data, dim, k=16384, t=0.07, momentum=0.5):
        super().__init__(n_data, dim, k, t, momentum)
        bound = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("memory_s", torch.rand(n_data, dim) * 2 * bound - bound)
        self.register_buffer("memory_t", torch.rand(n_data, dim) * 2 * bound - bound)
        self.register_buffer("z", torch.full((2,), -1.0))  # normalising constants (student, teacher)

    def forward(self, s, t, index):
        if index is None:
            raise ValueError("this distiller (CRD) needs the dataset index of every sample: pass index=")
        n_data, _, k, temp, momentum = self.args
        idx = torch.randint(0, n_data, (s.shape[0], k + 1), device=s.device)
        idx[:, 0] = index
        out_s = torch.exp(torch.bmm(self.memory_t[idx].detach(), s.unsqueeze(2)).squeeze(2) / temp)
        out_t = torch.exp(torch.bmm(self.memory_s[idx].detach(), t.unsqueeze(2)).squeeze(2) / temp)
        with torch.no_grad():
            for i, out in enumerate((out_s, out_t)):
                if self.z[i] < 0:
                    self.z[i] = out.mean() * n_data
        loss = _nce(out_s / self.z[0], n_data) + _nce(out_t / self.z[1], n_data)
        with torch.no_grad():
            self._update(self.memory_s, s, index, momentum)
            self._update(self.memory_t, t, index, momentum)
        return loss

    @staticmethod
    def _update(memory, v, index, momentum):
        row = memory[index] * momentum + v.detach() * (1 - momentum)
        memory.index_copy_(0, index, row / row.norm(dim=1, keepdim=True))


def _nce(x, n_data, eps=1e-7):
    """NCE loss: the first column is the positive pair, the rest noise drawn with probability 1 / n_data."""
    noise = (x.shape[1] - 1) / n_data
    log_pos = torch.log(x[:, 0] / (x[:, 0] + noise + eps))
    log_neg = torch.log(noise / (x[:, 1:] + noise + eps))
    return -(log_pos.sum() + log_neg.sum()) / x.shape[0]


def ofd_margin(gamma, beta):
    """OFD's margin per channel: E[x | x < 0] for x ~ N(β, γ²) (−3|γ| where P(x < 0) ≤ 0.001)."""
    s, m = gamma.double().abs(), beta.double()
    cdf = 0.5 * (1 + torch.erf(-m / s / math.sqrt(2)))
    pdf = torch.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi)
    return torch.where(cdf > 0.001, m - s * pdf / cdf.clamp_min(1e-12), -3 * s)


def _teacher_module(teacher, path):
    return dict(teacher.named_modules())[path]


class TeacherMargin(Part):
    """OFD: max(x, m) with the teacher's margin m per channel, from the BatchNorm at ``bn_path``."""

    def __init__(self, bn_path, channels):
        super().__init__(bn_path, channels)
        self.register_buffer("margin", torch.zeros(1, channels, 1, 1))

    reads_teacher = True

    def copy_from_teacher(self, teacher):
        bn = _teacher_module(teacher, self.args[0])
        with torch.no_grad():
            self.margin.copy_(ofd_margin(bn.weight, bn.bias).view(1, -1, 1, 1))

    def forward(self, x):
        return torch.max(x, self.margin)


class TeacherHead(Part):
    """The teacher's classifier (the linear layer at ``path``), frozen, applied to any feature of its width."""

    def __init__(self, path, in_features, out_features):
        super().__init__(path, in_features, out_features)
        self.register_buffer("weight", torch.zeros(out_features, in_features))
        self.register_buffer("bias", torch.zeros(out_features))

    reads_teacher = True

    def copy_from_teacher(self, teacher):
        linear = _teacher_module(teacher, self.args[0])
        with torch.no_grad():
            self.weight.copy_(linear.weight)
            self.bias.copy_(linear.bias if linear.bias is not None else torch.zeros_like(self.bias))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)
