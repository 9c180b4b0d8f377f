"""MuonClip training on a DeepSpeed engine: pretraining, chat SFT, shared loop, data and callbacks."""

from k2core.train.callbacks import Callback, TrackerCallback
from k2core.train.config import LoopConfig, PretrainConfig, SFTConfig
from k2core.train.data import TokenBlocks, chat_tokens, load_tokenizer, pack_corpus, sft_blocks
from k2core.train.loop import BuiltEngine, build_engine, deepspeed_config, evaluate, run_training
from k2core.train.stages import pretrain, sft

__all__ = [
    "BuiltEngine",
    "Callback",
    "LoopConfig",
    "PretrainConfig",
    "SFTConfig",
    "TokenBlocks",
    "TrackerCallback",
    "build_engine",
    "chat_tokens",
    "deepspeed_config",
    "evaluate",
    "load_tokenizer",
    "pack_corpus",
    "pretrain",
    "run_training",
    "sft",
    "sft_blocks",
]
