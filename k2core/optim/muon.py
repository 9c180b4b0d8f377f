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

Precision of Newton-Schulz is chosen by what the hardware multiplies fast (`default_ns_dtype`, a one-time measured
probe on CPU, k2core/optim/ns_precision.py): bf16 where bf16 matmuls are >= 1.5x faster than fp32 (accelerators,
CPUs with AVX512-BF16/AMX), fp32 elsewhere (a CPU without native bf16 runs bf16 GEMMs ~10x slower). `ns_dtype`
("auto", "bf16", "fp32" or a torch dtype) overrides it.

With `batched=True` (the default) the matrices of a group are orthogonalised in buckets, each matrix seen in its
wide layout (a tall one transposed, which transposes its update exactly). In fp32/fp64, a matrix whose long side is
>= 2x its short side n takes the Gram iteration (`gram=True`, k2core/optim/newton_schulz.py): its R_0 = X X^T is
formed per matrix, every n x n R_0 of the group with the same n is iterated in one batched call, and the update
Q X_0 is one matmul per matrix: the matrix itself is never normalised, stacked or copied. Other matrices (square,
nearly square, or bf16) are stacked by (n, m) and run the standard iteration batched. Results equal the per-matrix
path up to rounding (to ~1e-12 in fp64), and a matrix's result does not depend on which others share its bucket, so
the ZeRO path (one parameter at a time) matches the single-process step bit for bit.
`batched=False` orthogonalises each parameter on its own in torch's op order: with `ns_dtype=torch.bfloat16` it is
bitwise equal to `torch.optim.Muon`.

Under ZeRO-1/2 a Muon group holds one flat 1-D partition instead of its matrices; `bind_partitions` tells the
optimizer how that partition maps onto the matrices (`FlatPartition`), and the step then orthogonalises whole matrices
gathered from every rank and applies this rank's share (Distributed Muon, k2core/optim/flat_partition.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from k2core.optim.flat_partition import FlatPartition
from k2core.optim.newton_schulz import (
    NS_COEFFICIENTS,
    gram_polynomial,
    gram_product,
    newton_schulz,
    newton_schulz_flops,
    normalised_grams,
    uses_gram,
    wide,
)
from k2core.optim.ns_precision import check_ns_dtype, default_ns_dtype, resolve_ns_dtype

__all__ = ["NS_COEFFICIENTS", "Muon", "default_ns_dtype", "muon_lr_scale", "newton_schulz", "newton_schulz_flops"]

RMS_MATCH_FACTOR = 0.2


def muon_lr_scale(shape: torch.Size) -> float:
    """0.2*sqrt(max(n, m)) over the matrix dims (the last two; a leading dim indexes experts)."""
    return RMS_MATCH_FACTOR * math.sqrt(max(shape[-2], shape[-1]))


