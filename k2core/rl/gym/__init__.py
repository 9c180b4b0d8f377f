"""The verifiable rewards gym (K2 §3.2.1, single-turn part): one Env/Domain interface, one registry, one `score`.

Registered domains (default GymConfig): `math`, `rg/<dataset>` for reasoning-gym's countdown, puzzle24 (the 24
game), sudoku, knights_knaves, basic_arithmetic and codeio, `code` (function synthesis with hidden tests run in
the sandbox), `ifeval` (IFEval/IFBench checkers with the compliance-claim hack-check; generated prompts), `faithfulness` (offline
overlap judge). `score(domain, sample, response) -> (reward, info)`; `make_env(name, samples=None)`.
"""

from k2core.rl.gym.code import CodeDomain
from k2core.rl.gym.config import GymConfig
from k2core.rl.gym.core import (
    Domain, Env, GymError, ProceduralDomain, SingleTurnEnv, StepResult, domains, get_domain, make_env,
    register_domain, score,
)
from k2core.rl.gym.difficulty import Rated, filter_moderate, moderate, rate
from k2core.rl.gym.faithfulness import FaithfulnessDomain, JudgeError, LLMJudge, OverlapJudge, default_faithfulness
from k2core.rl.gym.instruct import InstructionDomain
from k2core.rl.gym.stem import REASONING_GYM_DATASETS, MathDomain, ReasoningGymDomain


def _register_defaults(config: GymConfig) -> None:
    for domain in (MathDomain(config), CodeDomain(config), InstructionDomain(config), default_faithfulness(config),
                   *(ReasoningGymDomain(name, config) for name in REASONING_GYM_DATASETS)):
        register_domain(domain)


_register_defaults(GymConfig())

__all__ = [
    "CodeDomain", "Domain", "Env", "FaithfulnessDomain", "GymConfig", "GymError", "InstructionDomain", "JudgeError",
    "LLMJudge", "MathDomain", "OverlapJudge", "ProceduralDomain", "Rated", "ReasoningGymDomain", "SingleTurnEnv",
    "StepResult", "default_faithfulness", "domains", "filter_moderate", "get_domain", "make_env", "moderate", "rate",
    "register_domain", "score",
]
