"""Faithfulness: a judge lists the claims of a response that its context does not support (K2 §3.2.1, in the
style of FACTS Grounding); reward 1 when the judge finds none, else 0.

Two judges behind one `Judge` protocol: `LLMJudge` asks any `ChatBackend` with a fixed prompt (temperature 0) and
parses its reply; `OverlapJudge` is an offline, non-LLM baseline that calls a sentence unsupported when too few of
its content words occur in the context, or when it holds a number the context does not (a changed figure is the
commonest unsupported claim and shifts the overlap by one word only). A sample is `{"context", "question"}`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Protocol

from k2core.llm import ChatBackend, ChatRequest
from k2core.rl.gym.config import GymConfig
from k2core.rl.gym.core import Info, Message, Sample, require, user_prompt
from k2core.rl.gym.extract import strip_reasoning

JUDGE_PROMPT = """You check whether a response is fully supported by a context.
List every claim in the response that the context does not support, one per line, as
UNSUPPORTED: <the claim>
If every claim is supported, write no such line. Then end with exactly one line:
VERDICT: FAITHFUL   (no unsupported claims) or   VERDICT: UNFAITHFUL   (at least one).

<context>
{context}
</context>

<response>
{response}
</response>"""
_CLAIM = re.compile(r"^[\s>*\-•\d.)]*unsupported(?: claim)?\**\s*[:\-]\s*\**\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_VERDICT = re.compile(r"verdict\W*\s*(unfaithful|faithful|not faithful)\b", re.IGNORECASE)
_NONE = re.compile(r"^(?:none|n/?a|nothing|-)\.?$", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
STOPWORDS = frozenset(
    "the and for are but not you all any can had her was one our out has his how its may new now see two who did "
    "let say she too use that with have this will your from they been were what when which their there than then "
    "them these those into also very some such only over most more just like does about would could should".split())


class JudgeError(RuntimeError):
    """The judge's reply had no verdict: a fault of the judge, never a verdict on the response."""


@dataclasses.dataclass(frozen=True)
class Judgement:
    faithful: bool
    unsupported: tuple[str, ...]


class Judge(Protocol):
    def judge(self, context: str, response: str) -> Judgement: ...


def parse_judgement(reply: str) -> Judgement:
    """The judge's unsupported claims and verdict; listed claims make a response unfaithful whatever it says."""
    verdicts = _VERDICT.findall(reply)
    if not verdicts:
        raise JudgeError(f"the faithfulness judge gave no VERDICT line: {reply[:200]!r}")
    claims = tuple(c.strip("* ") for c in _CLAIM.findall(reply) if not _NONE.match(c.strip("* ")))
    return Judgement(verdicts[-1].lower() == "faithful" and not claims, claims)


class LLMJudge:
    """Any chat model as the judge, asked deterministically with JUDGE_PROMPT."""

    def __init__(self, backend: ChatBackend, max_tokens: int = 512) -> None:
        self.backend = backend
        self.max_tokens = max_tokens

    def judge(self, context: str, response: str) -> Judgement:
        content = JUDGE_PROMPT.format(context=context, response=response)
        request = ChatRequest(messages=user_prompt(content), temperature=0.0, max_tokens=self.max_tokens)
        return parse_judgement(str(self.backend.complete(request).message.get("content") or ""))


def _content_words(text: str) -> set[str]:
    words = {w.rstrip(".,") for w in _WORD.findall(text.lower())}
    return {w.removesuffix("s") if len(w) > 4 else w for w in words
            if (len(w) >= 3 and w not in STOPWORDS) or any(ch.isdigit() for ch in w)}


class OverlapJudge:
    """Offline baseline: a sentence is unsupported when under `threshold` of its content words are in the context
    or one of its numbers is not."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def judge(self, context: str, response: str) -> Judgement:
        known = _content_words(context)
        unsupported = []
        for sentence in filter(None, (s.strip() for s in _SPLIT.split(response))):
            words = _content_words(sentence)
            new_numbers = any(ch.isdigit() for w in words - known for ch in w)
            if words and (new_numbers or len(words & known) / len(words) < self.threshold):
                unsupported.append(sentence)
        return Judgement(not unsupported, tuple(unsupported))


class FaithfulnessDomain:
    """Answer from a context; reward 1 when the judge finds no unsupported claim (an empty answer earns 0)."""

    def __init__(self, judge: Judge, name: str = "faithfulness") -> None:
        self.judge = judge
        self.name = name

    def prompt(self, sample: Sample) -> list[Message]:
        context, question = require(sample, self.name, "context", "question")
        return user_prompt(f"Answer using only the context.\n\nContext:\n{context}\n\nQuestion: {question}")

    def score(self, sample: Sample, response: str) -> tuple[float, Info]:
        (context,) = require(sample, self.name, "context")
        answer = strip_reasoning(response).strip()
        if not answer:
            return 0.0, {"faithful": False, "unsupported": [], "reason": "empty answer"}
        verdict = self.judge.judge(context, answer)
        return float(verdict.faithful), {"faithful": verdict.faithful, "unsupported": list(verdict.unsupported)}


def default_faithfulness(config: GymConfig) -> FaithfulnessDomain:
    """The registered offline domain (overlap baseline); an LLM-judged one is `FaithfulnessDomain(LLMJudge(b), name)`."""
    return FaithfulnessDomain(OverlapJudge(config.overlap_threshold))
