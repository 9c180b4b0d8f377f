"""K2's per-task token budget: over-budget responses are truncated and their reward is replaced.

K2 (§3.2) enforces "a per-sample maximum token budget ... determined based on the type of task";
responses that exceed it "are truncated and assigned a penalty". We *replace* the reward of a
truncated response with the penalty instead of adding the penalty to its score: a rambling
response that happens to contain a correct `\\boxed{}` before the cut must not out-score a short
correct one, and replacement keeps the reward range independent of the verifier's scale.
A truncated response stays in the loss (its tokens were sampled by the policy), so the penalty
pushes probability away from running long.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping


def budget_for(task_type: str, budgets: Mapping[str, int]) -> int:
    """The maximum number of response tokens for a task type: its own entry, else its family's (the part before
    the first '/', so `rg: 256` covers every reasoning-gym domain `rg/<dataset>`)."""
    for key in (task_type, task_type.split("/", 1)[0]):
        if key in budgets:
            return budgets[key]
    raise KeyError(
        f"no token budget for task type {task_type!r}; add it to rl.token_budgets (have {sorted(budgets)})"
    )


def enforce_budget(response: list[int], budget: int, eos_token_ids: Collection[int]) -> tuple[list[int], bool]:
    """Cut `response` to the budget; truncated means it did not end (no EOS) within `budget` tokens.

    Works whether or not the generator returns the EOS token: a response shorter than the budget
    has finished either way.
    """
    for i, token in enumerate(response[:budget]):
        if token in eos_token_ids:
            return response[: i + 1], False
    if len(response) < budget:
        return list(response), False
    return response[:budget], True


def budgeted_reward(score: float, truncated: bool, penalty: float) -> float:
    """The score, or the penalty in its place for a truncated response."""
    return penalty if truncated else score
