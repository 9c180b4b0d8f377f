"""The critic's pairwise judgement: a fixed prompt template and a robust parser of its verdict.

The critic is any `k2core.llm.ChatBackend`: the policy itself (a backend over the current weights) or a named
backend from params.yaml. It sees the rubrics, the user prompt and two responses labelled A and B, and replies with
two lines:

    VIOLATIONS: none | A:<rule key>, B:<rule key>, ...
    VERDICT: A | B | TIE

`parse_verdict` accepts the near-misses small models produce (markdown bold, "Response B", "[A]", a trailing
period, "draw"/"equal" for a tie, a reply that is just "B") and takes the last verdict when the reply has several;
a reply without one parses as `winner=None` (counted by the ranking, scored as a tie).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from k2core.llm.base import ChatBackend, ChatRequest
from k2core.rl.rubric.rubrics import RubricSet

Slot = Literal["A", "B"]

SYSTEM = ("You are a strict, impartial critic. You compare two assistant responses to the same user prompt "
          "against the given rubrics and your own judgement of quality, and you answer in the requested format.")

TEMPLATE = """Judge which response better serves the user.

# Rubrics
{rubrics}

# Prescriptive rules
A response that breaks one of these rules loses, whatever its other qualities:
{rules}

# User prompt
{prompt}

# Response A
{response_a}

# Response B
{response_b}

Weigh the rubrics against your own judgement. Then reply with exactly two lines and nothing else:
VIOLATIONS: <"none", or the broken rules as A:<rule key> or B:<rule key>, comma-separated>
VERDICT: <A, B or TIE>"""


def render_rubrics(rubrics: RubricSet) -> tuple[str, str]:
    """The rubric block (core and human rubrics) and the prescriptive rule block of the template."""
    blocks = []
    for rubric in rubrics.rubrics:
        if rubric.kind == "prescriptive":
            continue
        lines = [f"## {rubric.name} (v{rubric.version})"]
        lines += [f"- {c.title}: {c.text}" for c in rubric.criteria]
        blocks.append("\n".join(lines))
    rules = "\n".join(f"- {c.key} ({c.title}): {c.text}" for c in rubrics.prescriptive_criteria()) or "- none"
    return "\n\n".join(blocks), rules


def critic_messages(rubrics: RubricSet, prompt: str, response_a: str, response_b: str) -> list[dict[str, str]]:
    """The chat messages of one judgement (OpenAI-style), A and B in the order given."""
    rubric_text, rules = render_rubrics(rubrics)
    user = TEMPLATE.format(rubrics=rubric_text, rules=rules, prompt=prompt.strip(),
                           response_a=response_a.strip(), response_b=response_b.strip())
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def verdict_text(winner: Literal["A", "B", "TIE"], violations: Collection[tuple[Slot, str]] = ()) -> str:
    """The reply the template asks for (also the target text of critic refinement data)."""
    flagged = ", ".join(f"{slot}:{key}" for slot, key in sorted(violations)) or "none"
    return f"VIOLATIONS: {flagged}\nVERDICT: {winner}"


@dataclass(frozen=True)
class Verdict:
    """One parsed critic reply: the winner slot ("A", "B", "tie"; None when unparseable) and flagged rules."""

    winner: Literal["A", "B", "tie"] | None
    violations: frozenset[tuple[Slot, str]] = frozenset()


_VERDICT = re.compile(
    r"verdict\W{0,6}?(?:is\W{0,3})?(?:response\s+|answer\s+|option\s+)?\W{0,3}"
    r"(tie|draw|equal|a|b)(?![a-z0-9])(?!\s*(?:/|or|and|,)\s*(?:b|a)\b)",
    re.IGNORECASE,
)
_BARE = re.compile(r"^\W*(?:response\s+)?(tie|draw|equal|a|b)\W*$", re.IGNORECASE)
_VIOLATIONS = re.compile(r"violations?\W{0,4}(.*)", re.IGNORECASE)
_FLAG = re.compile(r"\b(?:response\s+)?([ab])\s*[:=\-]\s*([a-z][a-z _\-]*)", re.IGNORECASE)


def _winner(token: str) -> Literal["A", "B", "tie"]:
    token = token.lower()
    return "A" if token == "a" else "B" if token == "b" else "tie"


def _rule_key(text: str) -> str:
    return re.sub(r"[\s\-]+", "_", text.strip().lower()).strip("_")


def parse_verdict(reply: str, rule_keys: Collection[str] = ()) -> Verdict:
    """The verdict and prescriptive flags in a critic reply; flags naming unknown rules are ignored."""
    matches = list(_VERDICT.finditer(reply))
    if matches:
        winner: Literal["A", "B", "tie"] | None = _winner(matches[-1].group(1))
    else:
        bare = _BARE.match(reply.strip())
        winner = _winner(bare.group(1)) if bare else None
    keys = set(rule_keys)
    flags: set[tuple[Slot, str]] = set()
    for line in reply.splitlines():
        found = _VIOLATIONS.search(line)
        if not found:
            continue
        for part in re.split(r"[,;]", found.group(1)):
            flag = _FLAG.search(part)
            if flag and _rule_key(flag.group(2)) in keys:
                flags.add((flag.group(1).upper(), _rule_key(flag.group(2))))  # type: ignore[arg-type]
    return Verdict(winner=winner, violations=frozenset(flags))


class Critic:
    """Asks a chat backend for one pairwise verdict at temperature 0 (deterministic for a deterministic backend)."""

    def __init__(self, backend: ChatBackend, max_tokens: int = 64) -> None:
        self.backend = backend
        self.max_tokens = max_tokens

    def judge(self, rubrics: RubricSet, prompt: str, response_a: str, response_b: str) -> Verdict:
        request = ChatRequest(messages=critic_messages(rubrics, prompt, response_a, response_b),
                              temperature=0.0, max_tokens=self.max_tokens)
        reply = self.backend.complete(request).message.get("content") or ""
        return parse_verdict(reply, [c.key for c in rubrics.prescriptive_criteria()])
