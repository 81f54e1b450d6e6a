"""Fuzz the `.kd` front end: every input must check or raise a KDError, nothing else.

Inputs come from four sources, drawn deterministically from ``--seed``:

- token soup from the grammar's own terminals, the op registry, tap aliases and layout (newlines, indents,
  continuation arrows, comments), often after a block header so the checker is reached;
- mutations of the library, example and round-trip fixture files: characters and tokens deleted, inserted,
  duplicated and swapped, and truncation;
- random bytes, decoded as UTF-8 (with replacement) or Latin-1;
- random unicode text.

Texts that check are also printed and re-checked: the result must equal the first program (same content key).
Prints a summary and the first few failures with tracebacks; exits 1 if any input raised something other than
a KDError or failed the round trip.

    python bench/fuzz_language.py --n 100000 --seed 0
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import re
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autokd_dsl.errors import KDError
from autokd_dsl.lang.check import check_text
from autokd_dsl.lang.ops import OPS, names
from autokd_dsl.lang.parse import _parser
from autokd_dsl.lang.printer import print_program

CHUNK = 500
SOURCES = [p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("library/*.kd")) + sorted(ROOT.glob("examples/*.kd"))
           + sorted(ROOT.glob("tests/fixtures/roundtrip/*.kd"))]
TOKEN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|->|#[^\n]*|\n[ \t]*|[ \t]+|.", re.S)

# ---- vocabulary --------------------------------------------------------------------------------------

WORDS = names() + ["none", "labels", "logits", "embedding", "stem", "stage1", "stage2", "stage3", "stage3_pre",
                   "block4", "student", "teacher", "student.adapt", "teacher.softmax", "student.layer1.0",
                   "teacher.layer3", "layer3.0.conv1", "t", "alpha", "beta", "c", "hw", "chw", "n", "k", "l", "d",
                   "batch", "all", "distiller", "space", "in", "out", "kd", "x"]
LAYOUT = [" ", "", "", "\n", "\n    ", "\n      -> ", "\n      | ", "\t", "\r\n", "\f", "  # note\n    ", "\n\n",
          "\n# comment\n", "\n    # lead\n    "]
HEADERS = ["", "", "distiller kd:\n    ", "space s(t = 1 | 4):\n    ", "distiller d(t = 4, alpha = 0.9):\n    ",
           "# header\ndistiller kd:\n    ", "space s:\n    kd: "]
UNICODE = "é€→∑πλ\u00a0\u2028\u200b\ufeff\U0001f600\x00\x07\x1b\x85\ud7ff"


def _regex_sample(name: str, rng: random.Random) -> str:
    """A text the grammar's regex terminal ``name`` matches (hand-made: the stdlib has no regex sampler)."""
    ident = rng.choice(WORDS + ["a", "_x1", "Q"]).split(".")[0]
    samples = {
        "LABEL": lambda: ident + rng.choice(["", " ", "\t"]) + ":",
        "PATH": lambda: ".".join([ident] + [rng.choice(["0", "1", "12", "conv1", "bn2", "adapt"])
                                            for _ in range(rng.randint(1, 3))]),
        "NAME": lambda: ident,
        "NUMBER": lambda: rng.choice(["0", "1", "4", "0.5", ".5", "1.", "1e3", "2.5e-07", "1e999", "9" * 30,
                                      "007", "1E+2"]),
        "INT": lambda: str(rng.choice([0, 1, 2, 10, 99999999999])),
        "_ARROW": lambda: rng.choice(["->", " ->", "\n      ->", "\n  # c\n  ->", "\r\n ->"]),
        "_VBAR": lambda: rng.choice(["|", " |", "\n      |", "\n\n |"]),
        "COMMENT": lambda: "#" + rng.choice(["", " note", " # twice", " é", " -> x"]),
        "_NL": lambda: rng.choice(["\n", "\n    ", "\r\n", "\n\n", "\n  # c\n"]),
    }
    return samples.get(name, samples["NAME"])()


def _grammar_tokens() -> tuple[list[str], list[str]]:
    """The grammar's literal terminals and the names of its pattern terminals."""
    literal, pattern = [], []
    for term in _parser().terminals:
        if term.pattern.type == "str":
            literal.append(term.pattern.value)
        elif not term.name.startswith("__"):
            pattern.append(term.name)
    return literal, pattern


