"""The K2 Muon update written plainly in float64: the yardstick for every Muon implementation's fidelity.

K2 Algorithm 1 with Moonlight's settings: sum momentum M = mu M + G, Nesterov G + mu M, five quintic Newton-Schulz
steps on X / ||X||_F (transposed when rows > cols), the update scaled by 0.2 sqrt(max(n, m)), decoupled weight decay
W <- W (1 - lr wd) with the unscaled lr. A 3-D tensor is a stack of matrices, each orthogonalised on its own.
Used by the Muon tests and benchmarks/muon_step.py; slow by design (no batching, no fusion).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from k2core.optim.newton_schulz import NS_COEFFICIENTS


def newton_schulz_fp64(matrix: Tensor, steps: int = 5, coefficients: tuple[float, float, float] = NS_COEFFICIENTS
                       ) -> Tensor:
    """The quintic Newton-Schulz iteration of one 2-D matrix in float64, transposing a tall one."""
    a, b, c = coefficients
    x = matrix.double()
    tall = x.size(0) > x.size(1)
    x = x.T if tall else x
    x = x / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def k2_muon_fp64(init: Tensor, grads: Sequence[Tensor], lr: float, weight_decay: float, momentum: float = 0.95,
                 nesterov: bool = True) -> Tensor:
    """The weight (float64) after one K2 Muon step per gradient in `grads`, starting from `init` (2-D or 3-D)."""
    weight = init.double().clone()
    buf = torch.zeros_like(weight)
    for grad in grads:
        grad = grad.double()
        buf = momentum * buf + grad
        direction = grad + momentum * buf if nesterov else buf
        matrices = direction if direction.ndim == 3 else direction.unsqueeze(0)
        ortho = torch.stack([newton_schulz_fp64(m) for m in matrices]).reshape(weight.shape)
        scale = 0.2 * max(weight.shape[-2:]) ** 0.5
        weight = weight * (1 - lr * weight_decay) - lr * scale * ortho
    return weight


def relative_error(weight: Tensor, reference: Tensor, init: Tensor) -> float:
    """||(W - W0) - (W_ref - W0)||_F / ||W_ref - W0||_F: an update's error relative to the reference update."""
    init = init.double()
    return ((weight.double() - reference.double()).norm() / (reference.double() - init).norm()).item()
