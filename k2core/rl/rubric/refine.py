"""A DPO refinement step for a k2-checkpoint critic on the closed loop's preference data.

The data are `closed_loop.preference_frame` rows: the critic's judging conversation (`prompt`), the verdict naming
the verified-correct response (`chosen`) and the other verdict (`rejected`). The loss is DPO's,
-log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))), with sequence log-probs summed over the
reply tokens only (the assistant segments of K2's chat format, as the SFT stage masks them) and `ref` the critic
before refinement (frozen). A row longer than `max_len` keeps its last `max_len` tokens: the start of the judging
prompt is dropped, never the reply. Scheduling it (how often, on which iteration's data, where the refined critic is
published) is the RL trainer's job.
"""

from __future__ import annotations

import json

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from k2core.chat import render_segments
from k2core.rl.encoding import encode_segments, pad_masked_rows, pad_token_id
from k2core.rl.loss import sequence_logprobs


def dpo_loss(chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float) -> Tensor:
    """Mean DPO loss over a batch of sequence log-probs."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean()


def _encode(tokenizer: PreTrainedTokenizerBase, prompt: list[dict], reply: list[dict], max_len: int
            ) -> tuple[list[int], list[bool]]:
    ids, mask = encode_segments(tokenizer, render_segments([*prompt, *reply]))
    if sum(mask) >= max_len:
        raise ValueError(f"a critic reply of {sum(mask)} tokens does not fit max_len={max_len}; raise max_len")
    return ids[-max_len:], mask[-max_len:]


def preference_batch(tokenizer: PreTrainedTokenizerBase, frame: pd.DataFrame, max_len: int
                     ) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """(ids, attention, reply mask) of the chosen and of the rejected conversations of the frame's rows."""
    prompts = [json.loads(p) for p in frame["prompt"]]
    pad_id = pad_token_id(tokenizer)
    chosen = [_encode(tokenizer, p, json.loads(c), max_len) for p, c in zip(prompts, frame["chosen"], strict=True)]
    rejected = [_encode(tokenizer, p, json.loads(r), max_len) for p, r in zip(prompts, frame["rejected"], strict=True)]
    return pad_masked_rows(chosen, pad_id), pad_masked_rows(rejected, pad_id)


def refine_critic(critic: nn.Module, reference: nn.Module, tokenizer: PreTrainedTokenizerBase, frame: pd.DataFrame,
                  optimizer: torch.optim.Optimizer, beta: float = 0.1, batch_size: int = 4, max_len: int = 512
                  ) -> list[float]:
    """One pass over the preference rows in order, one optimizer step per batch; returns each batch's loss."""
    if frame.empty:
        raise ValueError("no critic preference rows to refine on (the critic agreed with every verifier)")
    reference.eval()
    critic.train()
    losses = []
    for start in range(0, len(frame), batch_size):
        chosen, rejected = preference_batch(tokenizer, frame.iloc[start:start + batch_size], max_len)
        with torch.no_grad():
            ref_c, ref_r = sequence_logprobs(reference, *chosen), sequence_logprobs(reference, *rejected)
        loss = dpo_loss(sequence_logprobs(critic, *chosen), sequence_logprobs(critic, *rejected), ref_c, ref_r, beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses
