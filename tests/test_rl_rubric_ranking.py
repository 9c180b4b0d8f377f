"""Pairwise ranking with deterministic fake critics, the prescriptive rule, and the critic-verifier closed loop."""

import json
import re

import pandas as pd
import pytest

from k2core.llm import ChatBackend, ChatRequest, ChatResponse, Usage
from k2core.rl.rubric import (Critic, RubricRewardConfig, VerifiedGroup, critic_verifier_agreement, load_library,
                              parse_verdict, preference_examples, preference_frame, rank_group, rubric_reward,
                              select_rubrics, write_preferences)

RUBRICS = select_rubrics(load_library(), [])
_PAIR = re.compile(r"# Response A\n(.*?)\n\n# Response B\n(.*?)\n\nWeigh the rubrics", re.DOTALL)


class FakeCritic:
    """A deterministic critic: `choose(a, b)` returns its reply for the pair shown as (A, B); counts its calls."""

    def __init__(self, name, choose):
        self.backend_id = f"fake-{name}"
        self.choose = choose
        self.calls = 0

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        assert request.temperature == 0.0
        a, b = _PAIR.search(request.messages[-1]["content"]).groups()
        return ChatResponse(message={"role": "assistant", "content": self.choose(a, b)},
                            usage=Usage(prompt_tokens=1, completion_tokens=1))


def prefers_longer(a, b):
    return "VIOLATIONS: none\nVERDICT: " + ("A" if len(a) > len(b) else "B" if len(b) > len(a) else "TIE")


def prefers_keyword(word):
    def choose(a, b):
        return "VERDICT: " + ("A" if word in a and word not in b else "B" if word in b and word not in a else "TIE")
    return choose


def always_a(a, b):
    return "VIOLATIONS: A:no_initial_praise\n**Verdict:** A"


def critic(name, choose):
    backend = FakeCritic(name, choose)
    assert isinstance(backend, ChatBackend)
    return Critic(backend), backend


PROMPT = "How many legs does a spider have?"
ANSWERS = ["Eight.", "A spider has eight legs.", "Spiders have eight legs, arranged in four pairs on the cephalothorax."]


def test_longer_critic_ranks_by_length_in_both_orders():
    judge, backend = critic("longer", prefers_longer)
    result = rubric_reward(judge, RUBRICS, PROMPT, ANSWERS, RubricRewardConfig(method="win_rate", scale="unit"))
    assert backend.calls == 6  # 3 pairs, both orders
    assert result.rewards == pytest.approx([0.0, 0.5, 1.0])
    assert result.ranking.inconsistency_rate == 0.0
    assert result.ranking.wins == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    assert result.ranking.rubrics == "core@1,prescriptive@1"
    bt = rubric_reward(judge, RUBRICS, PROMPT, ANSWERS, RubricRewardConfig(method="bradley_terry"))
    assert bt.rewards[0] < bt.rewards[1] < bt.rewards[2]
    assert sum(bt.rewards) == pytest.approx(0.0, abs=1e-12)


def test_order_biased_critic_becomes_ties():
    judge, _ = critic("always-a", always_a)
    result = rubric_reward(judge, RUBRICS, PROMPT, ANSWERS, RubricRewardConfig(method="bradley_terry", scale="unit"))
    assert all(p.critic == "tie" and not p.consistent for p in result.ranking.pairs)
    assert result.ranking.inconsistency_rate == 1.0
    assert result.rewards == pytest.approx([0.5, 0.5, 0.5])
    # it flags slot A in both orders, i.e. a different response each time: never a consistent violation
    assert result.ranking.violators == set()


def test_prescriptive_violation_loses_even_when_the_critic_prefers_it():
    praising = "Great question! " + ANSWERS[2] + " Each leg has seven segments."  # the longest answer
    justifying = "Eight. I chose to keep this answer to one word because you asked a simple question."
    responses = [ANSWERS[0], praising, ANSWERS[1], justifying]
    judge, _ = critic("longer", prefers_longer)
    for method in ("bradley_terry", "win_rate"):
        result = rubric_reward(judge, RUBRICS, PROMPT, responses, RubricRewardConfig(method=method, scale="unit"))
        assert result.ranking.violators == {1, 3}
        clean = [result.rewards[0], result.rewards[2]]
        assert max(result.rewards[1], result.rewards[3]) < min(clean), method
        pair = next(p for p in result.ranking.pairs if (p.i, p.j) == (0, 1))
        assert pair.critic == "second" and pair.outcome == "first"  # critic liked the praise; the rule overrides
        assert pair.violations_j == {"no_initial_praise"}
        both = next(p for p in result.ranking.pairs if (p.i, p.j) == (1, 3))
        assert both.outcome == both.critic == "first"  # two violators: the critic decides


def test_critic_flag_counts_only_when_given_in_both_orders():
    sneaky = "Such a delightful thing to ask about. Eight."  # the detector misses this praise

    def flags_praise(a, b):
        slots = [s for s, text in (("A", a), ("B", b)) if text.startswith("Such a delightful")]
        flagged = ", ".join(f"{s}:no_initial_praise" for s in slots) or "none"
        return f"VIOLATIONS: {flagged}\nVERDICT: " + ("A" if len(a) > len(b) else "B")

    judge, _ = critic("flagger", flags_praise)
    result = rank_group(judge, RUBRICS, PROMPT, [ANSWERS[1], sneaky])
    assert result.pairs[0].critic == "second" and result.pairs[0].outcome == "first"
    assert result.pairs[0].violations_j == {"no_initial_praise"}