def _row_blocks_view(tensor: Tensor, blocks: int) -> Tensor:
    """Split the rows of each matrix into `blocks` matrices: (.., r, c) -> (-1, r/blocks, c); identity for 1.
    Always a view: the bucketed step writes parameter updates through it."""
    if blocks == 1:
        return tensor
    return tensor.view(-1, tensor.size(-2) // blocks, tensor.size(-1))


def _orthogonalised(matrices: Tensor, group: dict[str, Any]) -> Tensor:
    """Standard Newton-Schulz of one parameter's matrices (2-D or 3-D) in torch's op order, in the group's dtype."""
    return newton_schulz(matrices, steps=group["ns_steps"], coefficients=group["ns_coefficients"], eps=group["eps"],
                         dtype=resolve_ns_dtype(group["ns_dtype"], matrices.device))


def _bucketed_orthogonalised(matrices: Sequence[Tensor], group: dict[str, Any]) -> list[Tensor]:
    """Newton-Schulz of 2-D matrices of any shapes, bucketed: the Gram iteration batched over every Gram-eligible
    matrix with the same short side n, the standard one over each (n, m) stack. Each result has its matrix's layout,
    in the group's NS dtype, and does not depend on its bucket-mates (per-matrix products, batch-invariant batched
    ones), so the ZeRO path, which buckets one parameter at a time, gets the same bits as the whole-group step."""
    steps, coefficients, eps = group["ns_steps"], group["ns_coefficients"], group["eps"]
    gram_buckets: dict[tuple[Any, ...], list[int]] = {}
    plain_buckets: dict[tuple[Any, ...], list[int]] = {}
    for i, matrix in enumerate(matrices):
        dtype = resolve_ns_dtype(group["ns_dtype"], matrix.device)
        rows, cols = matrix.shape
        n, m = min(rows, cols), max(rows, cols)
        if uses_gram(rows, cols, dtype, group["gram"]):
            gram_buckets.setdefault((n, dtype, matrix.device), []).append(i)
        else:
            plain_buckets.setdefault((n, m, dtype, matrix.device), []).append(i)
    results: list[Tensor] = list(matrices)
    for (_, dtype, _), members in gram_buckets.items():
        grams, inv_norm = normalised_grams([matrices[i] for i in members], dtype, eps)
        q = gram_polynomial(grams, steps, coefficients).mul_(inv_norm)
        for q_i, i in zip(q, members):
            results[i] = gram_product(q_i, matrices[i])
    for (_, _, dtype, _), members in plain_buckets.items():
        ortho = newton_schulz(torch.stack([wide(matrices[i]) for i in members]), steps=steps,
                              coefficients=coefficients, eps=eps, dtype=dtype)
        for o, i in zip(ortho, members):
            results[i] = o.mT if matrices[i].size(-2) > matrices[i].size(-1) else o
    return results


def _as_matrices(tensor: Tensor) -> list[Tensor]:
    """A 2-D matrix or the matrices of a 3-D stack, as views."""
    return list(tensor) if tensor.ndim == 3 else [tensor]


class Muon(torch.optim.Optimizer):
    """Muon for hidden matrices plus AdamW for groups flagged `use_muon=False`.

    `ns_dtype` None or "auto" picks `default_ns_dtype(param.device)`; "bf16"/"fp32" or a dtype force it.
    `batched=True` (also for None) orthogonalises a group in buckets, with the Gram iteration for strongly rectangular
    fp32 matrices unless `gram=False`; `batched=False` with `ns_dtype=torch.bfloat16` is bitwise equal to
    `torch.optim.Muon(adjust_lr_fn="match_rms_adamw")`.
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
        ns_dtype: torch.dtype | str | None = None,
        batched: bool | None = None,
        gram: bool = True,
        eps: float = 1e-7,
        adam_betas: tuple[float, float] = (0.9, 0.95),
        adam_eps: float = 1e-8,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1:
            raise ValueError(
                f"need lr >= 0, weight_decay >= 0, 0 <= momentum < 1; got {lr}, {weight_decay}, {momentum}"
            )
        check_ns_dtype(ns_dtype)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            ns_steps=ns_steps,
            ns_coefficients=tuple(ns_coefficients),
            ns_dtype=ns_dtype,
            batched=batched,
            gram=gram,
            row_blocks=1,
            eps=eps,
            adam_betas=tuple(adam_betas),
            adam_eps=adam_eps,
            use_muon=True,
        )
        super().__init__(params, defaults)
        self._partitions: dict[Tensor, FlatPartition] = {}
        for group in self.param_groups:
            check_ns_dtype(group["ns_dtype"])
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

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Groups saved before the `gram` option existed load with its default."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("gram", True)

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
        matrices = [_row_blocks_view(d, group["row_blocks"]) for d in directions]
        if group["batched"] is False:
            torch._foreach_mul_(params, 1 - lr * wd)
            for p, mats in zip(params, matrices):
                p.add_(_orthogonalised(mats, group).reshape(p.shape), alpha=-lr * muon_lr_scale(mats.shape))
            return
        self._bucketed_update(group, params, matrices)

    def _bucketed_update(self, group: dict[str, Any], params: list[Tensor], matrices: list[Tensor]) -> None:
        """Orthogonalise every matrix of the group in buckets, then decay and update each parameter in place."""
        lr = group["lr"]
        targets, step_sizes, flat = [], [], []
        for p, mats in zip(params, matrices):
            views = _as_matrices(_row_blocks_view(p, group["row_blocks"]))
            targets += views
            step_sizes += [lr * muon_lr_scale(mats.shape)] * len(views)
            flat += _as_matrices(mats)
        ortho = _bucketed_orthogonalised(flat, group)
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        for target, o, step_size in zip(targets, ortho, step_sizes):
            target.add_(o, alpha=-step_size)

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
            if group["batched"] is False:
                update = _orthogonalised(matrices, group).reshape(-1)[elements]
            else:
                update = torch.stack(_bucketed_orthogonalised(_as_matrices(matrices), group)).reshape(-1)[elements]
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
