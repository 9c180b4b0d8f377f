"""Small function-synthesis problems with hidden tests, generated here (reasoning-gym's `codeio` asks to predict a
program's input or output, it has no unit tests to run a candidate against).

Each template has a statement, a trusted reference implementation (runs on the host, never in the jail) and an
input generator; `generate_problem(seed, tests)` picks a template and its parameters from the seed, shows two
examples in the statement and keeps `tests` other input/expected pairs hidden in the sample.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

from k2core.rl.gym.core import Sample

Args = list[Any]


@dataclasses.dataclass(frozen=True)
class Template:
    entry_point: str
    signature: str
    statement: str  # formatted with the template's parameters
    params: Callable[[random.Random], dict[str, Any]]
    reference: Callable[..., Any]  # (*args, **params) -> expected
    inputs: Callable[[random.Random], Args]


def _ints(rng: random.Random, lo: int = -50, hi: int = 50, n: int = 12) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(0, n))]


def _word(rng: random.Random, alphabet: str = "abcde", n: int = 12) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, n)))


def _second_largest(xs: list[int]) -> int | None:
    distinct = sorted(set(xs))
    return distinct[-2] if len(distinct) >= 2 else None


def _run_length(s: str) -> list[list[Any]]:
    runs: list[list[Any]] = []
    for ch in s:
        if runs and runs[-1][0] == ch:
            runs[-1][1] += 1
        else:
            runs.append([ch, 1])
    return runs


def _balanced(s: str) -> bool:
    pairs, stack = {")": "(", "]": "["}, []
    for ch in s:
        if ch in "([":
            stack.append(ch)
        elif not stack or stack.pop() != pairs[ch]:
            return False
    return not stack


def _fib_mod(n: int, m: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, (a + b) % m
    return a


TEMPLATES: tuple[Template, ...] = (
    Template("sum_multiples", "def sum_multiples(xs: list[int]) -> int",
             "Return the sum of the elements of `xs` that are divisible by {m} (0 for none).",
             lambda r: {"m": r.randint(2, 7)}, lambda xs, m: sum(x for x in xs if x % m == 0),
             lambda r: [_ints(r)]),
    Template("rotate_left", "def rotate_left(xs: list[int], k: int) -> list[int]",
             "Return `xs` rotated left by `k` positions (k may exceed the length; an empty list stays empty).",
             lambda r: {}, lambda xs, k: xs[k % len(xs):] + xs[:k % len(xs)] if xs else [],
             lambda r: [_ints(r), r.randint(0, 30)]),
    Template("second_largest", "def second_largest(xs: list[int]) -> int | None",
             "Return the second largest DISTINCT value of `xs`, or None when it has fewer than two distinct values.",
             lambda r: {}, _second_largest, lambda r: [_ints(r, -5, 5)]),
    Template("run_length", "def run_length(s: str) -> list[list]",
             "Return the run-length encoding of `s` as a list of [character, count] pairs, in order.",
             lambda r: {}, _run_length, lambda r: [_word(r, "aab")]),
    Template("balanced", "def balanced(s: str) -> bool",
             "Return whether the brackets '()' and '[]' in `s` (which holds only those characters) are balanced.",
             lambda r: {}, _balanced, lambda r: [_word(r, "()[]", 10)]),
    Template("fib_mod", "def fib_mod(n: int) -> int",
             "Return F(n) modulo {m}, where F(0) = 0, F(1) = 1 and F(n) = F(n-1) + F(n-2).",
             lambda r: {"m": r.choice([7, 10, 97, 1000])}, _fib_mod, lambda r: [r.randint(0, 300)]),
    Template("count_in_set", "def count_in_set(s: str) -> int",
             "Return how many characters of `s` are one of {chars!r}.",
             lambda r: {"chars": "".join(sorted(r.sample("abcdefgh", 3)))},
             lambda s, chars: sum(ch in chars for ch in s), lambda r: [_word(r, "abcdefgh", 15)]),
)

_SHOWN = 2


def generate_problem(seed: int, tests: int) -> Sample:
    """A deterministic problem for `seed`: prompt, entry point, and hidden `tests` [{"args", "expected"}]."""
    rng = random.Random(seed)
    template = TEMPLATES[rng.randrange(len(TEMPLATES))]
    params = template.params(rng)
    cases, seen = [], set()
    while len(cases) < tests + _SHOWN:
        args = template.inputs(rng)
        key = repr(args)
        if key in seen and len(seen) < 4 * (tests + _SHOWN):  # prefer distinct inputs, never loop forever
            continue
        seen.add(key)
        cases.append({"args": args, "expected": template.reference(*args, **params)})
    shown = "\n".join(f"    {template.entry_point}({', '.join(map(repr, c['args']))}) == {c['expected']!r}"
                      for c in cases[:_SHOWN])
    prompt = (f"Write a Python function `{template.signature}`.\n{template.statement.format(**params)}\n"
              f"Examples:\n{shown}\n\nAnswer with the complete function in one ```python code block.")
    return {"prompt": prompt, "entry_point": template.entry_point, "tests": cases[_SHOWN:]}
