"""K2's unified RL loop (k1.5 policy optimisation) on a mix of verifiable-reward domains, in plain torch.

One iteration: draw a batch of prompts from the domain mix (k2core/rl/mix.py: math "rl"-split prompts, procedural
reasoning-gym, code and IFEval prompts); draw K responses each with the KV-cache generator at the scheduled
temperature (and top_p) within the domain's token budget; score them with the gym (over-budget responses get the
penalty instead); take the log-probs of the policy as it is at the start of the iteration, under the distribution
the sampler drew from (logits / temperature, top-p nucleus renormalised), as pi_old (computed once, which is what
a frozen copy would give); then run a few inner Muon steps on the k1.5 loss + beta * PTX, with a fresh optimizer
each iteration (k1.5 resets it; `reset_optimizer: false` keeps one across iterations) and QK-Clip after every step.
Every `checkpoint_every` iterations (and after the last) the run's state goes to `out_dir/rl_state.pt`
(k2core/rl/resume.py); a re-run resumes from it bitwise.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from k2core.faults import crash_point
from k2core.model import K2ForCausalLM, generate_batch, reset_max_logits, update_router_bias
from k2core.model.checkpoint import save_hf_folder
from k2core.optim import Muon, apply_qk_clip, muon_param_groups
from k2core.rl.batch import PolicyBatch, pack_rollouts
from k2core.rl.budget import budget_for, budgeted_reward, enforce_budget
from k2core.rl.encoding import pad_token_id, prompt_ids, stop_token_ids
from k2core.rl.loss import group_advantages, k15_terms, masked_nll, token_logprobs
from k2core.rl.mix import MATH, GymScorer, PromptMix
from k2core.rl.ptx import PTXSampler
from k2core.rl.resume import RLProgress, resume_progress, save_progress
from k2core.rl.temperature import TemperatureSchedule, temperature_at
from k2core.storage import read_parquet
from k2core.tracking import Tracker
from k2core.train.nonfinite import drop_step_statistics, gradients_finite

# A response passes when its verifier score (before the budget penalty) reaches this: a verified math or
# reasoning-gym answer, every hidden code test, every IFEval instruction.
PASS_SCORE = 1.0


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
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling; the loss uses the same nucleus")
    reset_optimizer: bool = Field(True, description="a fresh Muon every iteration (k1.5); false keeps its state")
    domains: dict[str, float] = Field(
        default_factory=lambda: {MATH: 1.0},
        description="gym domain -> weight in each iteration's prompts, e.g. {math: 2, rg/countdown: 1, ifeval: 1}")
    token_budgets: dict[str, int] = Field(
        description="max response tokens per domain or domain family ('rg' covers rg/*), e.g. {'math': 256}")
    overlong_penalty: float = Field(description="reward that replaces the score of an over-budget response")
    ptx_coef: float = Field(ge=0, description="beta of the PTX NLL; 0 turns PTX off")
    ptx_batch_size: int = Field(gt=0)
    ptx_max_len: int = Field(gt=1)
    qk_clip_tau: float = Field(gt=0)
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
    top_p: float = 1.0,
) -> list[list[list[int]]]:
    """`num_samples` responses per prompt from the KV-cache generator, `batch_size` rows per decode loop."""
    rows = [prompt for prompt in prompts for _ in range(num_samples)]
    flat: list[list[int]] = []
    for start in range(0, len(rows), batch_size):
        flat.extend(generate_batch(model, rows[start:start + batch_size], max_new_tokens=max_new_tokens,
                                   temperature=temperature, eos_token_ids=eos_token_ids, top_p=top_p,
                                   generator=generator, pad_token_id=pad_id))
    return [flat[g * num_samples:(g + 1) * num_samples] for g in range(len(prompts))]


def _optimizer(model: nn.Module, lr: float, weight_decay: float) -> Muon:
    return Muon(muon_param_groups(model, lr, weight_decay), lr=lr, weight_decay=weight_decay)


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
    temperature: float = 1.0,
    top_p: float = 1.0,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, float]:
    """Inner Muon steps on the k1.5 loss (+ ptx_coef * PTX), from a freshly reset optimizer unless one is passed.

    Log-probs are those of the sampling distribution (`temperature`, `top_p`; k2core.rl.loss). pi_old is the model
    as passed in (log-probs taken once, without grad, in the same train mode the steps use, so Delta is 0 up to
    float error at the first step). Returns the last inner step's losses and mean |Delta| (how far the steps moved
    from pi_old), QK-Clip counts summed over the steps, skipped_steps (inner steps whose loss or gradient was NaN or
    inf, which change nothing), `entropy` (mean per-token entropy of pi_old's sampling distribution over response
    tokens) and, from one more forward after the steps, the per-token KL(pi_old || pi_theta) estimates over response
    tokens: `kl_k1` = mean(log pi_old - log pi_theta), `kl_k3` = mean(ratio - 1 - log ratio), ratio = pi_theta/pi_old.
    """
    device = next(model.parameters()).device
    model.train()
    reset_max_logits(model)

    def response_tokens() -> Iterator[tuple[slice, Tensor, Tensor, Tensor]]:
        for rows, ids, mask, resp in batch.micro_batches(micro_batch_size):
            yield rows, ids.to(device), mask.to(device), resp[:, 1:].to(device=device, dtype=torch.float32)

    old_tokens: list[Tensor] = []
    num_tokens = entropy_sum = 0.0
    with torch.no_grad():
        for _, ids, mask, resp in response_tokens():
            logp, entropy = token_logprobs(model, ids, mask, temperature, top_p, entropy=True)
            old_tokens.append(logp * resp)
            entropy_sum += float((entropy * resp).sum())
            num_tokens += float(resp.sum())
    old_logp = torch.cat([t.sum(dim=1) for t in old_tokens])
    advantages = group_advantages(batch.rewards).flatten().to(device)
    if optimizer is None:
        optimizer = _optimizer(model, lr, weight_decay)
    n = batch.num_rows
    metrics: dict[str, float] = {}
    clipped_heads = skipped = 0
    for _ in range(inner_steps):
        optimizer.zero_grad(set_to_none=True)
        rl_loss, abs_log_ratio = 0.0, 0.0
        for rows, ids, mask, resp in response_tokens():
            logp = (token_logprobs(model, ids, mask, temperature, top_p) * resp).sum(dim=1)
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
    kl_k1 = kl_k3 = 0.0
    with torch.no_grad():
        for (_, ids, mask, resp), old in zip(response_tokens(), old_tokens, strict=True):
            log_ratio = (token_logprobs(model, ids, mask, temperature, top_p) * resp - old).double()
            kl_k1 += float(-log_ratio.sum())
            kl_k3 += float(((log_ratio.exp() - 1 - log_ratio) * resp).sum())
    drop_step_statistics(model)  # this pass is a measurement: its expert loads and max logits train nothing
    denom = max(num_tokens, 1.0)
    return {**metrics, "skipped_steps": float(skipped), "entropy": entropy_sum / denom, "kl_k1": kl_k1 / denom,
            "kl_k3": kl_k3 / denom}


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

    Resumes from `out_dir/rl_state.pt` when a previous run with the same arguments left one. Wall-clock rates
    (`rollout_tokens_per_s`, `train_tokens_per_s`) are logged but kept out of the history, which is reproducible.
    """
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # sampling runs where the model is
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    model = K2ForCausalLM.from_pretrained(str(init_dir)).to(device)

    budgets = {name: budget_for(name, cfg.token_budgets) for name in cfg.domains}
    mix = PromptMix(cfg.domains, _math_samples(math_parquet) if MATH in cfg.domains else ())
    ptx = (PTXSampler(read_parquet(sft_parquet), tokenizer, cfg.ptx_max_len, cfg.ptx_batch_size, cfg.seed)
           if cfg.ptx_coef > 0 else None)
    eos_ids = stop_token_ids(tokenizer)
    pad_id = pad_token_id(tokenizer)
    scorer = GymScorer()
    optimizer = None if cfg.reset_optimizer else _optimizer(model, cfg.lr, cfg.weight_decay)
    tracker.log_params({f"rl.{k}": v for k, v in cfg.model_dump().items()})

    progress = RLProgress(model, rng, generator, ptx, scorer, optimizer)
    resume_progress(progress, Path(out_dir), cfg.iterations)
    history = progress.history  # resumed iterations included; appended to in place
    for it in tqdm(range(progress.iteration, cfg.iterations), desc="rl", unit="iter", initial=progress.iteration,
                   total=cfg.iterations):
        temperature = temperature_at(cfg.temperature, it, cfg.iterations)
        drawn = mix.draw(rng, cfg.prompts_per_iteration)
        prompts = [prompt_ids(tokenizer, mix.messages(name, sample)) for name, sample in drawn]
        started = time.perf_counter()
        raw: list[list[list[int]]] = []
        for name in cfg.domains:  # one generation call per domain: each has its own token budget
            rows = [i for i, (d, _) in enumerate(drawn) if d == name]
            raw += sample_responses(model, [prompts[i] for i in rows], cfg.samples_per_prompt, budgets[name],
                                    temperature, eos_ids, generator, pad_id, cfg.rollout_batch_size, cfg.top_p)
        rollout_s = time.perf_counter() - started
        order = [i for name in cfg.domains for i, (d, _) in enumerate(drawn) if d == name]
        responses, rewards, scores, clipped = [], [], [], []
        for i, group in zip(order, raw, strict=True):
            name, sample = drawn[i]
            kept, group_rewards, group_scores, group_clipped = [], [], [], []
            for response in group:
                cut, truncated = enforce_budget(response, budgets[name], eos_ids)
                value = scorer(name, sample, tokenizer.decode(cut, skip_special_tokens=True))
                kept.append(cut)
                group_rewards.append(budgeted_reward(value, truncated, cfg.overlong_penalty))
                group_scores.append(value)
                group_clipped.append(float(truncated))
            responses.append(kept)
            rewards.append(group_rewards)
            scores.append(group_scores)
            clipped.append(group_clipped)
        batch = pack_rollouts([prompts[i] for i in order], responses, rewards, pad_id)
        started = time.perf_counter()
        update = policy_update(model, batch, tau=cfg.tau, inner_steps=cfg.inner_steps, lr=cfg.lr,
                               weight_decay=cfg.weight_decay, micro_batch_size=cfg.micro_batch_size,
                               qk_clip_tau=cfg.qk_clip_tau, ptx=ptx, ptx_coef=cfg.ptx_coef, temperature=temperature,
                               top_p=cfg.top_p, optimizer=optimizer)
        train_s = time.perf_counter() - started
        metrics = {
            **rollout_metrics([drawn[i][0] for i in order], rewards, scores, responses, clipped),
            "temperature": temperature,
            "reward_errors": float(sum(scorer.errors.values())),
            **update,
        }
        rates = {"rollout_tokens_per_s": sum(len(r) for group in raw for r in group) / max(rollout_s, 1e-9),
                 # tokens through forward + backward (every real token of every row, once per inner step)
                 "train_tokens_per_s": cfg.inner_steps * float(batch.attention_mask.sum()) / max(train_s, 1e-9)}
        tracker.log_metrics({metric_key(k): v for k, v in {**metrics, **rates}.items()}, step=it)
        history.append({"iteration": float(it), **metrics})
        if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations:
            save_progress(progress, Path(out_dir))

    hf_dir = Path(out_dir) / "hf"
    save_hf_folder(model, tokenizer, hf_dir, "rl")
    return {"final": history[-1], "history": history, "hf_dir": str(hf_dir)}


