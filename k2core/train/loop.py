"""The one MuonClip training loop behind pretraining and SFT: a DeepSpeed engine with our Muon.

Per optimizer step: forward/backward of every micro-batch through the engine, `engine.step()`
(DeepSpeed averages the gradients over ranks and clips them as *raw* gradients, then Muon runs: on whole tensors at
ZeRO stage 0, on flat partitions at stages 1/2, see k2core/train/zero.py), then QK-Clip
on the step's per-head max logits (max over the step's micro-batches and, by a MAX all-reduce, its
data-parallel ranks), the aux-loss-free router-bias update, and a max-logit reset.
DeepSpeed checkpoints under `out_dir/ds/` let a re-run resume from the latest step; batches are a
pure function of the step, so a resumed run continues exactly where the interrupted one was.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from k2core.errors import UserError
from k2core.faults import crash_point
from k2core.model import K2ForCausalLM, update_router_bias
from k2core.optim import Muon, apply_qk_clip, muon_param_groups, wsd_from_fractions
from k2core.optim.qk_clip import RowScaleHook, reset_clip_maxima
from k2core.storage import write_text
from k2core.train.callbacks import Callback
from k2core.train.config import LoopConfig
from k2core.train.data import TokenBlocks, batch_indices
from k2core.train.distributed import build_deepspeed_comm_op, ensure_process_group, rank_and_world
from k2core.train.nonfinite import drop_step_statistics
from k2core.train.precision import use_bf16
from k2core.train.zero import bind_zero_partitions, master_weight_hook

CHECKPOINT_DIR = "ds"


def deepspeed_config(cfg: LoopConfig, bf16: bool | None = None) -> dict[str, Any]:
    """Engine settings: ZeRO stage from cfg (0, 1 or 2, see LoopConfig), clipping of raw gradients, and bf16 compute.

    ``bf16`` (default: cfg's ``autocast`` knob, resolved by ``k2core.train.precision.use_bf16``) turns on torch
    autocast to bf16: weights, gradients, their all-reduce and Muon's state stay fp32, so there is no low-precision
    weight copy that QK-Clip would have to patch and Newton-Schulz gets whole fp32 matrices. DeepSpeed's ``bf16``
    section is not used because its optimizer wrapper hands the client optimizer flat fp32 partitions
    (notes/muonclip.md §3.3).
    """
    if bf16 is None:
        bf16 = use_bf16(cfg.autocast)
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation,
        "gradient_clipping": cfg.gradient_clipping,
        "zero_optimization": {"stage": cfg.zero_stage},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if cfg.zero_stage > 0:  # a client optimizer under ZeRO: k2's Muon, bound to the partitions after initialize
        config["zero_allow_untested_optimizer"] = True
    if bf16:
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}
    return config


@dataclass(frozen=True)
class BuiltEngine:
    """A DeepSpeed engine around k2's Muon, and the QK-Clip hook its ZeRO stage needs (None at stage 0)."""

    engine: Any
    optimizer: Muon
    clip_hook: RowScaleHook | None


def build_engine(model: torch.nn.Module, cfg: LoopConfig, with_schedule: bool = True,
                 bf16: bool | None = None) -> BuiltEngine:
    """Muon (+ AdamW groups) on `model` inside a DeepSpeed engine at cfg's ZeRO stage, WSD lr schedule optional.

    At ZeRO 1/2 the flat partitions are bound to Muon and QK-Clip gets the hook that keeps the fp32 master slices in
    step with the clipped weights (k2core/train/zero.py).
    """
    # Imported here: `import deepspeed` pulls in mlflow (deepspeed.autotuning), which k2core must not import.
    import deepspeed

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    ensure_process_group()
    build_deepspeed_comm_op()
    optimizer = Muon(muon_param_groups(model, cfg.lr, cfg.weight_decay), lr=cfg.lr, weight_decay=cfg.weight_decay,
                     ns_dtype=cfg.muon_ns_dtype)
    scheduler = None
    if with_schedule:
        schedule = wsd_from_fractions(cfg.steps, cfg.warmup_fraction, cfg.decay_fraction, cfg.final_lr_fraction,
                                      cfg.decay_shape)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(cfg, bf16), dist_init_required=False)
    if cfg.zero_stage == 0:
        return BuiltEngine(engine, optimizer, None)
    bind_zero_partitions(engine.optimizer, optimizer)
    return BuiltEngine(engine, optimizer, master_weight_hook(engine.optimizer))


