"""Muon with an AdamW fallback in one optimizer: the Kimi K2 / Moonlight update.

Muon groups: momentum, Nesterov, Newton-Schulz orthogonalisation (5 steps, coefficients
(3.4445, -4.7750, 2.0315) on X/||X||_F, transposed when rows > cols), update scaled by
0.2*sqrt(max(n, m)) so Muon's update RMS matches AdamW's and both reuse one lr and wd,
decoupled weight decay `W *= 1 - lr*wd` with the *unscaled* lr (Moonlight Eq. 4, K2 Alg. 1).
3-D expert stacks (E, n, m) are orthogonalised per expert in one batched iteration. A group's
`row_blocks=k` splits each parameter's rows into k matrices (fused [gate; up] experts) that are
orthogonalised and lr-scaled as if unfused.

Groups flagged `use_muon=False` get AdamW (betas (0.9, 0.95), eps 1e-8, same lr and wd), so
a single optimizer object can be handed to DeepSpeed.

Momentum is kept in the EMA form `buf.lerp_(g, 1 - mu)` with Nesterov `g.lerp(buf, mu)`, the op
order of `torch.optim.Muon`. It equals the report's sum form `M = mu*M + G` times (1 - mu), a
positive constant that Newton-Schulz removes (it normalises by the Frobenius norm); keeping
torch's op order lets the bf16 path be bitwise equal to `torch.optim.Muon(adjust_lr_fn=
"match_rms_adamw")` on 2-D parameters. One consequence of that form: Newton-Schulz divides by
max(||X||_F, eps), and X carries the (1 - mu) factor, so a matrix whose gradient norm is below about
eps / (1 - mu) = 2e-6 is not fully normalised (seen only with extreme gradient clipping).

Precision of Newton-Schulz is chosen by device (`default_ns_dtype`): fp32 on CPU (precise enough for
the 1e-5 reference test; CPUs without native bf16 run bf16 matmuls far slower than fp32) and bf16 on
accelerators as in the references; `ns_dtype` overrides it.

With `batched=True` (the default off CPU) the matrices of a group are orthogonalised in shape buckets: every 2-D
matrix and every expert of a 3-D stack with the same (min, max) dims is stacked, wide side last
(a tall matrix is transposed, which transposes its update exactly), and one batched Newton-Schulz
call runs per bucket: 3 matmul calls per iteration per bucket instead of per matrix, which matters
where each call has a launch cost (GPUs); results equal the per-matrix path up to fp32 rounding. On CPU
the per-matrix path is the default: there stacking costs more than batching saves. `batched=False`
orthogonalises each parameter on its own in torch's op order: with `ns_dtype=torch.bfloat16` it is
bitwise equal to `torch.optim.Muon`.

Under ZeRO-1/2 a Muon group holds one flat 1-D partition instead of its matrices; `bind_partitions` tells the
optimizer how that partition maps onto the matrices (`FlatPartition`), and the step then orthogonalises whole matrices
gathered from every rank and applies this rank's share (Distributed Muon, k2core/optim/flat_partition.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from k2core.optim.flat_partition import FlatPartition

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
    The input is never modified.
    """
    if update.ndim not in (2, 3):
        raise ValueError(f"Newton-Schulz needs a 2-D or 3-D tensor, got shape {tuple(update.shape)}")
    a, b, c = coefficients
    x = update.to(dtype)
    tall = update.size(-2) > update.size(-1)
    if tall:
        x = x.mT
    if x.ndim == 2:
        x = x / x.norm().clamp(min=eps)
        for _ in range(steps):
            gram = x @ x.T
            poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.addmm(x, poly, x, beta=a)
    else:
        # Contiguous in the wide layout: a transposed (strided) bf16 stack sends bmm to a slow CPU kernel.
        x = (x / torch.linalg.matrix_norm(x, keepdim=True).clamp(min=eps)).contiguous()
        # Preallocated outputs: the batched iteration then allocates nothing per step.
        gram = x.new_empty(x.size(0), x.size(1), x.size(1))
        poly, spare = torch.empty_like(gram), torch.empty_like(x)
        for _ in range(steps):
            torch.bmm(x, x.mT, out=gram)
            torch.baddbmm(gram, gram, gram, beta=b, alpha=c, out=poly)
            torch.baddbmm(x, poly, x, beta=a, out=spare)
            x, spare = spare, x
    return x.mT if tall else x