LITERAL, PATTERN = _grammar_tokens()


def _token(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(LITERAL)
    if roll < 0.5:
        return _regex_sample(rng.choice(PATTERN), rng)
    if roll < 0.85:
        return rng.choice(WORDS)
    if roll < 0.95:
        return rng.choice(LAYOUT)
    return rng.choice(UNICODE)


# ---- generators ---------------------------------------------------------------------------------------


def token_soup(rng: random.Random) -> str:
    parts = [rng.choice(HEADERS)]
    for _ in range(rng.randint(0, 40)):
        parts.append(_token(rng))
        parts.append(rng.choice(LAYOUT[:4]))
    return "".join(parts)


def term_soup(rng: random.Random) -> str:
    """Arrow-separated words after a header: mostly parses, so it exercises the checker."""
    lines = []
    for _ in range(rng.randint(1, 4)):
        label = rng.choice(["", "", "a: ", "soft: ", "a: "])
        taps = rng.choice(["logits", "stage3", "stage1, stage2", "embedding", "logits ~ labels", "labels",
                           "student.layer1 ~ teacher.layer2", "stage3 | logits", "student.x", "x@0", "x:in@2"])
        steps = []
        for _ in range(rng.randint(1, 5)):
            word = rng.choice(names() + WORDS[-20:])
            op = OPS.get(word)
            if op is not None and op.params and rng.random() < 0.6:
                args = [rng.choice(["4", "0.5", "c", "hw", "t", "t = 2", "x", "2.5", "-1", "1 | 2", "size = 2"])
                        for _ in range(rng.randint(0, 2))]
                word = f"{word}({', '.join(args)})"
            elif rng.random() < 0.3:
                word = rng.choice(["1", "alpha * t^2", "1 - alpha", "(0.1 | 1)", "(none | pool(2))", "warmup(20)"])
            steps.append(word)
        lines.append(label + " -> ".join([taps] + steps))
    return rng.choice(HEADERS[2:]) + "\n    ".join(lines) + rng.choice(["\n", "", "\n\n"])


def mutation(rng: random.Random) -> str:
    text = rng.choice(SOURCES)
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.5:
            text = _mutate_chars(text, rng)
        else:
            text = "".join(_mutate_tokens(TOKEN_RE.findall(text), rng))
    return text


def _mutate_chars(text: str, rng: random.Random) -> str:
    at = rng.randint(0, len(text))
    end = min(len(text), at + rng.randint(1, 12))
    action = rng.choice(["delete", "insert", "duplicate", "swap", "truncate"])
    if action == "delete":
        return text[:at] + text[end:]
    if action == "insert":
        return text[:at] + rng.choice([_token(rng), rng.choice(UNICODE), rng.choice("()|,:~@=-^*/#\n\t ")]) + text[at:]
    if action == "duplicate":
        return text[:end] + text[at:end] + text[end:]
    if action == "swap" and end - at >= 2:
        return text[:at] + text[at + 1] + text[at] + text[at + 2:]
    return text[:at]


def _mutate_tokens(tokens: list[str], rng: random.Random) -> list[str]:
    if not tokens:
        return [_token(rng)]
    i, j = rng.randrange(len(tokens)), rng.randrange(len(tokens))
    action = rng.choice(["delete", "insert", "duplicate", "swap", "replace"])
    if action == "delete":
        del tokens[i]
    elif action == "insert":
        tokens.insert(i, _token(rng))
    elif action == "duplicate":
        tokens[i:i] = tokens[i:i + rng.randint(1, 6)]
    elif action == "swap":
        tokens[i], tokens[j] = tokens[j], tokens[i]
    else:
        tokens[i] = rng.choice(WORDS + LITERAL)
    return tokens


def random_bytes(rng: random.Random) -> str:
    raw = rng.randbytes(rng.randint(0, 300))
    return raw.decode("utf-8", "replace") if rng.random() < 0.5 else raw.decode("latin-1")


def random_unicode(rng: random.Random) -> str:
    pool = [chr(rng.randint(0, 0x2FFF)) for _ in range(20)] + list(UNICODE) + LITERAL
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, 120)))


