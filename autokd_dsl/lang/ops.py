"""The op registry: the single source of truth for names, arguments and kinds.

The checker, the search's legal moves, the printer and the lowering all read this table. Each entry names its
kind rows, its parameters and its implementation (:class:`Impl`: a kernel, or a module builder, by name; the
compiler's :mod:`autokd_dsl.compiler.bindings` resolves the names, so this module stays torch-free). Adding an
element-wise op is one row here plus one tensor function in `autokd_dsl.standalone.kernels`. Signatures are rows
``input -> output``
(transforms) or ``student , teacher`` (distances) in the pattern language of :mod:`autokd_dsl.lang.kinds`;
``=`` means "the same kind as the input", ``=raw`` the same form without probabilities.

>>> OPS["softmax"].role, [p.name for p in OPS["softmax"].params]
('transform', ['t', 'axis'])
>>> len(names("transform")) >= 30 and len(names("distance")) >= 10
True
"""

from __future__ import annotations

from dataclasses import dataclass

from .kinds import Kind, describe_pattern, matches, parse_kind

AXES = ("c", "hw", "chw", "n", "k", "l", "d", "nhw")


@dataclass(frozen=True)
class P:
    """A parameter of an op. ``type`` is "number", "positive" (> 0: temperatures), "int", "fraction" (0 ≤ x < 1),
    "axis" or "symbol"
    (a word from ``choices``; axes and symbols bind to positional arguments by type)."""

    name: str
    type: str = "number"
    default: float | int | str | None = None
    kw_only: bool = False
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is None and not self.choices


@dataclass(frozen=True)
class Row:
    """One signature row: input pattern(s), output, and optionally the axes it applies to."""

    takes: str  # transforms: "map"; distances: "feature.p , feature.p" (same kinds both sides unless "!")
    gives: str = "scalar"
    axes: tuple[str | None, ...] | None = None  # None = any axis value (or the op has no axis)


@dataclass(frozen=True)
class Impl:
    """How the compiler runs an op, by name (resolved in :mod:`autokd_dsl.compiler.bindings`).

    ``kind`` "kernel": a function of :mod:`autokd_dsl.standalone.kernels` called with the op's tensors, then its
    parameters as keywords (an axis as ``dims``, the tensor dims it names); "module": a builder in
    :mod:`autokd_dsl.compiler.modules` that returns the nn.Module the graph calls, sized from the real shapes
    (learnable, stateful or teacher-reading ops). ``name``: the kernel or builder, the op's own name when empty.
    ``rule``: an argument rule of the bindings for what the generic binding does not cover (a fused softmax → KL,
    the labels' log form, patch sizes).
    """

    kind: str = "kernel"
    name: str = ""
    rule: str = ""


KERNEL, MODULE = Impl(), Impl("module")


@dataclass(frozen=True)
class Op:
    name: str
    role: str  # "transform" | "distance" | "weight"
    doc: str
    params: tuple[P, ...] = ()
    rows: tuple[Row, ...] = ()
    side: str = "both"  # "student" / "teacher": applies to that side only
    learnable: bool = False  # owns parameters (sized from the real shapes), trained with the student
    random: bool = False
    stateful: bool = False  # carries buffers from batch to batch (memory banks)
    teacher: bool = False  # reads the teacher's parameters (copied into buffers, so compiled files stay standalone)
    needs: tuple[str, ...] = ()  # graph inputs beyond the activations: "labels", "index" (dataset positions)
    across: str | None = None  # takes all taps of its term at once: "chain" (one output each) or "pairs"
    same_channels: bool = False  # student and teacher must give the same shape (e.g. FSP's C×C matrices)
    shapes: str = "same"  # distances: the shapes they compare: "same", "positions" (channels may differ), "any"
    impl: Impl = KERNEL  # its implementation (a kernel of the same name unless the entry says otherwise)
    batch_sized: bool = False  # its output's size (beyond the batch axis) is the batch size, as in relations
    # weights: a training-free factor per teacher of a `teachers.` term: "fixed" (a constant), "batch" (computed
    # on every batch) or "once" (computed on the first training batch, then kept)
    per_teacher: str | None = None

    def param(self, name: str) -> P | None:
        return next((p for p in self.params if p.name == name), None)

    def accepts(self) -> str:
        return "; ".join(_describe_row(self, r) for r in self.rows)

    @property
    def module(self) -> bool:
        """Backed by an nn.Module the compiler builds (learnable, stateful or reading the teacher)."""
        return self.impl.kind == "module"

    @property
    def impl_name(self) -> str:
        """The kernel or module builder that implements this op."""
        return self.impl.name or self.name

    @property
    def plain(self) -> bool:
        """Needs nothing but its tap's values: no other taps, graph inputs, teacher parameters or state (a search
        can put it in any slot)."""
        return self.across is None and not self.needs and not self.teacher and not self.stateful

    def constructs(self) -> list[str]:
        """What this op needs beyond a pure tensor function, in words (for `autokd-dsl ops` and the docs).

        >>> OPS["crd"].constructs()
        ['state across batches', 'random', 'input: index']
        """
        flags = [(self.learnable, "learnable"), (self.stateful, "state across batches"), (self.random, "random"),
                 (self.per_teacher is not None, f"per teacher ({self.per_teacher})"),
                 (self.teacher, "teacher parameters"), (self.across is not None, f"across taps ({self.across})")]
        return [word for on, word in flags if on] + [f"input: {n}" for n in self.needs]


