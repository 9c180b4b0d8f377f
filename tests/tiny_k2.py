"""A tiny random K2 checkpoint with a tokenizer trained on the spot, for tests that need a real model folder."""

from pathlib import Path

import pandas as pd
import torch

from k2core.data.tokenizer import TokenizerConfig, train_tokenizer
from k2core.model import K2Config, K2ForCausalLM
from k2core.storage import write_parquet

TINY = dict(
    hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=2, n_routed_experts=4, num_experts_per_tok=2, kv_lora_rank=16, q_lora_rank=16,
    qk_rope_head_dim=8, v_head_dim=8, qk_nope_head_dim=8, max_position_embeddings=512,
)


def tiny_checkpoint(root: Path) -> Path:
    """`root/tiny-k2`, laid out like a published stage output (weights, manifest, tokenizer with K2's template)."""
    texts = [f"Document {i}: the weather in Paris is {i % 7} degrees and the user asks about tools." for i in range(60)]
    write_parquet(pd.DataFrame({"doc_id": [str(i) for i in range(60)], "text": texts}), root / "corpus.parquet")
    folder = root / "tiny-k2"
    info = train_tokenizer(str(root / "corpus.parquet"),
                           TokenizerConfig(vocab_size=400, min_frequency=1, split_digits=True, max_chars=100_000),
                           str(folder))
    torch.manual_seed(0)
    K2ForCausalLM(K2Config.preset("tiny", vocab_size=info["vocab_size"], **TINY)).save_pretrained(folder)
    return folder
