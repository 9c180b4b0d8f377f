"""Verifiable math problems from reasoning-gym, rewritten as step-by-step learning notes.

Following the SwallowMath idea, each solution is a self-contained note: it restates the problem,
explains every step (order of operations, Euclid's algorithm, the worked reasoning of GSM-style
problems) and ends with `\\boxed{answer}`, where `answer` is reasoning-gym's gold answer string, so
notes can be checked with `math_verify` and with the generator's own `score_answer`.
Questions are deduplicated before splitting, so train / rl / test never share a question.

With a chat backend, `llm_notes` asks a model for the note instead (restate, explain each step,
conclude). A model's note is used only when its last boxed answer verifies against the gold answer
(`k2core.rl.rewards.answers_match`: math-verify); the box is then rewritten to the gold string, so
every note still ends with `\\boxed{answer}`. Otherwise the deterministic note stays.
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
import zlib
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from k2core.chat.tokens import SPECIAL_TOKENS
from k2core.llm import ChatBackend, ChatRequest

MATH_COLUMNS = ["problem_id", "generator", "question", "answer", "note", "split"]
SPLITS = ("train", "rl", "test")
GeneratorName = Literal["basic_arithmetic", "chain_sum", "gsm_symbolic", "gcd"]


class MathGeneratorConfig(BaseModel):
    """One reasoning-gym generator: how many problems, and its own dataset options (e.g. max_terms)."""

    model_config = ConfigDict(extra="forbid")

    name: GeneratorName
    count: int = Field(ge=1)
    options: dict[str, Any] = Field(default_factory=dict)  # passed to reasoning_gym.create_dataset


class MathConfig(BaseModel):
    """Generators and the fractions of unique questions that go to each split (train gets the rest)."""

    model_config = ConfigDict(extra="forbid")

    generators: list[MathGeneratorConfig] = Field(min_length=1)
    rl_fraction: float = Field(ge=0, le=1)
    test_fraction: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _fractions(self) -> MathConfig:
        if self.rl_fraction + self.test_fraction > 1:
            raise ValueError(f"rl_fraction + test_fraction must be <= 1, got {self.rl_fraction} + {self.test_fraction}")
        return self


class LLMNotesConfig(BaseModel):
    """Model-written notes for the first `max_problems` train-split problems (others keep worked notes)."""

    model_config = ConfigDict(extra="forbid")

    backend: str = Field(min_length=1)  # a name in `synth.llm`
    max_problems: int = Field(ge=0)
    max_tokens: int = Field(ge=1)
    temperature: float = Field(ge=0)
    verify_timeout_s: float = Field(gt=0)


NOTE_ATTEMPT_COLUMNS = ["problem_id", "backend", "llm_note", "boxed", "verified"]
_NOTE_SYSTEM = (
    "You write learning notes that teach how to solve a math problem. First restate the problem in your own "
    "words, then explain every step of the solution and why it is taken, then state the conclusion. End with "
    "the final answer as \\boxed{answer}."
)


class AnswerMismatch(ValueError):
    """The worked solution does not reach reasoning-gym's gold answer (e.g. its inexact division)."""


def boxed(answer: str) -> str:
    return f"\\boxed{{{answer}}}"


