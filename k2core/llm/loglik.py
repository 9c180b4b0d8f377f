"""Log-likelihoods of continuations of a plain-text prompt: what multiple-choice benchmarks score local models by.

Chat APIs only return generated text, so only backends that hold the model (a local HF folder or GGUF file, a k2
checkpoint) can answer `loglikelihood`. The prompt is raw text (no chat template), preceded by `prefix_ids` (the
tokens a document starts with for that model). A continuation's tokens are those the tokenizer gives the prompt and
continuation together beyond the prompt's own tokens (as lm-evaluation-harness splits them), so " A" after "Answer:"
is scored as the tokenizer would write it. When every continuation is one token after the same prompt tokens (answer
letters), a single forward pass scores them all; otherwise the prompt+continuation sequences go in one batch. Inputs
longer than the model's context keep their last `context` tokens.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class LoglikelihoodBackend(Protocol):
    """A backend that can score continuations, not only generate (local and k2 backends)."""

    backend_id: str

    def loglikelihood(self, prompt: str, continuations: list[str]) -> list[float]: ...


def document_prefix(tokenizer: Any) -> int:
    """The token a k2 document starts with: EOS (pretraining packs `doc EOS doc EOS ...`), else BOS."""
    for candidate in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        if candidate is not None:
            return candidate
    raise ValueError("the tokenizer has neither EOS nor BOS; scoring needs one to predict a text's first token")


def _split(tokenizer: Any, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids) with the continuation tokenised in context."""
    context = tokenizer.encode(prompt, add_special_tokens=False)
    whole = tokenizer.encode(prompt + continuation, add_special_tokens=False)
    if whole[:len(context)] == context and len(whole) > len(context):
        return context, whole[len(context):]
    return context, tokenizer.encode(continuation, add_special_tokens=False)


@torch.no_grad()
def continuation_logprobs(model: Any, tokenizer: Any, prefix_ids: list[int], prompt: str, continuations: list[str],
                          context: int | None) -> list[float]:
    """Sum of log-probabilities of each continuation's tokens after `prefix_ids + prompt`, in nats."""
    if not continuations:
        raise ValueError("no continuations to score")
    splits = [_split(tokenizer, prompt, c) for c in continuations]
    if any(not cont for _, cont in splits):
        raise ValueError(f"a continuation encodes to no tokens: {continuations!r}")
    limit = context or 1 << 30
    device = next(model.parameters()).device
    shared = all(ctx == splits[0][0] and len(cont) == 1 for ctx, cont in splits)
    if shared:
        ids = (list(prefix_ids) + splits[0][0])[-limit:]
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float()
        logprobs = F.log_softmax(logits, dim=-1)
        return [float(logprobs[cont[0]]) for _, cont in splits]
    rows = [(list(prefix_ids) + ctx + cont)[-limit:] for ctx, cont in splits]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    logprobs = F.log_softmax(logits[:, :-1], dim=-1)
    totals = []
    for i, ((_, cont), row) in enumerate(zip(splits, rows, strict=True)):
        n = min(len(cont), len(row) - 1)
        targets = torch.tensor(row[len(row) - n:], device=device)
        positions = torch.arange(len(row) - n - 1, len(row) - 1, device=device)
        totals.append(float(logprobs[i, positions, targets].sum()))
    return totals
