"""The two Muon training stages: pretraining on the packed corpus and chat SFT, both ending in an HF export."""

from __future__ import annotations

import logging

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from k2core.model import K2Config, K2ForCausalLM
from k2core.model.checkpoint import save_hf_folder
from k2core.tracking import Tracker
from k2core.train.callbacks import Callback, TrackerCallback
from k2core.train.config import LoopConfig, PretrainConfig, SFTConfig
from k2core.train.data import TokenBlocks, load_tokenizer, pack_corpus, sft_blocks
from k2core.train.distributed import ensure_process_group, rank_and_world
from k2core.train.loop import run_training

EXPORT_DIR = "hf"


def _check_fit(config: K2Config, tokenizer: PreTrainedTokenizerFast, seq_len: int) -> None:
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}; "
                         "raise model.vocab_size or shrink the tokenizer")
    if seq_len > config.max_position_embeddings:
        raise ValueError(f"seq_len {seq_len} exceeds max_position_embeddings {config.max_position_embeddings}")


def _export(stage: str, model: K2ForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> Path:
    """HF folder (config.json, model.safetensors, tokenizer files, manifest.json) written atomically by rank 0."""
    export_dir = out_dir / EXPORT_DIR
    if rank_and_world()[0] == 0:
        save_hf_folder(model, tokenizer, export_dir, stage)
    if rank_and_world()[1] > 1:
        torch.distributed.barrier()
    return export_dir


def _run_stage(stage: str, model: K2ForCausalLM, tokenizer: PreTrainedTokenizerFast,
               data: tuple[TokenBlocks, TokenBlocks], cfg: LoopConfig,
               out_dir: Path, tracker: Tracker, callbacks: Sequence[Callback]) -> dict[str, float]:
    tracker.log_params({f"{stage}.{key}": value for key, value in cfg.model_dump().items()})
    tracker.log_params({f"{stage}.train_sequences": len(data[0]), f"{stage}.val_sequences": len(data[1])})
    metrics = run_training(model, data[0], data[1], cfg, out_dir, stage,
                           [TrackerCallback(tracker), *callbacks])
    _export(stage, model, tokenizer, out_dir)
    return metrics


def pretrain(
    model_config: K2Config,
    cfg: PretrainConfig,
    corpus_path: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    tracker: Tracker,
    callbacks: Sequence[Callback] = (),
) -> dict[str, float]:
    """MuonClip pretraining from scratch; writes `out_dir/ds/` checkpoints and the `out_dir/hf/` export.

    Re-running with the same arguments after an interruption resumes from the latest checkpoint.
    """
    ensure_process_group()
    out = Path(out_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    _check_fit(model_config, tokenizer, cfg.seq_len)
    data = pack_corpus(corpus_path, tokenizer, cfg.seq_len, cfg.val_fraction, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = K2ForCausalLM(model_config)
    return _run_stage("pretrain", model, tokenizer, data, cfg, out, tracker, callbacks)


def sft(
    cfg: SFTConfig,
    init_dir: str | Path,
    sft_path: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    tracker: Tracker,
    model_config: K2Config | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict[str, float]:
    """Chat SFT from the HF folder `init_dir` with Muon, loss on assistant tokens only; writes `out_dir/hf/`.

    `model_config` (optional) supplies fields a transformers config.json lacks, such as the router bias speed;
    its architecture must match the checkpoint.
    """
    ensure_process_group()
    out = Path(out_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    overrides = {} if model_config is None else {"router_bias_update_speed": model_config.router_bias_update_speed}
    torch.manual_seed(cfg.seed)
    model = K2ForCausalLM.from_pretrained(init_dir, **overrides)
    if model_config is not None and model.config.model_dump() != model_config.model_dump():
        raise ValueError(f"model_config does not match the checkpoint in {init_dir}; pass the pretraining config "
                         "or None")
    _check_fit(model.config, tokenizer, cfg.seq_len)
    train, val, counts = sft_blocks(sft_path, tokenizer, cfg.seq_len, cfg.val_fraction, cfg.seed)
    if counts["dropped"]:
        logging.getLogger(__name__).warning(
            "sft: %d of %d chats (%d of %d tool-use chats) have no assistant token within seq_len=%d and are left "
            "out; raise sft.<profile>.seq_len to train on them", counts["dropped"], counts["examples"],
            counts["tool_dropped"], counts["tool_examples"], cfg.seq_len)
    metrics = _run_stage("sft", model, tokenizer, (train, val), cfg, out, tracker, callbacks)
    return {**metrics, **{f"chats_{key}": float(value) for key, value in counts.items()}}
