"""Instruction-following rewards from our IFEval checkers, and the hack-check on false compliance claims, on real
responses."""

from __future__ import annotations

import pytest

from k2core.rl.gym import GymConfig, InstructionDomain, make_env, score
from k2core.rl.gym.instruct import claimed_topics, false_claims

PARAGRAPHS = {"key": "p1", "prompt": "Write about cats in exactly 3 paragraphs separated by the markdown divider ***.",
              "instruction_id_list": ["length_constraints:number_paragraphs"], "kwargs": [{"num_paragraphs": 3}]}
CASE_COMMA = {"key": "p2", "prompt": "Describe your pets in lowercase letters only and use no commas.",
              "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"],
              "kwargs": [{}, {}]}
THREE = "Cats are small hunters that sleep most of the day.\n***\nThey purr when content.\n***\nMany live indoors now."
TWO = "Cats are small hunters that sleep most of the day.\n***\nThey purr when content and many live indoors now."


def test_reward_is_the_strict_share_of_instructions_followed() -> None:
    assert score("ifeval", PARAGRAPHS, THREE)[0] == 1.0
    assert score("ifeval", PARAGRAPHS, TWO)[0] == 0.0
    reward, info = score("ifeval", CASE_COMMA, "my cat sleeps, my dog barks.")
    assert reward == 0.5 and info["verdicts"] == {"change_case:english_lowercase": True, "punctuation:no_comma": False}
    assert info["false_claims"] == []
    env = make_env("ifeval", samples=[PARAGRAPHS, CASE_COMMA])
    assert env.reset(1)[0]["content"] == CASE_COMMA["prompt"]
    assert env.step({"role": "assistant", "content": "my cat sleeps and my dog barks."}).reward == 1.0


def test_a_false_claim_costs_the_penalty_and_a_true_claim_costs_nothing() -> None:
    claimed_two = "Here is my answer in exactly 3 paragraphs.\n" + TWO
    reward, info = score("ifeval", PARAGRAPHS, claimed_two)
    assert reward == pytest.approx(0.0 - 0.5)
    assert info["false_claims"] == [{"topic": "paragraphs", "sentence": "Here is my answer in exactly 3 paragraphs.",
                                     "failed": "length_constraints:number_paragraphs"}]
    assert score("ifeval", PARAGRAPHS, "Here is my answer in exactly 3 paragraphs.\n" + THREE)[0] == 1.0
    # a generic claim is checked against every instruction
    generic = "i have followed all the instructions. my cat sleeps, my dog barks."
    assert score("ifeval", CASE_COMMA, generic)[0] == pytest.approx(0.5 - 0.5)
    assert score("ifeval", CASE_COMMA, "i have followed all the instructions. my cat sleeps and my dog barks.")[0] == 1.0
    # a claim about the part that WAS followed is true, the failed comma rule is not claimed
    assert score("ifeval", CASE_COMMA, "this response is written in lowercase. my cat sleeps, my dog barks.")[0] == 0.5
    assert InstructionDomain(GymConfig(false_claim_penalty=2.0)).score(PARAGRAPHS, claimed_two)[0] == -2.0


def test_the_claim_detector_needs_self_reference_and_ignores_reasoning() -> None:
    assert claimed_topics("Novels often have many paragraphs and commas.") == []
    assert claimed_topics("<think>I will claim it is in 3 paragraphs: here is my answer in 3 paragraphs</think>ok") == []
    assert [t for t, _ in claimed_topics("Below is a JSON object with no commas, as requested.")] == [
        "commas", "json", "all"]
    assert [t for t, _ in claimed_topics("My response uses exactly 5 bullet points.")] == ["bullets"]
    assert [t for t, _ in claimed_topics("I've kept it under 100 words!")] == ["words"]
    # claims about constraints the sample did not set are not judged
    assert false_claims("My response uses exactly 5 bullet points.", {"punctuation:no_comma": False}) == []
