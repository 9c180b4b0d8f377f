"""K2's unified RL: k1.5 policy loss, verifiable rewards, token budgets, temperature decay, PTX."""

from k2core.rl.budget import budget_for, budgeted_reward, enforce_budget
from k2core.rl.loss import group_advantages, k15_loss, k15_terms, masked_nll, sequence_logprobs
from k2core.rl.rewards import RewardScorer, extract_answer, get_reward, register_reward
from k2core.rl.temperature import TemperatureSchedule, temperature_at
from k2core.rl.trainer import RLConfig, policy_update, rl, sample_responses

__all__ = [
    "RLConfig",
    "RewardScorer",
    "TemperatureSchedule",
    "budget_for",
    "budgeted_reward",
    "enforce_budget",
    "extract_answer",
    "get_reward",
    "group_advantages",
    "k15_loss",
    "k15_terms",
    "masked_nll",
    "policy_update",
    "register_reward",
    "rl",
    "sample_responses",
    "sequence_logprobs",
    "temperature_at",
]