def newton_schulz_flops(rows: int, cols: int, steps: int = 5) -> int:
    """Matmul FLOPs of `steps` Newton-Schulz iterations on one matrix: steps * (4 n^2 m + 2 n^3), n <= m."""
    n, m = min(rows, cols), max(rows, cols)
    return steps * (4 * n * n * m + 2 * n**3)


def muon_lr_scale(shape: torch.Size) -> float:
    """0.2*sqrt(max(n, m)) over the matrix dims (the last two; a leading dim indexes experts)."""
    return RMS_MATCH_FACTOR * math.sqrt(max(shape[-2], shape[-1]))


def default_ns_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow there without native bf16, and less precise), bf16 on accelerators."""
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def default_batched(device: torch.device) -> bool:
    """Shape buckets on accelerators (one launch per bucket); per-matrix on CPU, where the bucketed step
    measured ~17% slower on the tiny model (stacking costs more than batching saves; docs/benchmarks-optimizer.md)."""
    return device.type != "cpu"


def _row_blocks_view(tensor: Tensor, blocks: int) -> Tensor:
    """Split the rows of each matrix into `blocks` matrices: (.., r, c) -> (-1, r/blocks, c); identity for 1."""
    if blocks == 1:
        return tensor
    return tensor.reshape(-1, tensor.size(-2) // blocks, tensor.size(-1))


def _as_wide_stack(matrices: Tensor) -> Tensor:
    """View a 2-D matrix or 3-D stack as (k, n, m) with n <= m (tall matrices transposed)."""
    stack = matrices if matrices.ndim == 3 else matrices.unsqueeze(0)
    return stack.mT if stack.size(-2) > stack.size(-1) else stack


def _from_wide_stack(ortho: Tensor, like: Tensor) -> Tensor:
    """Undo `_as_wide_stack` for one parameter's slice of a bucket."""
    if like.size(-2) > like.size(-1):
        ortho = ortho.mT
    return ortho if like.ndim == 3 else ortho.squeeze(0)


def _orthogonalised(matrices: Tensor, group: dict[str, Any]) -> Tensor:
    """Newton-Schulz of one parameter's matrices with its group's settings, in the group's (or device's) dtype."""
    dtype = group["ns_dtype"] or default_ns_dtype(matrices.device)
    return newton_schulz(matrices, steps=group["ns_steps"], coefficients=group["ns_coefficients"], eps=group["eps"],
                         dtype=dtype)


