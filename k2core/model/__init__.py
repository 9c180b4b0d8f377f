"""The K2 model: DeepSeek-V3 layout (MLA + fine-grained MoE) written for training with MuonClip."""

from k2core.model.config import K2Config
from k2core.model.generate import generate, generate_batch
from k2core.model.modeling import CausalLMOutput, K2ForCausalLM, max_logits, reset_max_logits, update_router_bias
from k2core.model.plan import count_parameters, format_plan

__all__ = [
    "CausalLMOutput",
    "K2Config",
    "K2ForCausalLM",
    "count_parameters",
    "format_plan",
    "generate",
    "generate_batch",
    "max_logits",
    "reset_max_logits",
    "update_router_bias",
]
