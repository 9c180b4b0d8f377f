"""Accuracy on held-out math problems: greedy answers scored by the RL math reward.

Prompts are built exactly as in RL (one user turn + the assistant generation prompt), so the
benchmark measures the behaviour RL optimises, and answers are checked by the same verifier.
"""

from __future__ import annotations

import pandas as pd
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from k2core.model import generate_batch
from k2core.rl.encoding import math_prompt_ids, pad_token_id, stop_token_ids
from k2core.rl.rewards import RewardScorer


def evaluate_math(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    problems: pd.DataFrame,
    max_new_tokens: int,
    batch_size: int,
    timeout_s: float,
) -> dict[str, float]:
    """`math_accuracy` over `problems` (`question`, `answer` columns), plus mean length and unfinished rate."""
    if problems.empty:
        raise ValueError("no math problems to evaluate; check that math.parquet has a 'test' split")
    prompts = [math_prompt_ids(tokenizer, q) for q in problems["question"]]
    eos = stop_token_ids(tokenizer)
    scorer = RewardScorer(timeout_s)
    correct, lengths, unfinished = 0.0, 0, 0
    for start in tqdm(range(0, len(prompts), batch_size), desc="math eval", unit="batch", leave=False):
        outputs = generate_batch(model, prompts[start:start + batch_size], max_new_tokens=max_new_tokens,
                                 temperature=0.0, eos_token_ids=eos, pad_token_id=pad_token_id(tokenizer))
        for output, answer in zip(outputs, problems["answer"].iloc[start:start + batch_size], strict=True):
            correct += scorer("math", tokenizer.decode(output, skip_special_tokens=True), answer)["score"]
            lengths += len(output)
            unfinished += int(not output or output[-1] not in eos)
    n = len(prompts)
    return {
        "math_accuracy": correct / n,
        "math_response_len": lengths / n,
        "math_unfinished_rate": unfinished / n,
        "math_problems": float(n),
        "math_reward_errors": float(sum(scorer.errors.values())),
    }