def test_keyword_critic_and_unparsed_replies():
    judge, _ = critic("keyword", prefers_keyword("pairs"))
    result = rubric_reward(judge, RUBRICS, PROMPT, ANSWERS, RubricRewardConfig(method="win_rate", scale="centred"))
    assert result.rewards == pytest.approx([-0.25, -0.25, 0.5])
    mute, _ = critic("mute", lambda a, b: "I would rather not say.")
    silent = rank_group(mute, RUBRICS, PROMPT, ANSWERS)
    assert silent.unparsed == 6
    assert silent.inconsistency_rate == 0.0  # no pair had two parsed verdicts
    assert all(p.outcome == "tie" for p in silent.pairs)


def test_ranking_needs_two_responses():
    judge, _ = critic("longer", prefers_longer)
    with pytest.raises(ValueError, match="at least 2"):
        rank_group(judge, RUBRICS, PROMPT, ["only one"])


# --------------------------------------------------------------------------- closed loop


def _groups():
    math_rubrics = select_rubrics(load_library(), ["math"])
    return [
        # correct: "12" answers. The longer-answer critic agrees on (long right, short wrong) only.
        VerifiedGroup("What is 3 * 4?", ["The product is 12, since 3 * 4 = 12.", "13", "12", "It is 11, I think so."],
                      [True, False, True, False], math_rubrics),
        VerifiedGroup("What is 2 + 2?", ["4", "5"], [True, False], math_rubrics),
        VerifiedGroup("What is 1 + 1?", ["2", "3"], [True, True], math_rubrics),  # no mixed pair: not counted
    ]


def test_agreement_rate_and_disagreements_on_a_constructed_set():
    judge, _ = critic("longer", prefers_longer)
    report = critic_verifier_agreement(judge, _groups())
    # group 1 pairs (right x wrong): (long12, 13) agree; (long12, 11-sentence) agree; (12, 13) tie (equal length);
    # (12, 11-sentence) prefers incorrect. Group 2: ("4", "5") tie. Group 3: none.
    assert report.pairs == 5
    assert report.agree == 2
    assert report.prefers_incorrect == 1
    assert report.ties == 2
    assert report.rate == pytest.approx(0.4)
    assert {(d.correct, d.incorrect, d.critic) for d in report.disagreements} == {
        ("12", "13", "tie"), ("12", "It is 11, I think so.", "incorrect"), ("4", "5", "tie")}
    assert report.metrics()["rl/critic/verifier_agreement"] == pytest.approx(0.4)


def test_order_biased_critic_never_agrees():
    judge, _ = critic("always-a", always_a)
    report = critic_verifier_agreement(judge, _groups())
    assert report.rate == 0.0 and report.ties == report.pairs == 5


def test_verified_group_shape_is_checked():
    judge, _ = critic("longer", prefers_longer)
    with pytest.raises(ValueError, match="verifier verdicts"):
        critic_verifier_agreement(judge, [VerifiedGroup("q", ["a", "b"], [True], RUBRICS)])


def test_disagreements_become_critic_preference_data(tmp_path):
    judge, _ = critic("longer", prefers_longer)
    disagreements = critic_verifier_agreement(judge, _groups()).disagreements
    examples = preference_examples(disagreements)
    assert len(examples) == 2 * len(disagreements)
    for example in examples:
        content = example["prompt"][-1]["content"]
        a, b = _PAIR.search(content).groups()
        chosen = parse_verdict(example["chosen"][0]["content"])
        rejected = parse_verdict(example["rejected"][0]["content"])
        correct_slot = "A" if a in {d.correct for d in disagreements} else "B"
        assert (b if correct_slot == "A" else a) in {d.incorrect for d in disagreements}
        assert chosen.winner == correct_slot and rejected.winner == ("B" if correct_slot == "A" else "A")
    uri = tmp_path / "critic_prefs.parquet"
    assert write_preferences(disagreements, uri) == len(examples)
    frame = pd.read_parquet(uri)
    assert list(frame.columns[:4]) == ["example_id", "source", "messages", "tools"]  # the sft.parquet columns
    assert frame["example_id"].is_unique
    first = frame.iloc[0]
    messages = json.loads(first["messages"])
    assert messages == json.loads(first["prompt"]) + json.loads(first["chosen"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert json.loads(first["rejected"])[0]["role"] == "assistant"
    assert set(frame["critic"]) == {"tie", "incorrect"}
    assert preference_frame([]).empty


def test_preference_data_carries_the_detectors_flags():
    praising = "Great question! It is 12."
    judge, _ = critic("longer", prefers_longer)
    report = critic_verifier_agreement(judge, [VerifiedGroup("What is 3 * 4?", ["12", praising], [True, False],
                                                             RUBRICS)])
    assert report.rate == 0.0  # the critic preferred the longer, wrong, praising answer
    chosen = [parse_verdict(e["chosen"][0]["content"], ["no_initial_praise"]) for e in
              preference_examples(report.disagreements)]
    assert [c.violations for c in chosen] == [{("B", "no_initial_praise")}, {("A", "no_initial_praise")}]