class Muon(torch.optim.Optimizer):
    """Muon for hidden matrices plus AdamW for groups flagged `use_muon=False`.

    `ns_dtype=None` picks `default_ns_dtype(param.device)`, `batched=None` picks `default_batched`.
    `batched=True` runs one Newton-Schulz call per group of same-shape matrices; `batched=False` with
    `ns_dtype=torch.bfloat16` is bitwise equal to `torch.optim.Muon(adjust_lr_fn="match_rms_adamw")`.
    A group's `row_blocks=k` treats every parameter as k matrices stacked along rows (fused projections
    such as the experts' [gate; up]), each orthogonalised and lr-scaled on its own.
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
        batched: bool | None = None,
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
            batched=batched,
            row_blocks=1,
            eps=eps,
            adam_betas=tuple(adam_betas),
            adam_eps=adam_eps,
            use_muon=True,
        )
        super().__init__(params, defaults)
        self._partitions: dict[Tensor, FlatPartition] = {}
        for group in self.param_groups:
            if group["use_muon"]:
                for p in group["params"]:
                    if p.ndim not in (2, 3):
                        raise ValueError(
                            f"Muon group holds a parameter of shape {tuple(p.shape)}; only 2-D matrices and 3-D "
                            "expert stacks can be orthogonalised. Build groups with "
                            "k2core.optim.muon_param_groups, which routes other parameters to AdamW."
                        )
                    if p.size(-2) % group["row_blocks"]:
                        raise ValueError(
                            f"row_blocks={group['row_blocks']} does not divide the rows of shape {tuple(p.shape)}"
                        )

    def bind_partitions(self, partitions: Mapping[Tensor, FlatPartition]) -> None:
        """Declare flat ZeRO partitions (keyed by the flat parameter that replaced a Muon group's matrices)."""
        for flat, partition in partitions.items():
            if flat.ndim != 1 or flat.numel() != partition.size:
                raise ValueError(f"a flat partition must be 1-D with {partition.size} elements, got {tuple(flat.shape)}")
        self._partitions.update(partitions)

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
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        if params[0].ndim == 1:
            self._muon_flat_partition(group, params)
            return
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        grads = [p.grad for p in params]
        bufs = []
        for p, grad in zip(params, grads):
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grad)
            bufs.append(state["momentum_buffer"])
        torch._foreach_lerp_(bufs, grads, 1 - mu)
        directions = torch._foreach_lerp(grads, bufs, mu) if group["nesterov"] else bufs
        torch._foreach_mul_(params, 1 - lr * wd)
        matrices = [_row_blocks_view(d, group["row_blocks"]) for d in directions]
        batched = group["batched"] if group["batched"] is not None else default_batched(params[0].device)
        if not batched:
            for p, mats in zip(params, matrices):
                p.add_(_orthogonalised(mats, group).reshape(p.shape), alpha=-lr * muon_lr_scale(mats.shape))
            return
        buckets: dict[tuple[Any, ...], list[int]] = {}
        for i, mats in enumerate(matrices):
            rows, cols = mats.shape[-2:]
            buckets.setdefault((min(rows, cols), max(rows, cols), mats.dtype, mats.device), []).append(i)
        for (_, wide, _, _), members in buckets.items():
            stacks = [_as_wide_stack(matrices[i]) for i in members]
            ortho = _orthogonalised(torch.cat(stacks), group)
            pieces = ortho.split([s.size(0) for s in stacks])
            updates = [
                _from_wide_stack(piece, matrices[i]).reshape(params[i].shape) for i, piece in zip(members, pieces)
            ]
            torch._foreach_add_([params[i] for i in members], updates, alpha=-lr * RMS_MATCH_FACTOR * math.sqrt(wide))

    def _muon_flat_partition(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """The Muon update of one ZeRO flat partition: partitioned momentum, whole-matrix Newton-Schulz."""
        flat = params[0]
        partition = self._partitions.get(flat)
        if len(params) != 1 or partition is None:
            raise RuntimeError(
                "a Muon group holds a 1-D parameter: DeepSpeed ZeRO-1/2 replaced its matrices by a flat partition "
                "that was never bound. Call k2core.train.zero.bind_zero_partitions(engine.optimizer, muon) after "
                "deepspeed.initialize (k2core.train.run_training does)."
            )
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        state = self.state[flat]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(flat.grad)
        buf = state["momentum_buffer"]
        buf.lerp_(flat.grad, 1 - mu)
        direction = partition.gather(flat.grad.lerp(buf, mu) if group["nesterov"] else buf)
        flat.mul_(1 - lr * wd)
        for index, elements, local in partition.local_pieces():
            matrices = _row_blocks_view(partition.whole(direction, index), group["row_blocks"])
            update = _orthogonalised(matrices, group).reshape(-1)[elements]
            flat[local].add_(update, alpha=-lr * muon_lr_scale(matrices.shape))

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
