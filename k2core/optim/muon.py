"""Muon with an AdamW fallback in one optimizer: the Kimi K2 / Moonlight update.

Muon groups: momentum, Nesterov, Newton-Schulz orthogonalisation (5 steps, coefficients
(3.4445, -4.7750, 2.0315) on X/||X||_F, transposed when rows > cols), update scaled by
0.2*sqrt(max(n, m)) so Muon's update RMS matches AdamW's and both reuse one lr and wd,
decoupled weight decay `W *= 1 - lr*wd` with the *unscaled* lr (Moonlight Eq. 4, K2 Alg. 1).
3-D expert stacks (E, n, m) are orthogonalised per expert in one batched iteration.

Groups flagged `use_muon=False` get AdamW (betas (0.9, 0.95), eps 1e-8, same lr and wd), so
a single optimizer object can be handed to DeepSpeed.

Momentum is kept in the EMA form `buf.lerp_(g, 1 - mu)` with Nesterov `g.lerp(buf, mu)`, the op
order of `torch.optim.Muon`. It equals the report's sum form `M = mu*M + G` times (1 - mu), a
positive constant that Newton-Schulz removes (it normalises by the Frobenius norm); keeping
torch's op order lets the bf16 path be bitwise equal to `torch.optim.Muon(adjust_lr_fn=
"match_rms_adamw")` on 2-D parameters. One consequence of that form: Newton-Schulz divides by
max(||X||_F, eps), and X carries the (1 - mu) factor, so a matrix whose gradient norm is below about
eps / (1 - mu) = 2e-6 is not fully normalised (seen only with extreme gradient clipping).

Each matrix is orthogonalised on its own (no stacking of same-shape 2-D matrices), which keeps the
op order of the reference; expert stacks are the batched case.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
RMS_MATCH_FACTOR = 0.2


def newton_schulz(
    update: Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Approximately orthogonalise the last two dims of `update` (2-D, or 3-D batched per matrix).

    Returns a tensor in `dtype` with the input's shape, roughly U S' V^T with S' in about [0.7, 1.2].
    """
    if update.ndim not in (2, 3):
        raise ValueError(f"Newton-Schulz needs a 2-D or 3-D tensor, got shape {tuple(update.shape)}")
    a, b, c = coefficients
    x = update.to(dtype)
    tall = update.size(-2) > update.size(-1)
    if tall:
        x = x.mT
    if x.ndim == 2:
        x.div_(x.norm().clamp(min=eps))
        for _ in range(steps):
            gram = x @ x.T
            poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.addmm(x, poly, x, beta=a)
    else:
        x = x / torch.linalg.matrix_norm(x, keepdim=True).clamp(min=eps)
        for _ in range(steps):
            gram = x @ x.mT
            poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.baddbmm(x, poly, x, beta=a)
    return x.mT if tall else x


def muon_lr_scale(shape: torch.Size) -> float:
    """0.2*sqrt(max(n, m)) over the matrix dims (the last two; a leading dim indexes experts)."""
    return RMS_MATCH_FACTOR * math.sqrt(max(shape[-2], shape[-1]))


def _default_ns_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow and imprecise there), bf16 on accelerators as in the references."""
    return torch.float32 if device.type == "cpu" else torch.bfloat16


class Muon(torch.optim.Optimizer):
    """Muon for hidden matrices plus AdamW for groups flagged `use_muon=False`.

    `ns_dtype=None` picks fp32 on CPU and bf16 elsewhere; pass `torch.bfloat16` for bitwise parity
    with `torch.optim.Muon`.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        ns_dtype: torch.dtype | None = None,
        eps: float = 1e-7,
        adam_betas: tuple[float, float] = (0.9, 0.95),
        adam_eps: float = 1e-8,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1:
            raise ValueError(
                f"need lr >= 0, weight_decay >= 0, 0 <= momentum < 1; got {lr}, {weight_decay}, {momentum}"
            )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            ns_steps=ns_steps,
            ns_coefficients=tuple(ns_coefficients),
            ns_dtype=ns_dtype,
            eps=eps,
            adam_betas=tuple(adam_betas),
            adam_eps=adam_eps,
            use_muon=True,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["use_muon"]:
                for p in group["params"]:
                    if p.ndim not in (2, 3):
                        raise ValueError(
                            f"Muon group holds a parameter of shape {tuple(p.shape)}; only 2-D matrices and 3-D "
                            "expert stacks can be orthogonalised. Build groups with "
                            "k2core.optim.muon_param_groups, which routes other parameters to AdamW."
                        )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every group (Muon or AdamW by the group's `use_muon` flag)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_group(group)
            else:
                self._adamw_group(group)
        return loss

    def _muon_group(self, group: dict[str, Any]) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grad)
            buf = state["momentum_buffer"]
            buf.lerp_(grad, 1 - mu)
            direction = grad.lerp(buf, mu) if group["nesterov"] else buf
            ortho = newton_schulz(
                direction,
                steps=group["ns_steps"],
                coefficients=group["ns_coefficients"],
                eps=group["eps"],
                dtype=group["ns_dtype"] or _default_ns_dtype(p.device),
            )
            p.mul_(1 - lr * wd)
            p.add_(ortho, alpha=-lr * muon_lr_scale(p.shape))

    def _adamw_group(self, group: dict[str, Any]) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["adam_betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            step = state["step"]
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias1 = 1 - beta1**step
            bias2 = 1 - beta2**step
            denom = (exp_avg_sq / bias2).sqrt_().add_(group["adam_eps"])
            p.mul_(1 - lr * wd)
            p.addcdiv_(exp_avg, denom, value=-lr / bias1)