GENERATORS = [("token soup", token_soup, 0.3), ("term soup", term_soup, 0.2), ("mutation", mutation, 0.35),
              ("random bytes", random_bytes, 0.08), ("random unicode", random_unicode, 0.07)]


def generate(rng: random.Random) -> tuple[str, str]:
    roll, acc = rng.random(), 0.0
    for name, make, share in GENERATORS:
        acc += share
        if roll < acc:
            return name, make(rng)
    return GENERATORS[-1][0], GENERATORS[-1][1](rng)


# ---- running --------------------------------------------------------------------------------------------


def run_one(text: str) -> tuple[str, str | None]:
    """("ok" | "kderror" | "other" | "roundtrip", traceback or None)."""
    try:
        program = check_text(text, "fuzz.kd")
    except KDError as err:
        try:
            err.render()
        except Exception:  # noqa: BLE001 - a failing render is a bug like any other
            return "other", traceback.format_exc()
        return "kderror", None
    except Exception:  # noqa: BLE001 - the point of the fuzzer
        return "other", traceback.format_exc()
    try:
        printed = print_program(program)
        again = check_text(printed, "printed.kd")
    except Exception:  # noqa: BLE001
        return "roundtrip", traceback.format_exc()
    if again != program or again.key != program.key or print_program(again) != printed:
        return "roundtrip", f"printed text checks to a different program:\n{printed}"
    return "ok", None


def run_chunk(job: tuple[int, int, int]) -> dict:
    seed, chunk, count = job
    rng = random.Random(seed * 1_000_003 + chunk)
    outcomes, sources, failures, slowest = Counter(), Counter(), [], (0.0, "")
    for _ in range(count):
        source, text = generate(rng)
        start = time.perf_counter()
        outcome, detail = run_one(text)
        took = time.perf_counter() - start
        if took > slowest[0]:
            slowest = (took, text)
        outcomes[outcome] += 1
        sources[source] += 1
        if detail is not None and len(failures) < 5:
            failures.append((outcome, source, text, detail))
    return {"outcomes": outcomes, "sources": sources, "failures": failures, "slowest": slowest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes (1: run in this process)")
    parser.add_argument("--show", type=int, default=5, help="failures to print with their tracebacks")
    args = parser.parse_args(argv)

    jobs = [(args.seed, i, min(CHUNK, args.n - i * CHUNK)) for i in range((args.n + CHUNK - 1) // CHUNK)]
    start = time.perf_counter()
    if args.workers > 1:
        with multiprocessing.Pool(args.workers) as pool:
            results = pool.map(run_chunk, jobs, chunksize=1)
    else:
        results = [run_chunk(job) for job in jobs]
    elapsed = time.perf_counter() - start

    outcomes, sources, failures = Counter(), Counter(), []
    for r in results:
        outcomes.update(r["outcomes"])
        sources.update(r["sources"])
        failures.extend(r["failures"])
    slow_time, slow_text = max((r["slowest"] for r in results), key=lambda s: s[0])

    total = sum(outcomes.values())
    print(f"fuzz_language: {total} inputs, seed {args.seed}, {args.workers} worker(s), {elapsed:.1f} s "
          f"({total / elapsed:.0f} inputs/s)")
    print("  sources:   " + ", ".join(f"{name} {sources[name]}" for name, _, _ in GENERATORS))
    labels = [("ok", "checked (and printed back to the same program)"), ("kderror", "KDError"),
              ("other", "other exception (bug)"), ("roundtrip", "round-trip mismatch (bug)")]
    for key, label in labels:
        print(f"  {label:<48} {outcomes[key]:>7}  ({100 * outcomes[key] / max(total, 1):.1f}%)")
    print(f"  slowest input: {slow_time * 1000:.1f} ms ({len(slow_text)} characters)")
    for outcome, source, text, detail in failures[: args.show]:
        shown = repr(text) if len(text) < 400 else repr(text[:400]) + "…"
        print(f"\n---- {outcome} from {source}: {shown}\n{detail}")
    bad = outcomes["other"] + outcomes["roundtrip"]
    print("\nFAILED" if bad else "\nOK: nothing but KDError")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
