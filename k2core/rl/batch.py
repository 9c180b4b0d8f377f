"""Rollouts packed into right-padded tensors for the policy update.

Each row is prompt + response; only response positions count in the log-ratio. Right padding keeps
every row's positions starting at 0, and in a causal model real tokens never attend to the padding
after them, so a row's log-probs do not depend on what it was batched with.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PolicyBatch:
    """G prompts x K samples, flattened group-major into N = G*K rows."""

    input_ids: Tensor  # (N, T) long
    attention_mask: Tensor  # (N, T) long, 1 on real tokens
    response_mask: Tensor  # (N, T) bool, True on response tokens
    rewards: Tensor  # (G, K) float

    @property
    def num_rows(self) -> int:
        return self.input_ids.size(0)

    def micro_batches(self, size: int) -> Iterator[tuple[slice, Tensor, Tensor, Tensor]]:
        """Row slices with their tensors, trimmed to the slice's longest row."""
        for start in range(0, self.num_rows, size):
            rows = slice(start, min(start + size, self.num_rows))
            width = int(self.attention_mask[rows].sum(dim=1).max())
            yield (
                rows,
                self.input_ids[rows, :width],
                self.attention_mask[rows, :width],
                self.response_mask[rows, :width],
            )


def pack_rollouts(
    prompts: list[list[int]], responses: list[list[list[int]]], rewards: list[list[float]], pad_id: int
) -> PolicyBatch:
    """Pack `responses[g][i]` (the i-th of K samples for `prompts[g]`) with its reward `rewards[g][i]`."""
    k = len(responses[0])
    if any(len(group) != k for group in responses) or any(len(group) != k for group in rewards):
        raise ValueError("every prompt needs the same number K of responses and rewards")
    rows = [(prompt, response) for prompt, group in zip(prompts, responses, strict=True) for response in group]
    width = max(len(p) + len(r) for p, r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    response_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for row, (prompt, response) in enumerate(rows):
        n_p, n = len(prompt), len(prompt) + len(response)
        input_ids[row, :n] = torch.tensor(prompt + response, dtype=torch.long)
        attention_mask[row, :n] = 1
        response_mask[row, n_p:n] = True
    return PolicyBatch(input_ids, attention_mask, response_mask, torch.tensor(rewards, dtype=torch.float32))