def untrained_tail_start(labels: torch.Tensor) -> int:
    """The first column after the last target of any row (at least 2). Columns from there on can be cut exactly:
    the loss never reads them and, attention being causal, no earlier position sees them; padding is not counted in
    the MoE load either (`token_mask`). Right-padded SFT batches of short chats then cost their own length rather
    than seq_len; packed pretraining blocks keep every column."""
    targets = (labels != -100).any(dim=0).nonzero()
    return max(int(targets.max()) + 1, 2) if len(targets) else 2


def _micro_batch(data: TokenBlocks, cfg: LoopConfig, step: int, micro: int, rank: int, world: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Micro-batch `micro` of optimizer step `step` (1-based) on data-parallel rank `rank`: ids, labels and which
    tokens are real (None without padding), cut after the last target."""
    slot = ((step - 1) * cfg.gradient_accumulation + micro) * world + rank
    rows = batch_indices(len(data), slot * cfg.micro_batch_size, cfg.micro_batch_size, cfg.seed)
    (input_ids, labels), real = data.batch(rows), data.token_mask(rows)
    width = untrained_tail_start(labels)
    return input_ids[:, :width], labels[:, :width], None if real is None else real[:, :width]


def target_tokens(labels: torch.Tensor) -> int:
    """Positions the loss is taken over: shifted labels that are not -100 (SFT masks all but assistant tokens)."""
    return int((labels[:, 1:] != -100).sum())


def _global_sums(values: list[float], world: int, device: torch.device) -> list[float]:
    """`values` summed over the data-parallel ranks, in one all-reduce."""
    totals = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        torch.distributed.all_reduce(totals)
    return totals.tolist()


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TokenBlocks, cfg: LoopConfig) -> float:
    """Mean loss per target token over the first `eval_batches` validation batches (wrapping if there are fewer
    blocks); batches with more target tokens weigh more, as in training."""
    model.eval()
    device = next(model.parameters()).device
    weighted, tokens = 0.0, 0
    for b in range(cfg.eval_batches):
        rows = torch.arange(b * cfg.micro_batch_size, (b + 1) * cfg.micro_batch_size) % len(data)
        input_ids, labels = data.batch(rows)
        width = untrained_tail_start(labels)
        input_ids, labels = input_ids[:, :width], labels[:, :width]
        count = target_tokens(labels)
        if count:
            weighted += model(input_ids=input_ids.to(device), labels=labels.to(device)).loss.item() * count
            tokens += count
    model.train()
    return weighted / tokens if tokens else float("nan")


def _resume(engine: Any, checkpoint_dir: Path) -> dict[str, Any]:
    """Load the latest DeepSpeed checkpoint if one exists; its client state (step, last loss) or {}."""
    if not (checkpoint_dir / "latest").is_file():
        return {}
    path, client_state = engine.load_checkpoint(str(checkpoint_dir))
    if path is None:
        raise RuntimeError(f"{checkpoint_dir} names a latest checkpoint that could not be loaded; delete the folder "
                           "to start over")
    return client_state or {}


def _save(engine: Any, checkpoint_dir: Path, step: int, client_state: dict[str, Any], rank: int) -> None:
    """Write tag `step{step}`, point `latest` at it, then drop older tags: resuming only ever needs the latest one.

    DeepSpeed writes `latest` in place after the tag's files; here it is written only once every rank has written
    its files, and atomically, so a kill at any moment leaves `latest` naming a complete tag (or no `latest`).
    """
    tag = f"step{step}"
    engine.save_checkpoint(str(checkpoint_dir), tag=tag, client_state=client_state, save_latest=False)
    crash_point("save")
    if rank == 0:
        write_text(tag, checkpoint_dir / "latest")
        for old in checkpoint_dir.glob("step*"):
            if old.is_dir() and old.name != tag:
                shutil.rmtree(old)


def _raw_grad_norm(model: torch.nn.Module) -> float:
    """Global 2-norm of the accumulated, rank-averaged raw gradients (before clipping and before Muon)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).item() if grads else 0.0


def _step_grad_norm(engine: Any, zero_stage: int) -> float:
    """The norm of this step's raw gradients: read off the model at stage 0, from ZeRO's own norm at stages 1/2
    (whose model gradients are partitioned and released by then)."""
    if zero_stage == 0:
        return _raw_grad_norm(engine.module)
    norm = engine.get_global_grad_norm()
    return float(norm) if norm is not None else float("nan")


