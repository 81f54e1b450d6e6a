"""What a candidate computes on the networks at hand: shape fit, and its values on fixed random activations.

Two candidates of a space may be written differently and compute the same function on a given teacher and
student: `pool(4)` on a map that is already 4×4 is `none`, `patches(4)` followed by an element-wise distance
only reorders the entries, and so on. :class:`CompilesOn` compiles a one-term distiller on the two networks
(does it fit their shapes?) and evaluates it, in float64, on fixed random activations of the tapped layers
(:meth:`CompilesOn.values`). :class:`autokd_dsl.search.space.SearchSpace` keys a candidate by these values
(rounded, times each term's weight), so two candidates with one key compute the same loss, and the store never
holds two rows for one function.
"""

from __future__ import annotations

import torch

from ..errors import KDError
from ..lang import ir
from ..lang.printer import print_block
from ..standalone.attach import TapCapture

PROBE_BATCHES = 2
PROBE_SIZE = 4
PROBE_SEED = 20231


class CompilesOn:
    """Shape check for :class:`SearchSpace`: does a distiller compile on this teacher and a fresh student?

    Also the function a one-term distiller computes (:meth:`values`). ``teacher`` may be a list of teachers
    (``teacher_name`` then a list too): a distiller compiles against all of them.
    """

    def __init__(self, teacher, teacher_name: str | list[str], student_name: str, bundle):
        from ..models import create_model

        self.teacher, self.teacher_name, self.student_name = teacher, teacher_name, student_name
        self.teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        self.input_size = tuple(bundle.train.images.shape[1:])
        self.num_classes = bundle.num_classes
        self.device = next(self.teachers[0].parameters()).device
        torch.manual_seed(PROBE_SEED)
        self.student = create_model(student_name, num_classes=bundle.num_classes, in_chans=self.input_size[0])
        self.student.to(self.device)
        generator = torch.Generator().manual_seed(PROBE_SEED)
        n = PROBE_BATCHES * PROBE_SIZE
        self._x = torch.randn((n, *self.input_size), generator=generator).to(self.device)
        self._labels = torch.randint(0, self.num_classes, (n,), generator=generator).to(self.device)
        self._acts: dict[tuple[str, str], torch.Tensor] = {}
        self._values: dict[str, tuple[float, ...] | None] = {}

    def compile(self, block: ir.Block):
        from ..compiler.build import compile_distiller

        return compile_distiller(block, self.teacher, self.student, self.input_size, teacher_name=self.teacher_name,
                                 student_name=self.student_name)

    def __call__(self, block: ir.Block) -> bool:
        try:
            self.compile(block)
        except KDError:
            return False
        return True

    def values(self, block: ir.Block) -> tuple[float, ...] | None:
        """The distiller's total on each of two fixed random batches (float64; None if it does not compile).

        The activations come from the teacher and a seeded fresh student on seeded random inputs; learnable
        modules start from a seeded initialisation and random ops (dropout, masks) draw from a seeded generator,
        so the values depend on the distiller alone.
        """
        text = print_block(block)
        if text in self._values:
            return self._values[text]
        torch.manual_seed(PROBE_SEED)
        try:
            loss = self.compile(block)
        except KDError:
            self._values[text] = None
            return None
        loss = loss.double().train()
        s_acts = self._activations("s", self.student, dict(loss.student_taps))
        t_acts = {}
        for k, (net, taps) in enumerate(zip(self.teachers, loss.teachers_taps), 1):
            t_acts |= self._activations(f"t{k}", net, dict(taps))
        out = []
        with torch.no_grad():
            for b in range(PROBE_BATCHES):
                rows = slice(b * PROBE_SIZE, (b + 1) * PROBE_SIZE)
                kwargs = {name: s_acts[name][rows] for name in loss.student_taps}
                kwargs |= {name: t_acts[name][rows] for name in loss.teacher_taps}
                if getattr(loss, "needs_index", False):
                    kwargs["index"] = torch.arange(PROBE_SIZE, device=self.device) + b * PROBE_SIZE
                torch.manual_seed(PROBE_SEED + 1 + b)
                out.append(float(loss(**kwargs, labels=self._labels[rows], epoch=1)["total"]))
        self._values[text] = tuple(out)
        return self._values[text]

    def _activations(self, side: str, net, taps: dict[str, str]) -> dict[str, torch.Tensor]:
        missing = {spec: spec for spec in taps.values() if (side, spec) not in self._acts}
        if missing:
            was_training = net.training
            net.eval()
            capture = TapCapture(net, missing, detach=True)
            try:
                with torch.no_grad():
                    net(self._x)
            finally:
                capture.remove()
                net.train(was_training)
            for spec in missing:
                self._acts[(side, spec)] = capture.values[spec].double()
        return {name: self._acts[(side, spec)] for name, spec in taps.items()}