def _describe_row(op: Op, row: Row) -> str:
    if op.role == "distance":
        s, _, t = (x.strip() for x in row.takes.partition(","))
        return f"{describe_pattern(s)} with {describe_pattern(t.lstrip('!'))}"
    return describe_pattern(row.takes)


# ---- the table ------------------------------------------------------------------------------------
T, D, W = "transform", "distance", "weight"
_any_axis = P("axis", "axis", None, choices=AXES)
ELEMENTWISE = (Row("tensor.any", "=raw"),)

_OPS: list[Op] = [
    # attention and masking (Auto-KD's first slot)
    Op("spatial_attention", T, "mean over channels of |x|^p: where the network looks, (N,1,H,W)",
       (P("p", "number", 2),), (Row("map", "map"),)),
    Op("channel_attention", T, "mean over positions: which channels fire, (N,C,1,1)", (), (Row("map", "map"),)),
    Op("attention", T, "AT map: L2-normalised, flattened mean over channels of |x|^p (Zagoruyko & Komodakis)",
       (P("p", "number", 2),), (Row("map", "vector"),)),
    Op("mask", T, "zero a random fraction of positions (maps, tokens) or features, the same mask on both sides; "
                  "over = channels drops whole channels (MGD)",
       (P("ratio", "fraction"), P("over", "symbol", "positions", kw_only=True, choices=("positions", "channels"))),
       (Row("feature", "="),), random=True),
    Op("dropout", T, "element-wise dropout with one shared mask, scaled by 1/(1-p)",
       (P("p", "fraction"),), (Row("feature", "="),), random=True),
    # spatial granularity (second slot)
    Op("pool", T, "adaptive average pooling to size × size", (P("size", "int"),), (Row("map", "map"),)),
    Op("spp", T, "multi-scale pooling: 1×1, 2×2 and 4×4 poolings concatenated", (), (Row("map", "vector"),)),
    Op("patches", T, "split the map into n × n local patches folded into the batch", (P("n", "int"),),
       (Row("map", "map"),), impl=Impl(rule="patches")),
    Op("gap", T, "global average pooling", (), (Row("map", "vector"), Row("tokens", "vector"))),
    Op("flatten", T, "flatten everything but the batch", (), (Row("map", "vector"), Row("tokens", "vector"),
                                                             Row("matrix", "vector"), Row("flat", "vector"))),
    Op("channel_flatten", T, "flatten positions per channel: (N,C,HW)", (), (Row("map", "matrix"),)),
    # relations and normalisations (third slot)
    Op("batch_gram", T, "row-normalised Gram matrix over the batch (SP)", (), (Row("feature", "relation"),)),
    Op("channel_gram", T, "per-sample channel Gram matrix (N,C,C) over flattened positions", (),
       (Row("map", "matrix"), Row("tokens", "matrix"))),
    Op("transpose", T, "swap the batch and class axes (DIST's intra-class relation)", (),
       (Row("flat.any", "="), Row("relation.any", "=")), batch_sized=True, impl=Impl(rule="transpose")),
    Op("softmax", T, "softmax of x / t along an axis (classes by default; c or hw on maps)",
       (P("t", "positive", 1), _any_axis),
       (Row("flat", "=.p", (None, "k", "c")), Row("map", "map.p", ("c", "hw")),
        Row("tokens", "tokens.p", ("l", "d")), Row("relation", "relation.p", (None,))), impl=Impl(rule="softmax")),
    Op("log_softmax", T, "log-softmax of x / t along an axis",
       (P("t", "positive", 1), _any_axis),
       (Row("flat", "=.logp", (None, "k", "c")), Row("map", "map.logp", ("c", "hw")),
        Row("tokens", "tokens.logp", ("l", "d"))), impl=Impl(rule="softmax")),
    Op("normalize", T, "L2-normalise along an axis (features by default; c, hw or chw on maps; n = batch)",
       (_any_axis,),
       (Row("flat.any", "=raw", (None, "c", "k", "n")), Row("map.any", "=raw", ("c", "hw", "chw", "n")),
        Row("tokens.any", "=raw", ("l", "d", "n")), Row("matrix.any", "=raw", (None,)),
        Row("relation.any", "=raw", (None,)))),
    Op("standardize", T, "subtract the mean and divide by the standard deviation along an axis",
       (_any_axis,),
       (Row("flat", "=", (None, "c", "k", "n")), Row("map", "=", ("c", "hw", "chw", "n", "nhw")),
        Row("tokens", "=", ("l", "d", "n")))),
    Op("minmax", T, "rescale each sample to [0, 1]", (), (Row("tensor.any", "=raw"),)),
    # element-wise math
    Op("abs", T, "|x|", (), ELEMENTWISE),
    Op("square", T, "x²", (), ELEMENTWISE),
    Op("pow", T, "sign(x)·|x|^e", (P("e", "number"),), ELEMENTWISE),
    Op("sqrt", T, "sign(x)·√|x|", (), ELEMENTWISE),
    Op("signed_log", T, "sign(x)·log(1 + |x|)", (), ELEMENTWISE),
    Op("exp", T, "eˣ", (), ELEMENTWISE),
    Op("sigmoid", T, "logistic sigmoid", (), ELEMENTWISE),
    Op("tanh", T, "hyperbolic tangent", (), ELEMENTWISE),
    Op("relu", T, "max(x, 0)", (), ELEMENTWISE),
    Op("scale", T, "multiply by a constant", (P("factor", "number"),), ELEMENTWISE),
    # batch relations of published distillers
    Op("distance_relation", T, "pairwise Euclidean distances over the batch, divided by their mean (RKD-D)",
       (), (Row("feature", "relation"),)),
    Op("angle_relation", T, "cosines of the angles of every sample triplet (RKD-A)", (),
       (Row("feature", "relation"),)),
    Op("cond_prob", T, "cosine-similarity kernel normalised to conditional probabilities (PKT)", (),
       (Row("feature", "relation.p"),)),
    # learnable connectors (student side only)
    Op("adapt", T, "learnable connector sized from the real shapes: 1×1 conv + BN for maps, linear otherwise",
       (), (Row("*", "teacher"),), side="student", learnable=True, impl=MODULE),
    Op("align", T, "identity where the student already has the teacher's shape, otherwise `adapt` (AB, MGD, PKD)",
       (), (Row("*", "teacher"),), side="student", learnable=True, impl=MODULE),
    Op("regress", T, "learnable 1×1 conv + BN + ReLU onto the teacher's channels, resized like `adapt`; on vectors "
                     "linear + BN + ReLU (FitNet's hint regressor, SRRL's transfer)",
       (), (Row("map", "teacher"), Row("vector", "teacher")), side="student", learnable=True, impl=MODULE),
    Op("mlp", T, "learnable 1×1-conv MLP conv–ReLU–conv–ReLU–conv onto the teacher's channels, as wide as the "
                 "teacher (VID's regressor of the mean)",
       (), (Row("map", "teacher"), Row("vector", "teacher")), side="student", learnable=True, impl=MODULE),
    Op("generate", T, "learnable generator conv3×3 → ReLU → conv3×3 onto the teacher's channels (MGD)",
       (), (Row("map", "teacher"),), side="student", learnable=True, impl=MODULE),
    Op("project", T, "learnable linear map of the flattened activation to `dim` features, one per side (CRD, CC)",
       (P("dim", "int"),), (Row("feature", "vector"),), learnable=True, impl=MODULE),
    Op("review", T, "ReviewKD's attention-based fusion across the term's taps, deepest first, each level mapped "
                    "onto the teacher's shape", (), (Row("map", "teacher"), Row("vector", "teacher")),
       side="student", learnable=True, across="chain", impl=MODULE),
    # taking the teacher's parameters (read from the teacher model at compile time and again when attached)
    Op("margin", T, "OFD's teacher margin: max(x, m), m per channel = E[x | x < 0] under the statistics (γ, β) of "
                    "the BatchNorm feeding the tapped point", (), (Row("map", "map"),), side="teacher", teacher=True,
       impl=MODULE),
    Op("teacher_head", T, "the teacher's classifier (frozen) applied to a feature of its input width (SRRL)",
       (), (Row("vector", "logits"),), teacher=True, impl=MODULE),
    # labels inside a transform
    Op("target_binary", T, "(probability of the labelled class, of all the others): DKD's binary distribution",
       (), (Row("logits.p", "logits.p"), Row("logits.logp", "logits.logp")), needs=("labels",),
       impl=Impl(rule="log_form")),
    Op("drop_target", T, "logits with the labelled class lowered by 1000, so a softmax spreads over the other "
                         "classes only (DKD's non-target distribution)", (), (Row("logits", "logits"),),
       needs=("labels",)),
    # relations across taps
    Op("fsp", T, "FSP matrices of consecutive taps: (N, C_next, C) means over positions of products, the larger "
                 "map pooled to the smaller (one matrix per pair of taps)", (), (Row("map", "matrix"),),
       across="pairs", same_channels=True),
    # distances: "student , teacher"; both sides must have the same kind unless the teacher pattern has "!"
    Op("l1", D, "mean absolute difference", (), (Row("tensor.any , tensor.any"),)),
    Op("mse", D, "mean squared difference", (), (Row("tensor.any , tensor.any"),)),
    Op("l2", D, "squared L2 distance per sample (with an axis: per row along it), averaged over the rest",
       (_any_axis,), (Row("tensor.any , tensor.any"),)),
    Op("smooth_l1", D, "Huber loss with threshold beta", (P("beta", "number", 1, kw_only=True),),
       (Row("tensor.any , tensor.any"),)),
    Op("pairwise", D, "Euclidean distance per sample, averaged over the batch", (),
       (Row("tensor.any , tensor.any"),)),
    Op("kl", D, "KL(teacher ‖ student) summed over the distribution axis, averaged over the rest (reduce = all: "
                "averaged over every entry); on logits applies softmax(x / t) first",
       (P("t", "positive", 1, kw_only=True), P("reduce", "symbol", "batch", kw_only=True, choices=("batch", "all"))),
       (Row("tensor.p , tensor.p"), Row("tensor.logp , tensor.logp"), Row("flat , flat")),
       impl=Impl(rule="divergence")),
    Op("js", D, "Jensen–Shannon divergence per sample, batch mean; on logits applies softmax(x / t) first",
       (P("t", "positive", 1, kw_only=True),), (Row("tensor.p , tensor.p"), Row("flat , flat")),
       impl=Impl(rule="divergence")),
    Op("cosine", D, "1 − cosine similarity per sample, batch mean", (), (Row("tensor.any , tensor.any"),)),
    Op("pearson", D, "1 − Pearson correlation per sample, batch mean", (), (Row("tensor.any , tensor.any"),),
       impl=Impl(rule="correlation")),
    Op("mmd", D, "squared MMD with the polynomial kernel (x·y + c)^d over channels (NST)",
       (P("d", "int", 2, kw_only=True), P("c", "number", 0, kw_only=True)),
       (Row("map , map"), Row("matrix , matrix"), Row("tokens , tokens")), shapes="positions"),
    Op("ce", D, "cross-entropy of the student's logits against the labels (or the teacher's distribution)",
       (P("t", "positive", 1, kw_only=True),), (Row("logits , !labels"), Row("flat , !flat.p")), shapes="any",
       impl=Impl(rule="ce")),
    Op("cc", D, "correlation congruence as benchmarked (RepDistiller's CC): mean over consecutive samples i, i+1 "
                "of Σ |s − t|ᵢ · |s − t|ᵢ₊₁", (), (Row("flat , flat"),)),
    Op("gaussian_nll", D, "VID: −log N(t; s, σ²) per entry (constants dropped), averaged; σ² per channel is "
                          "learnable, softplus(θ) + 1e-5, starting at init_var",
       (P("init_var", "positive", 5),), (Row("map , map"), Row("flat , flat")), learnable=True, impl=MODULE),
    Op("crd", D, "CRD's contrastive (NCE) loss against a memory bank per network of all n_data training samples: k "
                 "negatives drawn uniformly, temperature t, banks updated with momentum; needs the sample index",
       (P("n_data", "int"), P("k", "int", 16384, kw_only=True), P("t", "positive", 0.07, kw_only=True),
        P("momentum", "fraction", 0.5, kw_only=True)),
       (Row("vector , vector"),), stateful=True, random=True, needs=("index",), impl=MODULE),
    Op("boundary", D, "activation-boundary loss (AB) on pre-activations: (s + m)² where s > −m and t ≤ 0, "
                      "(s − m)² where s ≤ m and t > 0; summed per sample, batch mean",
       (P("margin", "number", 1, kw_only=True),), (Row("map , map"),)),
    Op("partial_l2", D, "OFD's partial L2: (s − t)² where s > t or t > 0; summed per sample, batch mean", (),
       (Row("map , map"),)),
    Op("hcl", D, "ReviewKD's hierarchical context loss: MSE plus the MSEs of 4×4, 2×2 and 1×1 average poolings "
                 "smaller than the map, with halving weights, normalised", (), (Row("map , map"), Row("flat , flat"))),
    # weights: schedules over the epoch (training-free factors join them here)
    Op("warmup", W, "min(epoch / epochs, 1): a linear ramp to the full weight", (P("epochs", "positive"),)),
    Op("after", W, "0 before the given epoch, 1 from it on", (P("epoch", "number"),)),
    Op("before", W, "1 before the given epoch, 0 from it on (a pre-training stage)", (P("epoch", "number"),)),
    Op("linear", W, "from `start` to `end` linearly over `epochs`, then `end`",
       (P("start", "number"), P("end", "number"), P("epochs", "positive"))),
    # training-free weights of the teachers of a `teachers.` term (autokd_dsl.standalone.teachers); each sums to 1
    # over the K teachers
    Op("equal", W, "1/K for each of the K teachers (AVER)", per_teacher="fixed"),
    Op("confidence", W, "CA-MKD's confidence, per sample and batch: (1 − softmax over teachers of the teacher's "
                        "cross-entropy on the label) / (K − 1); lower cross-entropy weighs more",
       per_teacher="batch", needs=("labels",)),
    Op("agreement", W, "teacher–student agreement of the activations the distance compares, on the first training "
                       "batch: linear CKA (or cosine similarity), normalised to sum 1 over the teachers",
       (P("measure", "symbol", "cka", choices=("cka", "cosine")),), per_teacher="once"),
    Op("balance", W, "loss balancing on the first training batch: teacher k gets mean(L) / (K · L_k), so every "
                     "teacher's weighted loss starts equal", per_teacher="once"),
]