def _math_samples(math_parquet: str | Path) -> list[dict[str, str]]:
    """The synth stage's "rl"-split math problems as gym `math` samples."""
    problems = read_parquet(math_parquet)
    problems = problems[problems["split"] == "rl"]
    if problems.empty:
        raise ValueError(f"{math_parquet} has no rows with split 'rl'; the synth stage must write RL prompts")
    return [{"prompt": q, "answer": str(a)} for q, a in zip(problems["question"], problems["answer"], strict=True)]


def rollout_metrics(domains: list[str], rewards: list[list[float]], scores: list[list[float]],
                    responses: list[list[list[int]]], clipped: list[list[float]]) -> dict[str, float]:
    """An iteration's rollout statistics, per group `g` of domain `domains[g]`: overall reward and pass rate
    (`accuracy`: verifier score >= PASS_SCORE, before the budget penalty), response length and clip (truncation)
    rate, and `reward/<domain>`, `pass_rate/<domain>` for each domain in the batch."""
    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    passed = [[float(s >= PASS_SCORE) for s in group] for group in scores]
    metrics = {
        "reward_mean": mean([r for group in rewards for r in group]),
        "accuracy": mean([p for group in passed for p in group]),
        "response_len": mean([float(len(r)) for group in responses for r in group]),
        "clip_rate": mean([c for group in clipped for c in group]),
    }
    for name in dict.fromkeys(domains):
        mine = [g for g, d in enumerate(domains) if d == name]
        metrics[f"reward/{name}"] = mean([r for g in mine for r in rewards[g]])
        metrics[f"pass_rate/{name}"] = mean([p for g in mine for p in passed[g]])
    return metrics
