"""Sampling with a KV cache: many samples of one prompt, or a left-padded batch of prompts.

One decoder serves every k2 model family: K2ForCausalLM (MLA latent cache) and LlamaFamilyForCausalLM (GQA key/value
cache). A model only has to take k2's forward signature and return, per layer, a tuple of cache tensors whose first
dimension is the batch (``past_key_values``); the decoder never looks inside them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm


def nucleus_mask(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The tokens nucleus sampling may draw (bool, shape of ``probs``): the smallest prefix by descending probability
    whose mass reaches top_p (the first token is always kept). RL's log-probs (k2core.rl.loss) use the same rule."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p
    return torch.zeros_like(keep).scatter_(-1, order, keep)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
            ) -> torch.Tensor:
    """Next token per row of logits [B, V]: argmax at temperature 0, else nucleus sampling."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        probs = probs.masked_fill(~nucleus_mask(probs, top_p), 0.0)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def _decode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_samples: int,
            max_new_tokens: int, temperature: float, eos: set[int], top_p: float,
            generator: torch.Generator | None, show_progress: bool) -> list[list[int]]:
    """Prefill [P, T] left-padded prompts once, fan each out to ``num_samples`` rows (prompt-major), then decode one
    token per step for all rows until every row has produced an EOS or the budget is spent."""
    was_training = model.training
    model.eval()
    try:
        positions = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
        out = model(input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                    logits_to_keep=1)

        def fan_out(t: torch.Tensor) -> torch.Tensor:
            return t.repeat_interleave(num_samples, dim=0)

        cache: list[Any] = [tuple(fan_out(t) for t in layer) for layer in out.past_key_values]
        logits = fan_out(out.logits[:, -1])
        attention_mask = fan_out(attention_mask)
        next_pos = fan_out(positions[:, -1:]) + 1
        rows = logits.shape[0]
        done = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        eos_ids = torch.tensor(sorted(eos), dtype=torch.long, device=input_ids.device)
        completions: list[list[int]] = [[] for _ in range(rows)]
        for _ in tqdm(range(max_new_tokens), desc="generate", disable=not show_progress, leave=False):
            token = _sample(logits, temperature, top_p, generator)
            for row in torch.nonzero(~done).flatten().tolist():
                completions[row].append(int(token[row]))
            done |= torch.isin(token, eos_ids)
            if bool(done.all()):
                break
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
            out = model(token[:, None], attention_mask=attention_mask, position_ids=next_pos,
                        past_key_values=cache, use_cache=True)
            cache, logits, next_pos = out.past_key_values, out.logits[:, -1], next_pos + 1
        return completions
    finally:
        model.train(was_training)


def _left_pad(prompts: list[list[int]], pad_token_id: int, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor]:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (start prompts with a BOS token)")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


def generate(model: nn.Module, prompt_ids: list[int], num_samples: int, max_new_tokens: int,
             temperature: float, eos_token_ids: Iterable[int], top_p: float = 1.0,
             generator: torch.Generator | None = None, show_progress: bool = False) -> list[list[int]]:
    """``num_samples`` completions of one prompt (token ids, cut after the first EOS, which is kept)."""
    ids, mask = _left_pad([prompt_ids], 0, next(model.parameters()).device)
    return _decode(model, ids, mask, num_samples, max_new_tokens, temperature, set(eos_token_ids), top_p,
                   generator, show_progress)


def generate_batch(model: nn.Module, prompts: list[list[int]], max_new_tokens: int, temperature: float,
                   eos_token_ids: Iterable[int], top_p: float = 1.0, generator: torch.Generator | None = None,
                   num_samples: int = 1, pad_token_id: int = 0, show_progress: bool = False) -> list[list[int]]:
    """``num_samples`` completions for each of several prompts of different lengths (left padding + attention
    mask), returned prompt-major: rows ``i * num_samples ... (i + 1) * num_samples - 1`` belong to prompt i."""
    ids, mask = _left_pad(prompts, pad_token_id, next(model.parameters()).device)
    return _decode(model, ids, mask, num_samples, max_new_tokens, temperature, set(eos_token_ids), top_p,
                   generator, show_progress)