class NonFiniteTrainingError(UserError):
    """Too many optimizer steps in a row had a NaN or inf loss or gradient; the message names the stage and the fix."""


def _grads_finite(engine: Any, zero_stage: int, grad_norm: float) -> bool:
    """Whether this step's reduced gradients are all finite: their norm at stage 0 (every rank holds all of them),
    DeepSpeed's overflow check of the partitions at stages 1/2 (itself all-reduced over the ranks)."""
    if zero_stage == 0:
        return math.isfinite(grad_norm)
    return not engine.optimizer.has_overflow(partition_gradients=engine.optimizer.partition_gradients)


@contextmanager
def _no_update(optimizer: Muon) -> Iterator[None]:
    """`optimizer.step()` does nothing inside: the engine still takes its step (micro-step and step counters, lr
    schedule, gradients zeroed), but no weight and no optimizer state changes. DeepSpeed has no skip of its own for
    fp32 ZeRO-0 weights, and at ZeRO 1/2 its overflow check covers the gradients, not a non-finite loss."""
    optimizer.step = lambda closure=None: None  # the instance attribute shadows the method for this step only
    try:
        yield
    finally:
        del optimizer.step


def _skip_step(engine: Any, optimizer: Muon, model: torch.nn.Module) -> None:
    """Take the engine's step without any update; the lr schedule advances as on any step (it is a function of the
    step, like the batches), and the step's MoE loads and max logits are dropped rather than carried into the next."""
    with _no_update(optimizer):
        engine.step()
    if not engine.was_step_applied() and engine.lr_scheduler is not None:
        engine.lr_scheduler.step()  # DeepSpeed's ZeRO overflow path skipped the scheduler too
    drop_step_statistics(model)


def _train_step(engine: Any, data: TokenBlocks, cfg: LoopConfig, step: int, rank: int, world: int,
                clip_hook: RowScaleHook | None, optimizer: Muon) -> dict[str, float]:
    """One optimizer step; a NaN or inf loss or gradient on any rank skips its update on every rank (metrics then
    hold `skipped` = 1 and no QK-Clip or router values)."""
    model = engine.module
    reset_clip_maxima(model)  # drop maxima recorded outside training steps
    started = time.perf_counter()
    lr = engine.get_lr()[0]
    batches = [_micro_batch(data, cfg, step, micro, rank, world) for micro in range(cfg.gradient_accumulation)]
    counts = [target_tokens(labels) for _, labels, _ in batches]
    # The step's loss is the mean over every target token of the global batch: DeepSpeed averages micro-batch losses
    # over accumulation steps and ranks, so each is weighted by its share of the tokens (exactly 1.0 for packed
    # pretraining blocks; SFT micro-batches differ in how many assistant tokens they hold).
    # tokens the step processes (after the cut) and target tokens, over all ranks
    processed, total = _global_sums([float(sum(ids.numel() for ids, _, _ in batches)), float(sum(counts))], world,
                                    engine.device)
    if total == 0:
        raise ValueError(f"step {step}: no target tokens in the global batch (every label is -100)")
    weighted_loss = 0.0
    for micro, ((input_ids, labels, real), count) in enumerate(zip(batches, counts)):
        output = engine(input_ids=input_ids.to(engine.device), labels=labels.to(engine.device),
                        token_mask=None if real is None else real.to(engine.device))
        if count:
            weighted_loss += output.loss.item() * count
            engine.backward(output.loss * (count * cfg.gradient_accumulation * world / total))
        else:  # a micro-batch without targets: its loss is NaN; contribute zero gradient, keep DeepSpeed's count
            engine.backward(output.logits.sum() * 0.0)
        if micro < cfg.gradient_accumulation - 1:
            engine.step()
            continue
        grad_norm = _step_grad_norm(engine, cfg.zero_stage) if cfg.zero_stage == 0 else float("nan")
        # the global batch's loss (every rank logs the same number) and how many ranks saw non-finite values
        bad_grads = float(not _grads_finite(engine, cfg.zero_stage, grad_norm))
        loss_sum, bad_ranks = _global_sums([weighted_loss, bad_grads], world, engine.device)
        step_loss = loss_sum / total
        if bad_ranks or not math.isfinite(step_loss):
            _skip_step(engine, optimizer, model)
            return {"loss": float(step_loss), "lr": lr, "grad_norm": grad_norm, "skipped": 1.0,
                    "tokens_per_s": processed / (time.perf_counter() - started)}
        engine.step()
    if cfg.zero_stage > 0:
        grad_norm = _step_grad_norm(engine, cfg.zero_stage)
    crash_point("step")  # weights stepped, QK-Clip and the router update not yet: a torn, never-saved state
    clip_stats = apply_qk_clip(model, cfg.qk_clip_tau, on_scale=clip_hook)
    router_stats = update_router_bias(model)
    elapsed = time.perf_counter() - started
    metrics = {
        "loss": float(step_loss),
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens_per_s": processed / elapsed,
        "max_logit": float(clip_stats["global_max_logit"]),
        "clipped_head_fraction": float(clip_stats["clipped_fraction"]),
        "clipped_heads": float(clip_stats["num_clipped"]),
        "router_max_overload": router_stats["max_overload"],
        "skipped": 0.0,
    }
    metrics.update({f"max_logit/layer_{i}": float(v) for i, v in enumerate(clip_stats["max_logit_per_layer"])})
    return metrics


