"""Fine-grained MoE with sigmoid routing, aux-loss-free balancing bias, and fused 3-D expert weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from k2core.model.config import K2Config
from k2core.model.layers import KeepsFp32Buffers, SwiGLU


class TopKRouter(KeepsFp32Buffers):
    """Sigmoid scores; a per-expert bias steers *selection* only, and is moved by load, never by the loss."""

    fp32_buffers = ("e_score_correction_bias",)

    def __init__(self, config: K2Config) -> None:
        super().__init__()
        self.num_experts = config.n_routed_experts
        self.top_k = config.num_experts_per_tok
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.norm_topk_prob = config.norm_topk_prob
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(config.n_routed_experts, config.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(config.n_routed_experts))
        # integer counts: never cast by .to(dtype), exact at any batch size
        self.register_buffer("expert_load", torch.zeros(config.n_routed_experts, dtype=torch.long),
                             persistent=False)

    def forward(self, x: torch.Tensor, counted: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k expert ids [N, k] and their combine weights [N, k] (fp32) for tokens x [N, hidden]; only tokens
        where `counted` [N] is True (all when None) count towards the balancing load (padding is routed, not
        counted)."""
        scores = F.linear(x.float(), self.weight.float()).sigmoid()
        choice = scores + self.e_score_correction_bias
        if self.n_group > 1:
            grouped = choice.view(-1, self.n_group, self.num_experts // self.n_group)
            group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)
            keep = torch.zeros_like(group_scores, dtype=torch.bool)
            keep.scatter_(1, group_scores.topk(self.topk_group, dim=-1).indices, True)
            choice = grouped.masked_fill(~keep[..., None], float("-inf")).view(-1, self.num_experts)
        index = choice.topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, index)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                chosen = index if counted is None else index[counted]
                self.expert_load += torch.bincount(chosen.flatten(), minlength=self.num_experts)
        return index, weights * self.routed_scaling_factor


class Experts(nn.Module):
    """All routed experts as two 3-D tensors (transformers v5 layout): gate_up_proj [E, 2I, H], down_proj [E, H, I]."""

    def __init__(self, config: K2Config) -> None:
        super().__init__()
        self.num_experts = config.n_routed_experts
        self.gate_up_proj = nn.Parameter(
            torch.empty(config.n_routed_experts, 2 * config.moe_intermediate_size, config.hidden_size))
        self.down_proj = nn.Parameter(
            torch.empty(config.n_routed_experts, config.hidden_size, config.moe_intermediate_size))

    def forward(self, x: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Sort (token, slot) pairs by expert, run each expert on its contiguous slice (one grouped GEMM for all
        experts where torch has one for the device and dtype, else one matmul per expert), scatter back."""
        top_k = index.shape[1]
        flat = index.flatten()
        order = flat.argsort(stable=True)
        token = order // top_k
        counts = torch.bincount(flat, minlength=self.num_experts)
        routed = x[token]
        dtype = _compute_dtype(x, self.gate_up_proj)
        if _grouped_mm_serves(x.device, dtype):
            y = self._grouped(routed.to(dtype), counts, dtype)
        else:
            y = self._per_expert(routed, counts.tolist())
            if y is None:
                return torch.zeros_like(x)
        y = y * weights.flatten()[order, None]
        return torch.zeros_like(x).index_add_(0, token, y.to(x.dtype))

    def _grouped(self, routed: torch.Tensor, counts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Both expert matmuls as grouped GEMMs over the expert-sorted rows (group g = rows of expert g)."""
        offsets = counts.cumsum(0).to(torch.int32)
        gate, up = F.grouped_mm(routed, self.gate_up_proj.to(dtype).transpose(1, 2), offs=offsets).chunk(2, dim=-1)
        return F.grouped_mm(F.silu(gate) * up, self.down_proj.to(dtype).transpose(1, 2), offs=offsets)

    def _per_expert(self, routed: torch.Tensor, counts: list[int]) -> torch.Tensor | None:
        """One matmul pair per expert on its slice; None when no row was routed."""
        outputs = []
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            chunk = routed[start:start + count]
            gate, up = F.linear(chunk, self.gate_up_proj[expert]).chunk(2, dim=-1)
            outputs.append(F.linear(F.silu(gate) * up, self.down_proj[expert]))
            start += count
        return torch.cat(outputs) if outputs else None


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The expert matmuls' dtype: autocast's where it is on (grouped GEMMs are not autocast ops), else the
    weight's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype


def _grouped_mm_serves(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's grouped GEMM (with autograd) runs here: on CPU in any float dtype, on CUDA in bf16 from
    compute capability 8.0 (torch's own requirement); otherwise the per-expert loop runs."""
    if not hasattr(F, "grouped_mm"):
        return False
    if device.type == "cpu":
        return True
    return device.type == "cuda" and dtype == torch.bfloat16 and torch.cuda.get_device_capability(device) >= (8, 0)


class MoE(nn.Module):
    """Routed experts plus always-on shared experts."""

    def __init__(self, config: K2Config) -> None:
        super().__init__()
        self.gate = TopKRouter(config)
        self.experts = Experts(config)
        self.shared_experts = SwiGLU(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, hidden]; `token_mask` [B, T] marks the real tokens (padding is computed but not counted in the
        router's load)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        index, weights = self.gate(flat, None if token_mask is None else token_mask.reshape(-1))
        return self.experts(flat, index, weights).view(shape) + self.shared_experts(x)