def boxed_answer(text: str) -> str | None:
    """Content of the last `\\boxed{...}` in `text` (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


# --- arithmetic expressions, reduced one operation at a time --------------------------------------

Node = tuple  # ("num", Fraction) | ("neg", Node) | ("bin", op, Node, Node)
_OPS: dict[type, str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_APPLY: dict[str, Callable[[Fraction, Fraction], Fraction]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}


def _to_node(tree: ast.AST) -> Node:
    if isinstance(tree, ast.Constant) and isinstance(tree.value, int):
        return ("num", Fraction(tree.value))
    if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub):
        inner = _to_node(tree.operand)
        return ("num", -inner[1]) if inner[0] == "num" and inner[1] >= 0 else ("neg", inner)
    if isinstance(tree, ast.BinOp) and type(tree.op) in _OPS:
        return ("bin", _OPS[type(tree.op)], _to_node(tree.left), _to_node(tree.right))
    raise ValueError(f"unsupported expression part: {ast.dump(tree)}")


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _show(node: Node, parent: int = 0, right: bool = False) -> str:
    if node[0] == "num":
        text = _fmt(node[1])
        return f"({text})" if node[1].denominator != 1 and parent else text
    if node[0] == "neg":
        inner = _show(node[1])
        return f"-( {inner} )" if node[1][0] == "bin" else f"-({inner})"
    _, op, left, right_node = node
    prec = _PRECEDENCE[op]
    text = f"{_show(left, prec)} {op} {_show(right_node, prec, True)}"
    return f"( {text} )" if parent > prec or (right and parent == prec) else text


def _reduce_once(node: Node) -> tuple[Node, str | None]:
    """Evaluate the leftmost innermost operation; returns the new tree and a sentence about the step."""
    if node[0] == "num":
        return node, None
    if node[0] == "neg":
        if node[1][0] == "num":
            value = -node[1][1]
            return ("num", value), f"-({_fmt(node[1][1])}) = {_fmt(value)}"
        inner, step = _reduce_once(node[1])
        if inner[0] == "num" and inner[1] >= 0:
            return ("num", -inner[1]), step  # "-(5)" is just the number -5, not a step of its own
        return ("neg", inner), step
    _, op, left, right = node
    if left[0] == "num" and right[0] == "num":
        if op == "/" and right[1] == 0:
            raise ValueError("division by zero in a generated expression")
        value = _APPLY[op](left[1], right[1])
        return ("num", value), f"{_show(left, 3)} {op} {_show(right, 3)} = {_fmt(value)}"
    if left[0] != "num":
        new_left, step = _reduce_once(left)
        return ("bin", op, new_left, right), step
    new_right, step = _reduce_once(right)
    return ("bin", op, left, new_right), step


def arithmetic_note(expression: str, answer: str) -> str:
    """A note that evaluates `expression` one operation at a time and boxes `answer`."""
    node = _to_node(ast.parse(expression.strip(), mode="eval").body)
    lines = [
        f"We need to find the value of {expression.strip()}.",
        "Parentheses are worked out first, then multiplication and division, then addition and "
        "subtraction, each from left to right. We do one operation at a time.",
    ]
    number = 0
    while node[0] != "num":
        node, step = _reduce_once(node)
        number += 1
        rest = f" The expression is now {_show(node)}." if node[0] != "num" else ""
        lines.append(f"Step {number}: {step}.{rest}")
    if _fmt(node[1]) != answer:
        raise AnswerMismatch(f"worked value {_fmt(node[1])} of {expression!r} differs from the gold answer {answer!r}")
    lines.append(f"So the value of the expression is {answer}. The answer is {boxed(answer)}")
    return "\n\n".join(lines)


def gcd_note(numbers: list[int], answer: str) -> str:
    """Euclid's algorithm written out, pairwise over the numbers."""
    listed = ", ".join(map(str, numbers))
    lines = [
        f"We need the greatest common divisor of {listed}.",
        "Euclid's algorithm: divide the larger number by the smaller and keep the remainder; the GCD "
        "does not change, and when the remainder is 0 the last divisor is the GCD.",
    ]
    current = numbers[0]
    for other in numbers[1:]:
        a, b = max(current, other), min(current, other)
        lines.append(f"Find the GCD of {a} and {b}.")
        while b:
            lines.append(f"{a} = {a // b} × {b} + {a % b}")
            a, b = b, a % b
        lines.append(f"The remainder is 0, so the GCD is {a}.")
        current = a
    if str(current) != answer or current != math.gcd(*numbers):
        raise AnswerMismatch(f"worked GCD {current} of {numbers} differs from the gold answer {answer!r}")
    lines.append(f"The greatest common divisor of {listed} is {answer}. The answer is {boxed(answer)}")
    return "\n\n".join(lines)


def gsm_note(question: str, cot: str, answer: str) -> str:
    """Reasoning-gym's worked solution of a GSM-style problem, wrapped as a note."""
    steps = re.sub(r"\n?####.*$", "", cot.strip(), flags=re.DOTALL).strip()
    final = re.search(r"####\s*(.+)\s*$", cot.strip())
    if final is not None and Fraction(final.group(1).strip().replace(",", "")) != Fraction(answer):
        raise AnswerMismatch(f"worked answer {final.group(1)!r} differs from the gold answer {answer!r}")
    first = question.split("?")[0].strip() if "?" in question else question.strip()
    return "\n\n".join(
        [
            f"We need to answer this question: {first}?" if "?" in question else f"The task: {first}",
            "Let us work through the quantities one at a time.",
            steps,
            f"So the answer is {answer}. The answer is {boxed(answer)}",
        ]
    )


def write_note(generator: str, entry: dict[str, Any]) -> str:
    """The learning note for one reasoning-gym entry."""
    meta, answer = entry["metadata"], str(entry["answer"]).strip()
    if generator in ("basic_arithmetic", "chain_sum"):
        return arithmetic_note(meta["expression"], answer)
    if generator == "gcd":
        return gcd_note([int(n) for n in meta["numbers"]], answer)
    if generator == "gsm_symbolic":
        return gsm_note(entry["question"], meta["answer_cot"], answer)
    raise ValueError(f"no note writer for generator {generator!r}; use one of {GeneratorName.__args__}")