def run_training(
    model: K2ForCausalLM,
    train: TokenBlocks,
    val: TokenBlocks,
    cfg: LoopConfig,
    out_dir: Path,
    stage: str,
    callbacks: Sequence[Callback] = (),
) -> dict[str, float]:
    """Train `model` for cfg.steps optimizer steps (resuming from `out_dir/ds` if present).

    Returns final_train_loss, final_val_loss, tokens_per_s (mean over the steps run by this call), steps and
    skipped_steps (steps whose loss or gradient was NaN or inf: not applied, logged as `train/skipped_steps`).
    After cfg.max_consecutive_skipped_steps of them in a row, NonFiniteTrainingError stops the run before any
    further checkpoint, so the latest one on disk is from a good step. The trained module is `model` itself.
    """
    ensure_process_group()
    rank, world = rank_and_world()
    built = build_engine(model, cfg, with_schedule=True)
    engine = built.engine
    checkpoint_dir = out_dir / CHECKPOINT_DIR
    state = _resume(engine, checkpoint_dir)
    start = int(state.get("step", 0))
    last_loss = float(state.get("train_loss", float("nan")))
    val_loss = float(state.get("val_loss", float("nan")))
    skipped, in_a_row = int(state.get("skipped_steps", 0)), int(state.get("skipped_in_a_row", 0))
    speeds: list[float] = []
    progress = tqdm(range(start + 1, cfg.steps + 1), initial=start, total=cfg.steps, desc=stage,
                    disable=rank != 0)
    for step in progress:
        metrics = _train_step(engine, train, cfg, step, rank, world, built.clip_hook, built.optimizer)
        if metrics.pop("skipped"):
            skipped, in_a_row = skipped + 1, in_a_row + 1
        else:
            in_a_row, last_loss = 0, metrics["loss"]
        metrics["skipped_steps"] = float(skipped)
        speeds.append(metrics["tokens_per_s"])
        progress.set_postfix(loss=f"{last_loss:.3f}", lr=f"{metrics['lr']:.2e}")
        for callback in callbacks:
            callback.on_step_end(step, metrics)
        if in_a_row >= cfg.max_consecutive_skipped_steps:
            raise NonFiniteTrainingError(_too_many_skips(stage, step, in_a_row, checkpoint_dir))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val_loss = evaluate(engine.module, val, cfg)
            for callback in callbacks:
                callback.on_eval(step, {"val_loss": val_loss})
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _save(engine, checkpoint_dir, step, {"step": step, "train_loss": last_loss, "val_loss": val_loss,
                                                 "skipped_steps": skipped, "skipped_in_a_row": in_a_row}, rank)
            for callback in callbacks:
                callback.on_checkpoint(step, checkpoint_dir)
    return {
        "final_train_loss": last_loss,
        "final_val_loss": val_loss,
        "tokens_per_s": sum(speeds) / len(speeds) if speeds else float("nan"),
        "steps": float(cfg.steps),
        "skipped_steps": float(skipped),
    }


def _too_many_skips(stage: str, step: int, in_a_row: int, checkpoint_dir: Path) -> str:
    latest = checkpoint_dir / "latest"
    kept = (f"the last good checkpoint, {checkpoint_dir / latest.read_text().strip()}, is kept (a re-run with the same "
            "params resumes from it)" if latest.is_file() else "no checkpoint was written yet")
    return (f"{stage}: steps {step - in_a_row + 1}-{step} ({in_a_row} in a row) had a NaN or inf loss or gradient and "
            f"were skipped; {kept}. Lower {stage}.lr or raise {stage}.max_consecutive_skipped_steps in params.yaml")
