"""LLM-backed user and judge behind ChatBackend, with small deterministic backends as the model."""

import json

import pytest

from k2core.agentic.llm_roles import STOP, JsonAsker, LLMJudge, LLMUser, parse_json, transcript
from k2core.llm import ChatRequest, ChatResponse, Usage

CONVO = [{"role": "system", "content": "sys"}, {"role": "user", "content": "book it"},
         {"role": "assistant", "content": "", "tool_calls": [{"id": "functions.book:0", "type": "function", "function": {"name": "book", "arguments": "{\"d\": 1}"}}]},
         {"role": "tool", "tool_call_id": "functions.book:0", "name": "book", "content": "{\"ok\": true}"},
         {"role": "assistant", "content": "Booked."}]


class VoteBackend:
    """Votes by seed: passes for seeds in `yes`, answers garbage for seeds in `junk`."""

    backend_id = "votes"

    def __init__(self, yes, junk=()):
        self.yes, self.junk, self.seen = set(yes), set(junk), []

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.seen.append(request)
        if request.seed in self.junk:
            text = "maybe"
        else:
            text = json.dumps({"passed": request.seed in self.yes, "score": 1.0 if request.seed in self.yes else 0.0, "reasons": ["checked"]})
        return ChatResponse(message={"role": "assistant", "content": text}, usage=Usage(prompt_tokens=3, completion_tokens=2))


def test_judge_majority_over_votes():
    rubric = {"checkpoints": [{"name": "book", "arguments": {"d": 1}}]}
    backend = VoteBackend(yes={5, 1005})
    passed, votes = LLMJudge(JsonAsker(backend, 0, 0.0, 128, 0), votes=3).judge(rubric, CONVO, seed=5)
    assert passed and [v["passed"] for v in votes] == [True, True, False]
    prompt = backend.seen[0].messages[0]["content"]
    assert '"checkpoints"' in prompt and "ASSISTANT CALLS book" in prompt and "TOOL book -> {\"ok\": true}" in prompt
    failing = VoteBackend(yes={5}, junk={1005})
    passed, votes = LLMJudge(JsonAsker(failing, 0, 0.0, 128, 0), votes=3).judge(rubric, CONVO, seed=5)
    assert not passed and votes[1]["reasons"] == ["no valid verdict"]
    with pytest.raises(ValueError, match="odd"):
        LLMJudge(JsonAsker(backend, 0, 0.0, 128, 0), votes=2)


class EchoUser:
    backend_id = "user"

    def __init__(self):
        self.requests = []

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.requests.append(request)
        text = f"Please book day 1. {STOP}" if len(self.requests) > 1 else "Hi, please book day 1."
        return ChatResponse(message={"role": "assistant", "content": text}, usage=Usage(prompt_tokens=1, completion_tokens=1))


def test_llm_user_plays_persona_and_stops():
    backend = EchoUser()
    user = LLMUser(backend, "Book day 1.", "terse", seed=9, temperature=0.7, max_tokens=64)
    assert user.first_message() == "Hi, please book day 1." and not user.done
    user.reply("Booked, anything else?")
    assert user.done
    system = backend.requests[1].messages[0]["content"]
    assert "Persona: terse" in system and "Book day 1." in system and STOP in system
    assert backend.requests[1].messages[-1] == {"role": "user", "content": "Booked, anything else?"}
    assert [r.seed for r in backend.requests] == [9, 10] and backend.requests[0].temperature == 0.7


def test_parse_json_and_transcript():
    assert parse_json("```json\n{\"a\": 1}\n```") == {"a": 1}
    assert transcript(CONVO).splitlines()[0] == "SYSTEM: sys"
