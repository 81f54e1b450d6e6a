"""Check a parsed program: resolve names, bind arguments, infer kinds; report every error in the file.

The result is the *normalised* IR: op steps are :class:`~autokd_dsl.lang.ir.Call` nodes whose arguments are bound
by name in the op's declared order, so equal programs are equal however they were written.

>>> prog = check_text("distiller kd(t = 4):\\n    logits -> softmax(t) -> kl -> t^2\\n")
>>> prog.blocks[0].terms[0].steps[0]
Call(op='softmax', args=(Arg(name='t', value=Name(id='t')),), side=None)
>>> check_text("distiller bad:\\n    stage3 -> kl -> 1\\n")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
autokd_dsl.errors.KDError: <string>:2:15: error: `kl` does not take a feature map (N,C,H,W) with a feature map ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from ..errors import KDError, SourceText, Span, did_you_mean, raise_all
from . import ir, weights
from .kinds import Kind, alias_kind
from .ops import AXES, OPS, Op, distance_accepts, names, transform_kind
from .parse import parse, parse_source, read_source
from .printer import print_step

NONE = "none"  # the empty alternative of an optional transform slot in a space


def check_text(text: str, path: str = "<string>") -> ir.Program:
    """Parse and check `.kd` source; raise one :class:`KDError` (or a group) with every error found."""
    return check(parse(text, path), SourceText(path, text))


def check_file(path: str | Path) -> ir.Program:
    """Read, parse and check a `.kd` file (see :func:`~autokd_dsl.lang.parse.read_source` for what it accepts)."""
    source = read_source(path)
    return check(parse_source(source), source)


def check(program: ir.Program, source: SourceText | None = None) -> ir.Program:
    checker = _Checker()
    blocks = tuple(checker.block(b) for b in program.blocks)
    seen: dict[str, ir.Block] = {}
    for block in program.blocks:
        if block.name in seen:
            checker.error(f"`{block.name}` is defined twice", block.name_span,
                          hint=f"the first `{block.name}` is on line {seen[block.name].span.line}")
        seen.setdefault(block.name, block)
    if source is not None:
        for err in checker.errors:
            err.located(source)
    raise_all(sorted(checker.errors, key=lambda e: (e.line or 0, e.col or 0)))
    return dataclasses.replace(program, blocks=blocks)


# ---- kind inference, shared with the search's pruning ------------------------------------------------


def point_kind(point: ir.Point) -> Kind:
    """The kind of a tapped point before shapes are known (aliases only; module paths are unknown)."""
    if point.io == "in" or point.call is not None or "." in point.path:
        return Kind("any")
    return alias_kind(point.path)


def tap_kinds(tap: ir.Tap) -> tuple[Kind, Kind]:
    return point_kind(tap.student), point_kind(tap.teacher_point)


def literal_args(call: ir.Call) -> dict:
    """Argument values known without parameters: numbers and axis symbols."""
    out = {}
    for arg in call.args:
        if isinstance(arg.value, ir.Num):
            out[arg.name] = arg.value.value
        elif isinstance(arg.value, ir.Name) and arg.name == "axis":
            out[arg.name] = arg.value.id
    return out


def apply_transform(call: ir.Call, kinds: tuple[Kind, Kind]) -> tuple[Kind, Kind] | None:
    """Kinds after one transform on (student, teacher), or None when the op does not take them."""
    op, args = OPS[call.op], literal_args(call)
    s, t = kinds
    side = call.side or (op.side if op.side != "both" else None)
    new_s = transform_kind(op, s, args, teacher=t) if side in (None, "student") else s
    new_t = transform_kind(op, t, args) if side in (None, "teacher") else t
    if new_s is None or new_t is None:
        return None
    return new_s, new_t


def distance_fits(call: ir.Call, kinds: tuple[Kind, Kind]) -> bool:
    return distance_accepts(OPS[call.op], *kinds)


def idle_temperature(call: ir.Call, kinds: tuple[Kind, Kind]) -> bool:
    """Is ``call`` a `kl` or `js` with a written `t` on inputs that are already distributions (where `t` would
    change nothing)? The language rejects it there, and a space drops it (see :func:`drop_idle_temperature`).

    >>> from autokd_dsl.lang.parse import parse
    >>> call = parse("distiller d:\\n  x -> kl(t = 4) -> 1\\n").blocks[0].terms[0].distance
    >>> (idle_temperature(call, (Kind("logits", "p"), Kind("logits", "p"))),
    ...  idle_temperature(call, (Kind("logits"),) * 2))
    (True, False)
    """
    return call.op in ("kl", "js") and call.arg("t") is not None and kinds[0].prob in ("p", "logp")


def drop_idle_temperature(call: ir.Call) -> ir.Call:
    """``call`` without its `t` argument (for a `kl` / `js` on distributions)."""
    return dataclasses.replace(call, args=tuple(a for a in call.args if a.name != "t"))


def constant_value(expr: ir.Expr) -> int | float | None:
    """The value of a number expression without names, or None (names, choices, no finite real value).

    >>> constant_value(ir.Neg(ir.Num(2))), constant_value(ir.BinOp("^", ir.Num(2), ir.Num(3)))
    (-2, 8)
    """
    try:
        return weights.value_or_none(expr, {})
    except KDError:
        return None


# ---- the checker ------------------------------------------------------------------------------------


class _Checker:
    def __init__(self) -> None:
        self.errors: list[KDError] = []

    def error(self, message: str, span, hint: str | None = None) -> None:
        self.errors.append(KDError(message, span=span, hint=hint))

    # blocks and parameters
    def block(self, block: ir.Block) -> ir.Block:
        self.in_space = block.kind == "space"
        self.params = {}
        for p in block.params:
            if p.name in self.params:
                self.error(f"parameter `{p.name}` is given twice", p.span)
            self.params[p.name] = p
            self.constant(p.value, f"parameter `{p.name}`")
        self.values = self.param_values(block.params)
        if not block.terms:
            self.error(f"{block.kind} `{block.name}` has no terms", block.name_span,
                       hint="add a term such as `logits -> softmax(4) -> kl -> 16`")
        labels: dict[str, ir.Term] = {}
        terms = []
        for term in block.terms:
            if term.label and term.label in labels:
                at = term.span and Span(term.span.line, term.span.col, term.span.line, term.span.col + len(term.label))
                self.error(f"term label `{term.label}` is used twice in `{block.name}`", at,
                           hint=f"the first `{term.label}` is on line {labels[term.label].span.line}")
            labels.setdefault(term.label or "", term)
            terms.append(self.term(term))
        return dataclasses.replace(block, terms=tuple(terms))

    def param_values(self, params) -> dict:
        """The parameters' values (those that are plain numbers; a space's alternatives are folded one by one)."""
        values = {}
        for p in params:
            options = p.value.options if isinstance(p.value, ir.Choice) else (p.value,)
            try:
                folded = [weights.value_or_none(o, {}) for o in options]
            except KDError as err:
                self.errors.append(err)
                continue
            if len(folded) == 1 and folded[0] is not None:
                values[p.name] = folded[0]
        return values

    def constant(self, expr: ir.Expr, what: str) -> None:
        for node in ir.walk(expr):
            if isinstance(node, ir.Choice):
                self.choice_allowed(node)
            elif not isinstance(node, (ir.Num, ir.BinOp, ir.Neg, ir.Choice)):
                self.error(f"{what} must be a number", getattr(node, "span", None))
                return

    def choice_allowed(self, node: ir.Choice) -> bool:
        if not self.in_space:
            self.error("alternatives (`|`) are only allowed in a `space`", node.span,
                       hint="pick one alternative, or write `space NAME:` to search over them")
        return self.in_space

    # terms
    def term(self, term: ir.Term) -> ir.Term:
        before = len(self.errors)
        for slot in term.taps:
            self.tap_slot(slot)
        self.each_teacher = self.teacher_mode(term)
        if self.is_role(term.steps[-1], "distance"):
            last = term.steps[-1]
            self.error("the term has no weight", last.span,
                       hint=f"a term ends with a weight after its distance, e.g. `-> {print_step(last)} -> 1`")
            return term
        if len(term.steps) < 2:
            last = term.steps[-1]
            self.error("a term needs a distance and then a weight", getattr(last, "span", term.span),
                       hint="end the term like `-> mse -> 1`")
            return term
        steps = [self.step(s, "transform") for s in term.transforms]
        steps.append(self.step(term.distance, "distance"))
        steps.append(self.weight(term.weight))
        checked = dataclasses.replace(term, steps=tuple(steps))
        # kinds only for a term without other errors: a misplaced or misspelled op would report twice
        if not self.in_space and len(self.errors) == before and not any(isinstance(s, ir.Choice) for s in steps):
            self.kinds(checked)
        return checked

    def is_role(self, expr: ir.Expr, role: str) -> bool:
        """Is ``expr`` an op of ``role`` (or a choice of them): `kl`, `mse(…)`, `(l1 | mse)`?"""
        if isinstance(expr, ir.Choice):
            return all(self.is_role(o, role) for o in expr.options)
        name = expr.id if isinstance(expr, ir.Name) and expr.id not in self.params else getattr(expr, "op", None)
        return name in OPS and OPS[name].role == role

    def tap_slot(self, slot: ir.TapSlot) -> None:
        if isinstance(slot, ir.TapChoice):
            if not self.in_space:
                self.error("alternatives (`|`) are only allowed in a `space`", slot.span,
                           hint="pick one tap, or write `space NAME:` to search over them")
            for option in slot.options:
                for tap in ir.option_taps(option):
                    self.tap(tap)
        else:
            self.tap(slot)

    def teacher_mode(self, term: ir.Term) -> bool:
        """Does the term tap each teacher (`teachers.x`)? Then every tap must: one term, one set of teachers."""
        taps = [t for t in ir.term_taps(term) if not t.teacher_point.is_labels]
        each = [t for t in taps if t.each_teacher]
        if each and len(each) != len(taps):
            other = next(t for t in taps if not t.each_teacher)
            self.error("a term taps either each teacher (`teachers.`) or one teacher", other.span,
                       hint=f"write `{_tap_text(other).split(' ~ ')[0]} ~ teachers.{other.teacher_point.path}`, "
                            "or move this tap to a term of its own")
        return bool(each)

    def tap(self, tap: ir.Tap) -> None:
        s, t = tap.student, tap.teacher
        for point in (s, t):
            if point is not None and point.call is not None and point.call < 1:
                self.error("call numbers count from 1", point.span, hint="write `@1` for the first call")
            if point is not None and point.teacher_number == 0:
                self.error("teachers count from 1", point.span,
                           hint=f"write `teacher1.{point.path}` for the first teacher given")
            if point is not None and point.path == "labels" and point.side:
                self.error("`labels` belong to the batch, not to a network", point.span,
                           hint="write `labels` without `student.` or `teacher.`")
        if t is None:
            if s.is_labels:
                self.error("`labels` can only be the right side of a pair", s.span, hint="write `logits ~ labels`")
            elif s.side:
                other = "teacher" if s.side == "student" else "student"
                if s.is_teacher and s.side != "teacher":
                    hint = f"write `{s.path} ~ {s.side}.{s.path}` (the student's `{s.path}` with the teacher's)"
                else:
                    hint = f"write `student.A ~ teacher.B`, or drop `{s.side}.` to tap the same point on both"
                self.error(f"`{s.side}.{s.path}` needs a {other} point to pair with", s.span, hint=hint)
            return
        if s.is_teacher or s.is_labels:
            self.error("the left side of `~` is the student's point", s.span,
                       hint="write `student.A ~ teacher.B` (or `logits ~ labels`)")
        if t.side == "student":
            self.error("the right side of `~` is the teacher's point", t.span,
                       hint="write `student.A ~ teacher.B`")

    def step(self, expr: ir.Expr, role: str) -> ir.Expr:
        if isinstance(expr, ir.Choice):
            if not self.choice_allowed(expr):
                return expr
            return dataclasses.replace(expr, options=tuple(self.option(o, role) for o in expr.options))
        return self.op_call(expr, role)

    def option(self, expr: ir.Expr, role: str) -> ir.Expr:
        if role == "transform" and isinstance(expr, ir.Name) and expr.id == NONE:
            return expr
        return self.op_call(expr, role)

    def op_call(self, expr: ir.Expr, role: str) -> ir.Expr:
        if isinstance(expr, ir.Name):
            expr = ir.Call(expr.id, (), None, span=expr.span)
        if not isinstance(expr, ir.Call):
            self.error(f"expected {'a transform' if role == 'transform' else 'a distance'} here, not a number or "
                       "an expression", getattr(expr, "span", None),
                       hint="the weight comes last: taps -> transforms -> distance -> weight")
            return expr
        op = OPS.get(expr.op)
        if op is None:
            if expr.op == NONE:
                hint = "`none` is an alternative of an optional slot in a space: `(none | pool(2))`"
            else:
                hint = did_you_mean(expr.op, names(role)) or did_you_mean(expr.op, OPS)
                hint = hint or f"run `autokd-dsl ops` to list the {role}s"
            self.error(f"unknown {role} `{expr.op}`", expr.span, hint=hint)
            return expr
        if op.role != role:
            self.error(self._role_message(op, role), expr.span,
                       hint="a term is taps -> transforms -> distance -> weight")
            return expr
        if expr.side and op.role != "transform":
            self.error(f"`{op.name}` is a {op.role}; only transforms can be one-sided", expr.span,
                       hint=f"write `{op.name}` without `{expr.side}.`")
        elif expr.side and op.side != "both" and expr.side != op.side:
            self.error(f"`{op.name}` is a {op.side}-side op", expr.span,
                       hint=f"write `{op.name}` or `{op.side}.{op.name}`")
        elif expr.side and expr.side == op.side:  # `student.adapt` is `adapt`: one program, one key
            expr = dataclasses.replace(expr, side=None)
        return self.bind(expr, op)

    def _role_message(self, op: Op, role: str) -> str:
        where = {"transform": "before the distance", "distance": "just before the weight",
                 "weight": "in the weight"}[role]
        return f"`{op.name}` is a {op.role}; {where} a {role} is expected"

    # arguments
    def bind(self, call: ir.Call, op: Op) -> ir.Call:
        bound: dict[str, ir.Arg] = {}
        for arg in call.args:
            param = self.target(call, op, arg, bound)
            if param is None:
                continue
            if param.name in bound:
                self.error(f"`{op.name}` got `{param.name}` twice", arg.span)
                continue
            self.arg_value(op, param, arg.value)
            bound[param.name] = dataclasses.replace(arg, name=param.name)
        for param in op.params:
            if param.required and param.name not in bound:
                self.error(f"`{op.name}` needs its `{param.name}` argument", call.span,
                           hint=f"write `{op.name}({', '.join(p.name for p in op.params if p.required)})`")
        order = [p.name for p in op.params]
        args = tuple(sorted(bound.values(), key=lambda a: order.index(a.name)))
        return dataclasses.replace(call, args=args)

    def target(self, call, op: Op, arg: ir.Arg, bound: dict):
        if arg.name is not None:
            param = op.param(arg.name)
            if param is None:
                hint = did_you_mean(arg.name, [p.name for p in op.params])
                takes = ", ".join(p.name for p in op.params) or "no arguments"
                self.error(f"`{op.name}` has no argument `{arg.name}`", arg.span, hint=hint or f"it takes: {takes}")
            return param
        value = arg.value
        is_symbol = self.is_symbol(value)
        free = [p for p in op.params if p.name not in bound and not p.kw_only]
        for param in free:  # a symbol (an axis) binds to a parameter with choices, anything else to a number
            if bool(param.choices) == is_symbol:
                return param
        if free:  # the wrong type for every free parameter: the value check of the next one says what it takes
            return free[0]
        positional = [p.name for p in op.params if not p.kw_only]
        if not op.params:
            self.error(f"`{op.name}` takes no arguments", arg.span)
        else:
            extra = [p.name for p in op.params if p.kw_only]
            hint = f"keyword arguments: {', '.join(f'{n} = …' for n in extra)}" if extra else None
            self.error(f"too many arguments for `{op.name}`: it takes {len(positional)} positional "
                       f"({', '.join(positional) or 'none'})", arg.span, hint=hint)
        return None

    def is_symbol(self, value: ir.Expr) -> bool:
        """A word that is no parameter (an axis such as `hw`), or alternatives of such words (`c | hw`)."""
        if isinstance(value, ir.Choice):
            return all(self.is_symbol(o) for o in value.options)
        return isinstance(value, ir.Name) and value.id not in self.params

    def arg_value(self, op: Op, param, value: ir.Expr) -> None:
        if isinstance(value, ir.Choice):
            if self.choice_allowed(value):
                for option in value.options:
                    self.arg_value(op, param, option)
            return
        if param.choices:
            if not (isinstance(value, ir.Name) and value.id in param.choices):
                word = value.id if isinstance(value, ir.Name) else ""
                self.error(f"`{op.name}`'s `{param.name}` is one of {', '.join(param.choices)}",
                           getattr(value, "span", None), hint=did_you_mean(word, [*param.choices, *self.params]))
            return
        if self.number_expr(value, f"`{op.name}`'s `{param.name}`"):
            self.number_range(op, param, value)

    def number_range(self, op: Op, param, value: ir.Expr) -> None:
        try:
            v = weights.value_or_none(value, self.values)
        except KDError as err:
            self.errors.append(err)
            return
        if v is None:  # depends on a search's alternatives
            return
        if param.type == "positive" and not v > 0:
            shown = f" (it is {v})" if not isinstance(value, ir.Num) else ""
            what = "a temperature" if param.name == "t" else "positive"
            self.error(f"`{op.name}`'s `{param.name}` must be above 0 ({what}){shown}", value.span)
        elif param.type == "int" and (not isinstance(v, int) or v < 1):
            self.error(f"`{op.name}`'s `{param.name}` must be a positive whole number", value.span)
        elif param.type == "fraction" and not 0 <= v < 1:
            self.error(f"`{op.name}`'s `{param.name}` must be at least 0 and below 1", value.span)

    def number_expr(self, expr: ir.Expr, what: str) -> bool:
        """Report names and calls in a number; True when there was nothing to report."""
        count = len(self.errors)
        for node in ir.walk(expr):
            if isinstance(node, ir.Name) and node.id in AXES and node.id not in self.params:
                self.error(f"{what} must be a number, not the axis `{node.id}`", node.span)
            elif isinstance(node, ir.Name) and node.id not in self.params:
                hint = did_you_mean(node.id, self.params) or "parameters are declared in the block header"
                self.error(f"unknown name `{node.id}` in {what}", node.span, hint=hint)
            elif isinstance(node, ir.Call):
                self.error(f"{what} must be a number or a parameter, not a call", node.span)
                return False
            elif isinstance(node, ir.Choice) and node is not expr:
                self.choice_allowed(node)
        return len(self.errors) == count

    # weights
    def weight(self, expr: ir.Expr) -> ir.Expr:
        if isinstance(expr, ir.Choice):
            if self.choice_allowed(expr):
                return dataclasses.replace(expr, options=tuple(self.weight(o) for o in expr.options))
            return expr
        count = len(self.errors)
        checked = self.weight_expr(expr)
        if len(self.errors) == count:
            try:
                weights.check_weight(checked, self.values)
            except KDError as err:
                self.errors.append(err)
        return checked

    def weight_expr(self, expr: ir.Expr) -> ir.Expr:
        if isinstance(expr, ir.Name) and expr.id not in self.params and expr.id in OPS \
                and OPS[expr.id].role == "weight":  # `equal`, `balance`: a weight function without arguments
            expr = ir.Call(expr.id, (), None, span=expr.span)
        if isinstance(expr, ir.Call):
            op = OPS.get(expr.op)
            if op is not None and op.per_teacher and not getattr(self, "each_teacher", False):
                self.error(f"`{op.name}` weighs the teachers of a term that taps each teacher", expr.span,
                           hint="tap every teacher with `teachers.`, e.g. `logits ~ teachers.logits -> softmax(4) "
                                f"-> kl -> 16 * {op.name}`")
                return expr
            if expr.side:
                self.error(f"a weight cannot be one-sided (`{expr.side}.{expr.op}`)", expr.span,
                           hint=f"write `{expr.op}` without `{expr.side}.`")
                return expr
            if op is None or op.role != "weight":
                if op is None:
                    hint = did_you_mean(expr.op, names("weight")) or f"weights: {', '.join(names('weight'))}"
                    self.error(f"unknown weight function `{expr.op}`", expr.span, hint=hint)
                else:
                    self.error(self._role_message(op, "weight"), expr.span,
                               hint="the weight ends the term: a number, parameters, or warmup(…)")
                return expr
            return self.bind(expr, op)
        if isinstance(expr, ir.Name):
            if expr.id == NONE and expr.id not in self.params:
                self.error("`none` leaves out an optional transform; a weight must be a number", expr.span,
                           hint="write `0` to switch the term off, or another number")
            elif expr.id not in self.params:
                hint = did_you_mean(expr.id, list(self.params) + names())
                if expr.id in OPS:
                    self.error(self._role_message(OPS[expr.id], "weight"), expr.span,
                               hint="a term ends with a weight, e.g. `-> 1`")
                else:
                    self.error(f"unknown name `{expr.id}` in a weight", expr.span,
                               hint=hint or "parameters are declared in the block header")
            return expr
        if isinstance(expr, ir.BinOp):
            return dataclasses.replace(expr, left=self.weight_expr(expr.left), right=self.weight_expr(expr.right))
        if isinstance(expr, ir.Neg):
            return dataclasses.replace(expr, operand=self.weight_expr(expr.operand))
        if isinstance(expr, ir.Choice) and self.choice_allowed(expr):
            return dataclasses.replace(expr, options=tuple(self.weight_expr(o) for o in expr.options))
        return expr

    # kinds (distillers; a space's kinds are checked per candidate by the search)
    def kinds(self, term: ir.Term) -> None:
        for slot in term.taps:
            if isinstance(slot, ir.Tap):
                self.tap_pipeline(slot, term)

    def tap_pipeline(self, tap: ir.Tap, term: ir.Term) -> None:
        kinds = tap_kinds(tap)
        where = _tap_text(tap)
        for call in term.transforms:
            if not isinstance(call, ir.Call) or call.op not in OPS:
                return
            after = apply_transform(call, kinds)
            if after is None:
                self.error(_kind_message(call, kinds, where), call.span, hint=_kind_hint(call, kinds))
                return
            kinds = after
        dist = term.distance
        if isinstance(dist, ir.Call) and dist.op in OPS and OPS[dist.op].role == "distance":
            if not distance_fits(dist, kinds):
                self.error(f"`{dist.op}` does not take {kinds[0].describe()} with {kinds[1].describe()} "
                           f"(from `{where}`)", dist.span, hint=distance_hint(dist, kinds))
            elif idle_temperature(dist, kinds):
                arg = next(a for a in dist.args if a.name == "t")
                self.error(f"`t` of `{dist.op}` has no effect on {kinds[0].describe()} (from `{where}`): the "
                           f"temperature applies only to logits", arg.span or dist.span,
                           hint="give the temperature to the softmax before it (`softmax(4)` divides the logits "
                                "by 4), or drop `t =`")


def _tap_text(tap: ir.Tap) -> str:
    from .printer import print_tap

    return print_tap(tap)


def _kind_message(call: ir.Call, kinds: tuple[Kind, Kind], where: str) -> str:
    s, t = kinds
    got = s.describe() if s == t else f"{s.describe()} (student) and {t.describe()} (teacher)"
    return f"`{call.op}` does not take {got} (from `{where}`)"


def _kind_hint(call: ir.Call, kinds: tuple[Kind, Kind]) -> str:
    op = OPS[call.op]
    if op.param("axis") is not None:
        for row in op.rows:
            if row.axes and transform_kind(op, kinds[0], {"axis": _first_axis(row.axes)}) is not None:
                axes = [a for a in row.axes if a]
                return f"give an axis for this kind: {' or '.join(f'{call.op}({a})' for a in axes)}"
    return f"`{call.op}` takes {op.accepts()}"


def _first_axis(axes: Iterable[str | None]) -> str | None:
    return next((a for a in axes if a), None)


def distance_hint(call: ir.Call, kinds: tuple[Kind, Kind]) -> str:
    if call.op in ("kl", "js") and kinds[0].form in ("map", "tokens"):
        a, b = ("c", "hw") if kinds[0].form == "map" else ("d", "l")
        return f"`{call.op}` compares distributions: add `softmax({a})` or `softmax({b})` before it"
    if kinds[0] != kinds[1] and not kinds[0].unknown and not kinds[1].unknown:
        return "both sides must have the same kind; a student-side `adapt` can map one onto the other"
    return f"`{call.op}` takes {OPS[call.op].accepts()}"