OPS: dict[str, Op] = {op.name: op for op in _OPS}


def names(role: str | None = None) -> list[str]:
    """The registered op names, optionally of one role."""
    return [n for n, op in OPS.items() if role is None or op.role == role]


def axis_of(op: Op, args: dict) -> str | None:
    value = args.get("axis")
    return value if isinstance(value, str) else None


def transform_kind(op: Op, kind: Kind, args: dict, teacher: Kind | None = None) -> Kind | None:
    """The kind a transform gives for ``kind``, or None when it does not take it.

    >>> transform_kind(OPS["softmax"], Kind("logits"), {})
    Kind(form='logits', prob='p')
    >>> transform_kind(OPS["softmax"], Kind("map"), {}) is None   # maps need an axis: c or hw
    True
    """
    axis = axis_of(op, args)
    for row in op.rows:
        if not matches(kind, row.takes) or (row.axes is not None and axis not in row.axes):
            continue
        return _output(row.gives, kind, teacher)
    return None


def _output(gives: str, kind: Kind, teacher: Kind | None) -> Kind:
    if gives == "teacher":
        return teacher if teacher is not None else kind
    if gives.startswith("="):
        if kind.unknown:
            return kind
        suffix = gives[1:]
        return Kind(kind.form, None if suffix == "raw" else (suffix[1:] if suffix else kind.prob))
    return parse_kind(gives)


def distance_accepts(op: Op, student: Kind, teacher: Kind) -> bool:
    """Does a distance take this pair of kinds?

    >>> distance_accepts(OPS["kl"], Kind("map"), Kind("map"))
    False
    >>> distance_accepts(OPS["ce"], Kind("logits"), Kind("labels"))
    True
    """
    for row in op.rows:
        s_pat, _, t_pat = (x.strip() for x in row.takes.partition(","))
        free = t_pat.startswith("!")
        if not (matches(student, s_pat) and matches(teacher, t_pat.lstrip("!"))):
            continue
        if free or student.unknown or teacher.unknown or student == teacher:
            return True
    return False
