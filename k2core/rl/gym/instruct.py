"""Instruction following: reward from our IFEval/IFBench checkers, with K2's hack-check on compliance claims.

A sample is one IFEval-format row (`key`, `prompt`, `instruction_id_list`, `kwargs`), given or generated from a
seed (`generate`, instruct_gen.py). The reward is the share of its instructions followed under the *strict* check
(k2core.eval.ifeval). Hack-check: a response that says it
complied ("Here is my answer in exactly 3 paragraphs", "I have followed all the constraints") where the checker
says it did not loses `false_claim_penalty`, so claiming compliance is worth less than saying nothing.

The claim detector, kept small on purpose: a sentence is a claim when it speaks about the response itself (a
framing phrase such as "here is", "my answer", "this response", "I have", "as requested"); the constraint topics it
names (paragraphs, bullets, words, sentences, lowercase, capitals, commas, JSON, sections, placeholders, title,
postscript, or "all the instructions") select the instructions of the sample it refers to. A claim is false when
one of those instructions failed (a generic claim: when any failed). A claim about a constraint the sample did not
set is not judged (its arguments are unknown), and claims are only looked for outside the reasoning.
"""

from __future__ import annotations

import json
import re

from k2core.eval.ifeval import check_response, read_records
from k2core.rl.gym.config import GymConfig
from k2core.rl.gym.core import Info, Message, Sample, user_prompt
from k2core.rl.gym.extract import strip_reasoning
from k2core.rl.gym.instruct_gen import generate_instructions

_FRAMING = re.compile(
    r"\b(here is|here's|here are|below is|below are|i have|i've|i wrote|i kept|i used|i made|i ensured|"
    r"my (?:answer|response|reply|essay|text)|this (?:answer|response|reply|essay|text)|the (?:answer|response) "
    r"(?:is|has|uses|contains|follows)|as (?:requested|instructed|required|asked)|in compliance|complies|"
    r"following (?:the|your|all) (?:instructions|constraints|requirements|rules))\b", re.IGNORECASE)
# topic -> (claim keywords, substrings of the instruction ids it refers to); "all" refers to every instruction
TOPICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "paragraphs": (r"paragraphs?", ("number_paragraphs", "nth_paragraph")),
    "bullets": (r"bullet(?:s| points?| lists?)?", ("number_bullet_lists",)),
    "words": (r"words?\b(?! in (?:all )?(?:lower|upper|capital))", ("number_words",)),
    "sentences": (r"sentences?", ("number_sentences",)),
    "lowercase": (r"lower[- ]?case|lowercase letters", ("english_lowercase",)),
    "capitals": (r"upper[- ]?case|all capital|capital letters|all caps", ("english_capital",)),
    "commas": (r"commas?", ("no_comma",)),
    "json": (r"json", ("json_format",)),
    "sections": (r"sections?", ("multiple_sections", "number_highlighted_sections")),
    "placeholders": (r"placeholders?", ("number_placeholders",)),
    "title": (r"title", ("detectable_format:title",)),
    "postscript": (r"postscript|p\.s\.", ("postscript",)),
    "all": (r"(?:all|every|each)(?: of)? (?:the |your |of the )?(?:instructions|constraints|requirements|rules)|"
            r"as (?:requested|instructed|required|asked)|in compliance|complies", ()),
}
_TOPIC_RES = {name: re.compile(rf"\b(?:{pattern})", re.IGNORECASE) for name, (pattern, _) in TOPICS.items()}
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def claimed_topics(response: str) -> list[tuple[str, str]]:
    """(topic, sentence) for each constraint topic the response claims about itself."""
    found = []
    for sentence in _SENTENCE.findall(strip_reasoning(response)):
        if _FRAMING.search(sentence):
            found += [(topic, sentence.strip()) for topic, regex in _TOPIC_RES.items() if regex.search(sentence)]
    return found


def false_claims(response: str, verdicts: dict[str, bool]) -> list[dict[str, str]]:
    """The claims that the checkers' verdicts (instruction id -> strict pass) contradict."""
    false = []
    for topic, sentence in claimed_topics(response):
        ids = TOPICS[topic][1]
        about = [i for i in verdicts if not ids or any(part in i for part in ids)]
        failed = [i for i in about if not verdicts[i]]
        if failed:
            false.append({"topic": topic, "sentence": sentence, "failed": ", ".join(failed)})
    return false


class InstructionDomain:
    """IFEval/IFBench instructions: strict share followed, minus a penalty for false compliance claims."""

    name = "ifeval"

    def __init__(self, config: GymConfig) -> None:
        self.penalty = config.false_claim_penalty

    def generate(self, seed: int) -> Sample:
        """A generated IFEval-format sample (instruct_gen.py): RL never trains on IFEval's or IFBench's prompts."""
        return generate_instructions(seed)

    def prompt(self, sample: Sample) -> list[Message]:
        return user_prompt(self._record(sample).prompt)

    def _record(self, sample: Sample):  # noqa: ANN202 - k2core.eval.ifeval.Record
        return read_records([json.dumps(sample)], f"{self.name} sample")[0]

    def score(self, sample: Sample, response: str) -> tuple[float, Info]:
        result = check_response(self._record(sample), strip_reasoning(response))
        verdicts: dict[str, bool] = {}
        for i in result.instructions:  # an id given twice passes only when both pass
            verdicts[i.instruction_id] = verdicts.get(i.instruction_id, True) and i.strict
        followed = sum(i.strict for i in result.instructions) / len(result.instructions)
        claims = false_claims(response, verdicts)
        reward = followed - (self.penalty if claims else 0.0)
        return reward, {"followed": followed, "verdicts": verdicts, "false_claims": claims,
                        "reasons": {i.instruction_id: i.reason for i in result.instructions}}
