"""Kinds: what a tapped or transformed activation is, as far as the language can tell.

A kind is a *form* (the layout of the tensor) and whether its values are probabilities along the op's axis.
Kinds make nonsense unwritable (`kl` of a raw feature map) and prune the search.

>>> str(parse_kind("logits.p")), parse_kind("map").describe()
('distribution', 'a feature map (N,C,H,W)')
"""

from __future__ import annotations

from dataclasses import dataclass

# form → how it reads in messages
FORMS = {
    "map": "a feature map (N,C,H,W)",
    "tokens": "tokens (N,L,D)",
    "matrix": "a per-sample matrix (N,A,B)",
    "vector": "a vector (N,D)",
    "logits": "logits (N,K)",
    "relation": "a batch relation (N,N)",
    "scalar": "a scalar",
    "labels": "labels (N,)",
    "any": "an activation of unknown kind",
}

# pattern groups usable in op signatures
GROUPS = {
    "feature": ("map", "tokens", "matrix", "vector", "logits"),
    "tensor": ("map", "tokens", "matrix", "vector", "logits", "relation"),
    "flat": ("vector", "logits"),
}


@dataclass(frozen=True)
class Kind:
    form: str
    prob: str | None = None  # None, "p" (probabilities) or "logp" (log-probabilities)

    def __str__(self) -> str:
        if self.form == "logits" and self.prob == "p":
            return "distribution"
        return self.form + (f".{self.prob}" if self.prob else "")

    def describe(self) -> str:
        if self.form == "logits" and self.prob == "p":
            return "a distribution (N,K)"
        base = FORMS[self.form]
        if self.prob == "p":
            return f"{base} of probabilities"
        if self.prob == "logp":
            return f"{base} of log-probabilities"
        return base

    @property
    def unknown(self) -> bool:
        return self.form == "any"

    def raw(self) -> Kind:
        return Kind(self.form)


ANY = Kind("any")


def parse_kind(text: str) -> Kind:
    """``"map"``, ``"logits.p"``, ``"distribution"`` → :class:`Kind`."""
    if text == "distribution":
        return Kind("logits", "p")
    form, _, prob = text.partition(".")
    if form not in FORMS:
        raise ValueError(f"unknown kind {text!r}")
    return Kind(form, prob or None)


def matches(kind: Kind, pattern: str) -> bool:
    """Does ``kind`` fit a signature pattern (`map`, `feature`, `tensor.p`, `*`)?

    >>> matches(Kind("map"), "feature"), matches(Kind("map"), "feature.p"), matches(Kind("logits", "p"), "*")
    (True, False, True)
    """
    if kind.unknown or pattern == "*":
        return True
    form, _, prob = pattern.partition(".")
    forms = GROUPS.get(form, (form,))
    if prob == "any":
        return kind.form in forms
    return kind.form in forms and (kind.prob or "") == prob


def describe_pattern(pattern: str) -> str:
    """How a signature pattern reads in messages and in `autokd-dsl ops`.

    >>> describe_pattern("flat.p"), describe_pattern("*")
    ('a vector or logits of probabilities', 'any activation')
    """
    form, _, prob = pattern.partition(".")
    if form == "*":
        return "any activation"
    if pattern == "logits.p":
        return "a distribution (N,K)"
    names = [FORMS[f].split(" (")[0] for f in GROUPS.get(form, (form,))]
    text = " or ".join(names)
    return text + {"p": " of probabilities", "logp": " of log-probabilities", "any": ""}.get(prob, "")


# Kinds of the architecture-neutral tap aliases, before real shapes are known (CNN convention; the compiler
# re-checks with the shapes of the actual models, where e.g. a ViT's stages are tokens).
def alias_kind(name: str) -> Kind:
    if name == "logits":
        return Kind("logits")
    if name == "labels":
        return Kind("labels")
    if name == "embedding":
        return Kind("vector")
    if name == "stem" or (name.startswith("stage") and name[5:].replace("_pre", "").isdigit()):
        return Kind("map")
    if name.startswith("block") and name[5:].isdigit():
        return Kind("tokens")
    return ANY