def generator_seed(seed: int, name: str) -> int:
    """A stable per-generator seed (Python's hash() is salted per process, crc32 is not)."""
    return zlib.crc32(f"{seed}:{name}".encode()) & 0x7FFFFFFF


def _assign_splits(n: int, cfg: MathConfig, seed: int) -> list[str]:
    n_test = round(cfg.test_fraction * n)
    n_rl = min(round(cfg.rl_fraction * n), n - n_test)
    labels = ["test"] * n_test + ["rl"] * n_rl + ["train"] * (n - n_test - n_rl)
    order = np.random.default_rng(seed).permutation(n)
    return [labels[i] for i in order]


def build_math(cfg: MathConfig, seed: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows of `math.parquet` (deterministic in `seed`) and counts per generator and split."""
    import reasoning_gym

    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    stats: dict[str, int] = {"math_duplicate_questions": 0, "math_unsolved": 0}
    for gen in cfg.generators:
        gen_seed = generator_seed(seed, gen.name)
        dataset = reasoning_gym.create_dataset(gen.name, size=gen.count, seed=gen_seed, **gen.options)
        kept: list[dict[str, str]] = []
        for entry in tqdm(dataset, total=gen.count, desc=f"math notes: {gen.name}", leave=False):
            question = entry["question"].strip()
            if question in seen:
                stats["math_duplicate_questions"] += 1
                continue
            seen.add(question)
            try:
                note = write_note(gen.name, entry)
            except AnswerMismatch:
                stats["math_unsolved"] += 1  # gold answer not exact; such a problem would teach an error
                continue
            problem_id = f"{gen.name}-{hashlib.sha1(question.encode()).hexdigest()[:12]}"
            kept.append({"problem_id": problem_id, "generator": gen.name, "question": question,
                         "answer": str(entry["answer"]).strip(), "note": note})
        for row, split in zip(kept, _assign_splits(len(kept), cfg, gen_seed), strict=True):
            row["split"] = split
        rows.extend(kept)
        stats[f"math_{gen.name}"] = len(kept)
    frame = pd.DataFrame(rows, columns=MATH_COLUMNS)
    for split in SPLITS:
        stats[f"math_{split}"] = int((frame["split"] == split).sum())
    return frame, stats


def note_prompt(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": _NOTE_SYSTEM}, {"role": "user", "content": question}]


def canonical_note(note: str, answer: str, timeout_s: float) -> str | None:
    """`note` cut after its last box, the box holding the gold `answer`; None when the boxed value is wrong."""
    from k2core.rl.rewards import answers_match

    value = boxed_answer(note)
    if any(t in note for t in SPECIAL_TOKENS) or value is None or not value.strip():
        return None
    if not answers_match(answer, value, timeout_s):
        return None
    return note[: note.rfind("\\boxed{")].rstrip() + " " + boxed(answer)


def llm_notes(math: pd.DataFrame, backend: ChatBackend, cfg: LLMNotesConfig, seed: int
              ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Replace the notes of the first `cfg.max_problems` train problems by verified model notes.

    Returns the updated table, one attempt row per problem asked (`NOTE_ATTEMPT_COLUMNS`) and counts.
    """
    math = math.copy()
    attempts = []
    for index in math.index[math["split"] == "train"][: cfg.max_problems]:
        row = math.loc[index]
        request = ChatRequest(messages=note_prompt(row["question"]), temperature=cfg.temperature,
                              seed=generator_seed(seed, row["problem_id"]), max_tokens=cfg.max_tokens)
        text = (backend.complete(request).message.get("content") or "").strip()
        note = canonical_note(text, row["answer"], cfg.verify_timeout_s)
        if note is not None:
            math.at[index, "note"] = note
        attempts.append({"problem_id": row["problem_id"], "backend": backend.backend_id, "llm_note": text,
                         "boxed": boxed_answer(text), "verified": note is not None})
    table = attempt_table(attempts)
    verified = int(table["verified"].sum())
    stats = {"math_llm_notes_asked": len(table), "math_llm_notes_verified": verified,
             "math_llm_notes_rejected": len(table) - verified,
             "math_llm_notes_no_box": int(table["boxed"].isna().sum())}
    return math, table, stats


def attempt_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """`math_note_attempts` rows with the contract's dtypes (also when there are none); `boxed` may be null."""
    return pd.DataFrame(rows, columns=NOTE_ATTEMPT_COLUMNS).astype(
        {"problem_id": str, "backend": str, "llm_note": str, "boxed": object, "verified": bool})
