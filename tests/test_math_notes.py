"""Math learning notes: worked steps, verifiable boxed answers, deterministic, disjoint splits."""

from __future__ import annotations

import pandas as pd
import pytest
import reasoning_gym
from math_verify import parse, verify

from k2core.data.math_notes import (
    AnswerMismatch,
    MathConfig,
    MathGeneratorConfig,
    arithmetic_note,
    boxed_answer,
    build_math,
    generator_seed,
    gcd_note,
    write_note,
)

GENERATORS = [
    MathGeneratorConfig(name="basic_arithmetic", count=40, options={"operators": ["+", "-", "*"], "max_terms": 4}),
    MathGeneratorConfig(name="chain_sum", count=30),
    MathGeneratorConfig(name="gsm_symbolic", count=20),
    MathGeneratorConfig(name="gcd", count=20),
]
CFG = MathConfig(generators=GENERATORS, rl_fraction=0.2, test_fraction=0.2)


def test_arithmetic_note_follows_order_of_operations() -> None:
    note = arithmetic_note("( 2 + 3 ) * 4 - -( 6 / 3 )", "22")
    assert "Step 1: 2 + 3 = 5. The expression is now 5 * 4 - -( 6 / 3 )." in note
    assert "Step 2: 5 * 4 = 20." in note and "Step 3: 6 / 3 = 2. The expression is now 20 - -2." in note
    assert note.endswith("\\boxed{22}")
    with pytest.raises(AnswerMismatch):
        arithmetic_note("2 + 2", "5")


def test_gcd_note_writes_euclid() -> None:
    note = gcd_note([48, 18], "6")
    assert "48 = 2 × 18 + 12" in note and "12 = 2 × 6 + 0" in note and note.endswith("\\boxed{6}")


def test_boxed_answer_handles_nested_braces() -> None:
    assert boxed_answer("x \\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert boxed_answer("no box") is None


@pytest.mark.parametrize("gen", GENERATORS, ids=lambda g: g.name)
def test_notes_verify_with_math_verify_and_reasoning_gym(gen: MathGeneratorConfig) -> None:
    dataset = reasoning_gym.create_dataset(gen.name, size=8, seed=generator_seed(3, gen.name), **gen.options)
    for entry in dataset:
        note = write_note(gen.name, entry)
        assert boxed_answer(note) == str(entry["answer"])
        assert verify(parse(f"${entry['answer']}$"), parse(note)), note
        assert dataset.score_answer(boxed_answer(note), entry) == 1.0


def test_build_math_is_deterministic_with_disjoint_splits() -> None:
    first, stats = build_math(CFG, seed=7)
    second, _ = build_math(CFG, seed=7)
    pd.testing.assert_frame_equal(first, second)
    assert not build_math(CFG, seed=8)[0]["question"].equals(first["question"])
    assert first["problem_id"].is_unique and first["question"].is_unique
    assert set(first["split"]) == {"train", "rl", "test"}
    by_split = first.groupby("split")["question"].apply(set)
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["rl"])
    assert stats["math_train"] + stats["math_rl"] + stats["math_test"] == len(first)
    kept = {g.name: stats[f"math_{g.name}"] for g in GENERATORS}
    assert sum(kept.values()) + stats["math_duplicate_questions"] + stats["math_unsolved"] == sum(
        g.count for g in GENERATORS)
    for row in first.itertuples():
        assert row.note.endswith(f"\\boxed{{{row.answer}}}")
