"""Faithfulness rewards: the judge prompt through a deterministic ChatBackend, robust parsing of judge replies, and
the offline token-overlap baseline, on real strings."""

from __future__ import annotations

import re

import pytest

from k2core.llm import ChatBackend, ChatRequest, ChatResponse, Usage
from k2core.rl.gym import FaithfulnessDomain, JudgeError, LLMJudge, OverlapJudge, make_env, score
from k2core.rl.gym.faithfulness import parse_judgement

SAMPLE = {"context": "The Eiffel Tower was completed in 1889. It is 330 metres tall and stands in Paris.",
          "question": "When was the Eiffel Tower completed and how tall is it?"}
FAITHFUL = "The Eiffel Tower was completed in 1889. It is 330 metres tall."
INVENTED = "The Eiffel Tower was completed in 1889. It was designed by Gustave Eiffel's rival, Maurice Koechlin, in 1901."


class NumberCheckingJudge:
    """A deterministic judge model: a response sentence whose numbers are not all in the context is unsupported.
    It answers in a markdown style (bold verdict, bulleted claims) to exercise the parser."""

    backend_id = "fake-judge"

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        text = request.messages[-1]["content"]
        context = re.search(r"<context>\n(.*)\n</context>", text, re.DOTALL).group(1)
        response = re.search(r"<response>\n(.*)\n</response>", text, re.DOTALL).group(1)
        bad = [s for s in re.split(r"(?<=\.)\s+", response)
               if not set(re.findall(r"\d+", s)) <= set(re.findall(r"\d+", context))]
        lines = [f"- **Unsupported:** {s}" for s in bad] or ["Unsupported: none"]
        verdict = "**VERDICT: UNFAITHFUL**" if bad else "Verdict - faithful"
        reply = "Checking each claim.\n" + "\n".join(lines) + f"\n\n{verdict}"
        return ChatResponse(message={"role": "assistant", "content": reply}, usage=Usage(prompt_tokens=1,
                                                                                          completion_tokens=1))


def test_llm_judge_reward_follows_the_judges_verdict() -> None:
    backend = NumberCheckingJudge()
    assert isinstance(backend, ChatBackend)
    domain = FaithfulnessDomain(LLMJudge(backend), name="faithfulness_test_judge")
    assert domain.score(SAMPLE, FAITHFUL) == (1.0, {"faithful": True, "unsupported": []})
    reward, info = domain.score(SAMPLE, INVENTED)
    assert reward == 0.0
    assert info["unsupported"] == ["It was designed by Gustave Eiffel's rival, Maurice Koechlin, in 1901."]
    request = backend.requests[-1]
    assert request.temperature == 0.0 and SAMPLE["context"] in request.messages[0]["content"]
    assert domain.score(SAMPLE, "<think>maybe 1900?</think>")[1]["reason"] == "empty answer"
    assert len(backend.requests) == 2  # an empty answer never reaches the judge


def test_parser_handles_reply_variants_and_refuses_a_reply_without_verdict() -> None:
    assert parse_judgement("VERDICT: FAITHFUL").faithful
    assert parse_judgement("Unsupported: None.\nverdict: Faithful").unsupported == ()
    claims = "1. UNSUPPORTED: Paris is in Italy.\n2) unsupported claim - It is 500 m tall\n"
    j = parse_judgement(claims + "VERDICT: UNFAITHFUL")
    assert not j.faithful and j.unsupported == ("Paris is in Italy.", "It is 500 m tall")
    assert parse_judgement(claims + "Verdict: not faithful") == j
    # a judge that lists a claim but says FAITHFUL is taken at its list
    assert not parse_judgement("UNSUPPORTED: It opened in 1901.\nVERDICT: FAITHFUL").faithful
    with pytest.raises(JudgeError, match="no VERDICT line"):
        parse_judgement("I think the response is mostly fine.")


def test_overlap_baseline_flags_sentences_the_context_does_not_contain() -> None:
    judge = OverlapJudge(threshold=0.5)
    assert judge.judge(SAMPLE["context"], FAITHFUL).faithful
    verdict = judge.judge(SAMPLE["context"], INVENTED)
    assert verdict.unsupported == ("It was designed by Gustave Eiffel's rival, Maurice Koechlin, in 1901.",)
    assert not judge.judge(SAMPLE["context"], "The tower is 324 metres tall.").faithful  # a changed number
    # the registered offline domain uses it
    assert score("faithfulness", SAMPLE, FAITHFUL)[0] == 1.0
    assert score("faithfulness", SAMPLE, INVENTED)[0] == 0.0
    env = make_env("faithfulness", samples=[SAMPLE])
    assert "Context:\nThe Eiffel Tower" in env.reset(0)[0]["content"]
    assert env.step({"role": "assistant", "content": FAITHFUL}).reward == 1.0
