"""WSD schedule shape: warm-up ramp, flat middle, decay to the final fraction."""

from __future__ import annotations

import pytest
import torch

from k2core.optim import wsd_from_fractions, wsd_lambda


@pytest.mark.parametrize("shape", ["cosine", "linear"])
def test_wsd_phases(shape):
    f = wsd_lambda(total_steps=20, warmup_steps=4, decay_steps=8, final_fraction=0.1, decay_shape=shape)
    values = [f(s) for s in range(20)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4:12] == [1.0] * 8
    decay = values[12:]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert decay[-1] == pytest.approx(0.1)
    assert min(values) >= 0.1


def test_cosine_decay_is_above_linear_midway():
    cos = wsd_lambda(10, 0, 10, 0.0, "cosine")
    lin = wsd_lambda(10, 0, 10, 0.0, "linear")
    assert cos(2) > lin(2) and cos(7) < lin(7)


def test_fractions_and_lambda_lr_drive_every_group():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias]}], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, wsd_from_fractions(10, 0.2, 0.3, 0.1))
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0] == [0.25, 0.25] and lrs[5] == [0.5, 0.5]
    assert lrs[-1][0] == pytest.approx(0.05)


def test_phases_longer_than_run_are_rejected():
    with pytest.raises(ValueError, match="exceed total steps"):
        wsd_lambda(10, 6, 6, 0.1)
