"""Math, STEM and logic domains: math-verify answers and reasoning-gym's procedural puzzles with their verifiers.

`math`: a sample `{"prompt", "answer"}`; the final answer (extract.py) must equal the reference under
k2core.rl.rewards.answers_match (math-verify in its worker subprocess). `rg/<dataset>`: reasoning-gym 0.1.25's
generators (the 24 game is `puzzle24` there); a sample is reasoning-gym's entry (`question`, `answer`, `metadata`)
plus `prompt`, and the reward is the dataset's own `score_answer` on the extracted answer.
"""

from __future__ import annotations

import functools
from typing import Any

from k2core.rl.gym.config import GymConfig
from k2core.rl.gym.core import Info, Message, Sample, require, user_prompt
from k2core.rl.gym.extract import extract_final_answer
from k2core.rl.rewards import answers_match

ANSWER_FORMAT = "\n\nGive your final answer inside <answer></answer> tags."
REASONING_GYM_DATASETS = ("countdown", "puzzle24", "sudoku", "knights_knaves", "basic_arithmetic", "codeio")


class MathDomain:
    """Free-form math answers checked by math-verify."""

    name = "math"

    def __init__(self, config: GymConfig) -> None:
        self.timeout_s = config.math_timeout_s

    def prompt(self, sample: Sample) -> list[Message]:
        (text,) = require(sample, self.name, "prompt")
        return user_prompt(text)

    def score(self, sample: Sample, response: str) -> tuple[float, Info]:
        (gold,) = require(sample, self.name, "answer")
        answer = extract_final_answer(response)
        if answer is None:
            return 0.0, {"extracted": None, "reason": "no single final answer"}
        return float(answers_match(str(gold), answer, self.timeout_s)), {"extracted": answer}


class ReasoningGymDomain:
    """One reasoning-gym dataset as a procedural domain; `generate(seed)` is its entry number `seed`."""

    def __init__(self, dataset: str, config: GymConfig) -> None:
        self.dataset = dataset
        self.name = f"rg/{dataset}"
        self.config = config

    @functools.cached_property
    def _data(self) -> Any:
        import reasoning_gym  # noqa: PLC0415 - heavy; only when a reasoning-gym domain is used

        return reasoning_gym.create_dataset(
            self.dataset, size=self.config.reasoning_gym_size, seed=self.config.reasoning_gym_seed)

    def generate(self, seed: int) -> Sample:
        entry = self._data[seed % self.config.reasoning_gym_size]
        return {**entry, "prompt": entry["question"] + ANSWER_FORMAT}

    def prompt(self, sample: Sample) -> list[Message]:
        (text,) = require(sample, self.name, "prompt")
        return user_prompt(text)

    def score(self, sample: Sample, response: str) -> tuple[float, Info]:
        require(sample, self.name, "question", "answer", "metadata")
        answer = extract_final_answer(response, fallback_whole=True)
        if answer is None:
            return 0.0, {"extracted": None, "reason": "no single final answer"}
        return float(self._data.score_answer(answer, sample)), {"extracted": answer}
