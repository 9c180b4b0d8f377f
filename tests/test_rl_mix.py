"""The RL prompt mix: per-domain counts from weights, math rows and procedural samples, guarded gym scoring, and
the generated IFEval prompts."""

from __future__ import annotations

import json
import random

import pytest

from k2core.eval.ifeval import CHECKERS
from k2core.rl.gym import GymError, get_domain, score
from k2core.rl.gym.instruct_gen import CONFLICTS, generate_instructions
from k2core.rl.mix import GymScorer, PromptMix, allocate

MATH = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5)]


def test_allocate_splits_by_weight_with_largest_remainders() -> None:
    assert allocate({"math": 1.0}, 8) == {"math": 8}
    assert allocate({"math": 2.0, "code": 1.0, "ifeval": 1.0}, 8) == {"math": 4, "code": 2, "ifeval": 2}
    assert allocate({"math": 1.0, "code": 1.0, "ifeval": 1.0}, 4) == {"math": 2, "code": 1, "ifeval": 1}
    assert allocate({"code": 1.0, "math": 1.0, "ifeval": 1.0}, 5) == {"code": 2, "math": 2, "ifeval": 1}
    assert sum(allocate({"a": 0.3, "b": 0.3, "c": 0.4}, 7).values()) == 7
    with pytest.raises(ValueError, match="every weight > 0"):
        allocate({"math": 0.0}, 4)


def test_the_mix_draws_math_rows_and_generated_samples_reproducibly() -> None:
    mix = PromptMix({"math": 2.0, "code": 1.0, "ifeval": 1.0}, MATH)
    first, again = mix.draw(random.Random(3), 8), mix.draw(random.Random(3), 8)
    assert first == again
    assert [name for name, _ in first] == ["math"] * 4 + ["code"] * 2 + ["ifeval"] * 2
    math_rows = [s for name, s in first if name == "math"]
    assert len({s["prompt"] for s in math_rows}) == 4 and all(s in MATH for s in math_rows)
    assert all("tests" in s for name, s in first if name == "code")
    assert first != mix.draw(random.Random(4), 8)
    with pytest.raises(GymError, match="'faithfulness' has no sample generator"):
        PromptMix({"faithfulness": 1.0})
    with pytest.raises(GymError, match="no gym domain 'chess'"):
        PromptMix({"chess": 1.0})
    with pytest.raises(ValueError, match="no math RL prompts"):
        PromptMix({"math": 1.0})


def test_the_scorer_uses_the_gym_and_counts_verifier_errors() -> None:
    scorer = GymScorer()
    assert scorer("math", MATH[0], "so \\boxed{1}") == 1.0
    assert scorer("math", MATH[0], "so \\boxed{7}") == 0.0
    assert scorer("math", {"prompt": "no answer field"}, "\\boxed{1}") == 0.0
    assert scorer.errors == {"math": 1}


def test_generated_ifeval_prompts_are_checkable_and_never_contradictory() -> None:
    samples = [generate_instructions(seed) for seed in range(200)]
    assert generate_instructions(7) == samples[7] and samples[7] != samples[8]
    assert get_domain("ifeval").generate(7) == samples[7]
    assert {len(s["instruction_id_list"]) for s in samples} == {1, 2, 3}
    for sample in samples:
        ids = sample["instruction_id_list"]
        assert len(set(ids)) == len(ids) and all(i in CHECKERS for i in ids)
        assert not any(pair <= set(ids) for pair in CONFLICTS)
        assert json.loads(json.dumps(sample)) == sample
    lowercase_no_comma = next(s for s in samples
                              if set(s["instruction_id_list"]) == {"change_case:english_lowercase"}
                              or s["instruction_id_list"] == ["punctuation:no_comma"])
    assert score("ifeval", lowercase_no_comma, "cats sleep in the sun and dream of fish")[0] == 1.0
    paragraphs = next(s for s in samples if s["instruction_id_list"] == ["length_constraints:number_paragraphs"])
    n = paragraphs["kwargs"][0]["num_paragraphs"]
    assert str(n) in paragraphs["prompt"]
    assert score("ifeval", paragraphs, "\n***\n".join(["A paragraph."] * n))[0] == 1.0
    assert score("ifeval", paragraphs, "\n***\n".join(["A paragraph."] * (n + 1)))[0] == 0.0
