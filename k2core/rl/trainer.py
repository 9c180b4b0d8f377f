"""K2's unified RL loop (k1.5 policy optimisation) on the math RL prompts, in plain torch.

One iteration: sample a batch of "rl"-split prompts; draw K responses each with the KV-cache
generator at the scheduled temperature and the task's token budget; score them (over-budget
responses get the penalty instead); take the log-probs of the policy as it is at the start of the
iteration as pi_old (the sampling policy; computed once, which is what a frozen copy would give);
then run a few inner Muon steps on the k1.5 loss + beta * PTX, with a fresh optimizer each
iteration (k1.5 resets it) and QK-Clip after every step. Every `checkpoint_every` iterations (and after the last)
the run's state goes to `out_dir/rl_state.pt` (k2core/rl/resume.py); a re-run resumes from it bitwise.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from k2core.faults import crash_point
from k2core.model import K2ForCausalLM, generate_batch, reset_max_logits, update_router_bias
from k2core.model.checkpoint import save_hf_folder
from k2core.optim import Muon, apply_qk_clip, muon_param_groups
from k2core.rl.batch import PolicyBatch, pack_rollouts
from k2core.rl.budget import budget_for, budgeted_reward, enforce_budget
from k2core.rl.encoding import math_prompt_ids, pad_token_id, stop_token_ids
from k2core.rl.loss import group_advantages, k15_terms, masked_nll, sequence_logprobs
from k2core.rl.ptx import PTXSampler
from k2core.rl.resume import RLProgress, resume_progress, save_progress
from k2core.rl.rewards import RewardScorer
from k2core.rl.temperature import TemperatureSchedule, temperature_at
from k2core.storage import read_parquet
from k2core.tracking import Tracker
from k2core.train.nonfinite import drop_step_statistics, gradients_finite

MATH_TASK = "math"


class RLConfig(BaseModel):
    """Everything the RL stage reads from params.yaml (`rl` section)."""

    model_config = ConfigDict(extra="forbid")

    seed: int
    iterations: int = Field(gt=0)
    prompts_per_iteration: int = Field(gt=0)
    samples_per_prompt: int = Field(ge=2, description="K; the mean baseline needs at least two samples")
    inner_steps: int = Field(gt=0)
    rollout_batch_size: int = Field(gt=0, description="rows (prompt x sample) per generation loop")
    micro_batch_size: int = Field(gt=0, description="rows per forward/backward in the update")
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    tau: float = Field(gt=0, description="k1.5 KL trust-region strength toward the iteration's start policy")
    temperature: TemperatureSchedule
    token_budgets: dict[str, int] = Field(description="max response tokens per task type, e.g. {'math': 256}")
    overlong_penalty: float = Field(description="reward that replaces the score of an over-budget response")
    ptx_coef: float = Field(ge=0, description="beta of the PTX NLL; 0 turns PTX off")
    ptx_batch_size: int = Field(gt=0)
    ptx_max_len: int = Field(gt=1)
    qk_clip_tau: float = Field(gt=0)
    reward_timeout_s: float = Field(gt=0)
    checkpoint_every: int = Field(gt=0, description="iterations between resume states; the last one is always saved")


def sample_responses(
    model: nn.Module,
    prompts: list[list[int]],
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    eos_token_ids: list[int],
    generator: torch.Generator,
    pad_id: int,
    batch_size: int,
) -> list[list[list[int]]]:
    """`num_samples` responses per prompt from the KV-cache generator, `batch_size` rows per decode loop."""
    rows = [prompt for prompt in prompts for _ in range(num_samples)]
    flat: list[list[int]] = []
    for start in range(0, len(rows), batch_size):
        flat.extend(generate_batch(model, rows[start:start + batch_size], max_new_tokens=max_new_tokens,
                                   temperature=temperature, eos_token_ids=eos_token_ids, generator=generator,
                                   pad_token_id=pad_id))
    return [flat[g * num_samples:(g + 1) * num_samples] for g in range(len(prompts))]


def policy_update(
    model: nn.Module,
    batch: PolicyBatch,
    *,
    tau: float,
    inner_steps: int,
    lr: float,
    weight_decay: float,
    micro_batch_size: int,
    qk_clip_tau: float,
    ptx: PTXSampler | None = None,
    ptx_coef: float = 0.0,
) -> dict[str, float]:
    """Inner Muon steps on the k1.5 loss (+ ptx_coef * PTX) from a freshly reset optimizer.

    pi_old is the model as passed in (log-probs taken once, without grad, in the same train mode the
    steps use, so Delta is 0 up to float error at the first step). Returns the last inner step's losses
    and mean |Delta| (how far the steps moved from pi_old), with QK-Clip counts summed over the steps, and
    skipped_steps: inner steps whose loss or gradient was NaN or inf, which change nothing.
    """
    device = next(model.parameters()).device
    model.train()
    reset_max_logits(model)
    with torch.no_grad():
        old_logp = torch.cat([sequence_logprobs(model, ids.to(device), mask.to(device), resp.to(device))
                              for _, ids, mask, resp in batch.micro_batches(micro_batch_size)])
    advantages = group_advantages(batch.rewards).flatten().to(device)
    optimizer = Muon(muon_param_groups(model, lr, weight_decay), lr=lr, weight_decay=weight_decay)
    n = batch.num_rows
    metrics: dict[str, float] = {}
    clipped_heads = skipped = 0
    for _ in range(inner_steps):
        optimizer.zero_grad(set_to_none=True)
        rl_loss, abs_log_ratio = 0.0, 0.0
        for rows, ids, mask, resp in batch.micro_batches(micro_batch_size):
            logp = sequence_logprobs(model, ids.to(device), mask.to(device), resp.to(device))
            loss = k15_terms(logp, old_logp[rows], advantages[rows], tau).sum() / n
            loss.backward()
            rl_loss += loss.item()
            abs_log_ratio += (logp.detach() - old_logp[rows]).abs().sum().item() / n
        ptx_loss = 0.0
        if ptx is not None and ptx_coef > 0:
            nll = masked_nll(model, *(t.to(device) for t in ptx.sample()))
            (ptx_coef * nll).backward()
            ptx_loss = nll.item()
        if not (math.isfinite(rl_loss + ptx_coef * ptx_loss) and gradients_finite(model)):
            skipped += 1  # a NaN or inf loss or gradient: no update, no QK-Clip, no router-bias step
            drop_step_statistics(model)
            model.zero_grad(set_to_none=True)
            metrics.update(loss=rl_loss + ptx_coef * ptx_loss, rl_loss=rl_loss, ptx_loss=ptx_loss)
            continue
        optimizer.step()
        crash_point("step")  # weights stepped, QK-Clip and the router update not yet: a torn, never-saved state
        clip = apply_qk_clip(model, qk_clip_tau)
        clipped_heads += int(clip["num_clipped"])
        balance = update_router_bias(model)
        metrics = {
            "loss": rl_loss + ptx_coef * ptx_loss,
            "rl_loss": rl_loss,
            "ptx_loss": ptx_loss,
            "abs_log_ratio": abs_log_ratio,
            "qk_clip/num_clipped": float(clipped_heads),
            "qk_clip/global_max_logit": float(clip["global_max_logit"]),
            **{f"router/{k}": v for k, v in balance.items()},
        }
    return {**metrics, "skipped_steps": float(skipped)}


# RL metrics that mean what the pretrain/SFT loop's `train/...` keys mean; every other one is RL's own (`rl/...`).
SHARED_KEYS = {"loss": "train/loss", "skipped_steps": "train/skipped_steps",
               "qk_clip/global_max_logit": "train/max_logit",
               "router/max_overload": "train/router_max_overload"}


def metric_key(name: str) -> str:
    """The tracking key of an RL iteration metric: stage-independent where pretraining logs the same quantity."""
    return SHARED_KEYS.get(name, f"rl/{name}")


def rl(
    cfg: RLConfig,
    init_dir: str | Path,
    math_parquet: str | Path,
    sft_parquet: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    tracker: Tracker,
) -> dict[str, Any]:
    """Run RL from the SFT checkpoint `init_dir`; writes `out_dir/hf/` and returns final and per-iteration metrics.

    Resumes from `out_dir/rl_state.pt` when a previous run with the same arguments left one.
    """
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # sampling runs where the model is
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    model = K2ForCausalLM.from_pretrained(str(init_dir)).to(device)

    problems = read_parquet(math_parquet)
    problems = problems[problems["split"] == "rl"].reset_index(drop=True)
    if problems.empty:
        raise ValueError(f"{math_parquet} has no rows with split 'rl'; the synth stage must write RL prompts")
    prompts = [math_prompt_ids(tokenizer, q) for q in problems["question"]]
    answers = list(problems["answer"])
    ptx = (PTXSampler(read_parquet(sft_parquet), tokenizer, cfg.ptx_max_len, cfg.ptx_batch_size, cfg.seed)
           if cfg.ptx_coef > 0 else None)
    eos_ids = stop_token_ids(tokenizer)
    pad_id = pad_token_id(tokenizer)
    budget = budget_for(MATH_TASK, cfg.token_budgets)
    scorer = RewardScorer(cfg.reward_timeout_s)
    tracker.log_params({f"rl.{k}": v for k, v in cfg.model_dump().items()})

    progress = RLProgress(model, rng, generator, ptx, scorer)
    resume_progress(progress, Path(out_dir), cfg.iterations)
    history = progress.history  # resumed iterations included; appended to in place
    for it in tqdm(range(progress.iteration, cfg.iterations), desc="rl", unit="iter", initial=progress.iteration,
                   total=cfg.iterations):
        temperature = temperature_at(cfg.temperature, it, cfg.iterations)
        chosen = rng.sample(range(len(prompts)), min(cfg.prompts_per_iteration, len(prompts)))
        raw = sample_responses(model, [prompts[i] for i in chosen], cfg.samples_per_prompt, budget, temperature,
                               eos_ids, generator, pad_id, cfg.rollout_batch_size)
        responses, rewards, correct, clipped = [], [], [], []
        for i, group in zip(chosen, raw, strict=True):
            kept, group_rewards = [], []
            for response in group:
                cut, truncated = enforce_budget(response, budget, eos_ids)
                text = tokenizer.decode(cut, skip_special_tokens=True)
                score = scorer(MATH_TASK, text, answers[i])["score"]
                kept.append(cut)
                group_rewards.append(budgeted_reward(score, truncated, cfg.overlong_penalty))
                correct.append(score)
                clipped.append(float(truncated))
            responses.append(kept)
            rewards.append(group_rewards)
        batch = pack_rollouts([prompts[i] for i in chosen], responses, rewards, pad_id)
        update = policy_update(model, batch, tau=cfg.tau, inner_steps=cfg.inner_steps, lr=cfg.lr,
                               weight_decay=cfg.weight_decay, micro_batch_size=cfg.micro_batch_size,
                               qk_clip_tau=cfg.qk_clip_tau, ptx=ptx, ptx_coef=cfg.ptx_coef)
        lengths = [len(r) for group in responses for r in group]
        metrics = {
            "reward_mean": float(batch.rewards.mean()),
            # share of responses whose (possibly truncated) answer verifies, before the budget penalty
            "accuracy": sum(correct) / len(correct),
            "response_len": sum(lengths) / len(lengths),
            "clip_rate": sum(clipped) / len(clipped),
            "temperature": temperature,
            "reward_errors": float(sum(scorer.errors.values())),
            **update,
        }
        tracker.log_metrics({metric_key(k): v for k, v in metrics.items()}, step=it)
        history.append({"iteration": float(it), **metrics})
        if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations:
            save_progress(progress, Path(out_dir))

    hf_dir = Path(out_dir) / "hf"
    save_hf_folder(model, tokenizer, hf_dir, "rl")
    return {"final": history[-1], "history": history, "hf_dir": str(hf_dir)}
