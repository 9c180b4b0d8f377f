"""Procedural IFEval-format prompts for RL: a writing task plus one to three checkable instructions, from a seed.

IFEval's own prompts and IFBench's are evaluation sets (k2core.eval), so RL must not train on them; these prompts
use the same instruction ids and argument names (k2core.eval.ifeval_checks), so the same strict checkers score
them. Pairs that contradict each other (lowercase-only with a "P.S." postscript or a title in capitals) are never
drawn together. `generate_instructions(seed)` is deterministic.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

from k2core.rl.gym.core import Sample

SUBJECTS = ("the ocean at dawn", "a city at night", "learning to cook", "a favourite book", "winter mornings",
            "old trains", "a small garden", "the moon", "a rainy afternoon", "friendship", "a mountain walk",
            "the first day at a new school")
TASKS = ("Write a short essay about {subject}.", "Write a short story about {subject}.",
         "Describe {subject} for a friend.", "Write a blog post about {subject}.")
KEYWORDS = ("light", "quiet", "river", "window", "bread", "history", "music", "green", "morning", "stone")
END_PHRASES = ("that is all for now.", "thank you for reading.", "any other questions?")


@dataclasses.dataclass(frozen=True)
class Instruction:
    instruction_id: str
    kwargs: Callable[[random.Random], dict[str, Any]]
    text: str  # formatted with the kwargs


INSTRUCTIONS: tuple[Instruction, ...] = (
    Instruction("change_case:english_lowercase", lambda r: {},
                "Your entire response must be in English and in lowercase letters; no capital letters are allowed."),
    Instruction("punctuation:no_comma", lambda r: {}, "Do not use any commas in your response."),
    Instruction("length_constraints:number_paragraphs", lambda r: {"num_paragraphs": r.randint(2, 4)},
                "Write exactly {num_paragraphs} paragraphs, separated from each other by the markdown divider ***."),
    Instruction("length_constraints:number_words",
                lambda r: {"relation": r.choice(("at least", "less than")), "num_words": r.choice((30, 50, 80))},
                "Answer with {relation} {num_words} words."),
    Instruction("detectable_format:number_bullet_lists", lambda r: {"num_bullets": r.randint(2, 5)},
                "Your answer must contain exactly {num_bullets} bullet points, using markdown bullets such as:\n"
                "* This is a point.\n"),
    Instruction("detectable_format:title", lambda r: {},
                "Give your answer a title wrapped in double angular brackets, such as <<a quiet place>>."),
    Instruction("detectable_content:postscript", lambda r: {"postscript_marker": r.choice(("P.S.", "P.P.S"))},
                "At the end of your response, add a postscript starting with {postscript_marker}"),
    Instruction("startend:end_checker", lambda r: {"end_phrase": r.choice(END_PHRASES)},
                "Finish your response with this exact phrase: {end_phrase} No other words should follow it."),
    Instruction("keywords:existence", lambda r: {"keywords": sorted(r.sample(KEYWORDS, 2))},
                "Include the keywords {keywords} in the response."),
)
CONFLICTS = {frozenset({"change_case:english_lowercase", "detectable_content:postscript"})}


def _compatible(chosen: list[Instruction], candidate: Instruction) -> bool:
    return all(frozenset({c.instruction_id, candidate.instruction_id}) not in CONFLICTS for c in chosen)


def generate_instructions(seed: int, max_instructions: int = 3) -> Sample:
    """One IFEval-format sample (`key`, `prompt`, `instruction_id_list`, `kwargs`) for `seed`."""
    rng = random.Random(seed)
    chosen: list[Instruction] = []
    wanted = rng.randint(1, max_instructions)
    for candidate in rng.sample(INSTRUCTIONS, len(INSTRUCTIONS)):
        if len(chosen) == wanted:
            break
        if _compatible(chosen, candidate):
            chosen.append(candidate)
    kwargs = [instruction.kwargs(rng) for instruction in chosen]
    task = rng.choice(TASKS).format(subject=rng.choice(SUBJECTS))
    rules = " ".join(instruction.text.format(**kw) for instruction, kw in zip(chosen, kwargs, strict=True))
    return {"key": f"k2-rl-ifeval-{seed}", "prompt": f"{task} {rules}",
            "instruction_id_list": [i.instruction_id for i in chosen], "kwargs": kwargs}
