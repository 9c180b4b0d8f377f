"""MoE under data parallelism: 1 rank x micro-batch 2 against 2 ranks x micro-batch 1, decision by decision.

What this pins (numbers and the long-run picture in docs/distributed.md): splitting the global batch changes an MoE
model's step-1 gradient only by fp32 rounding and changes no routing decision; over the 4-step run of the dense test
(QK-Clip and the aux-loss-free router-bias update at every step) every top-k set and router bias stays identical, so
the losses match at the dense tolerance. No MoE statistic is normalised per rank. What breaks equality on long runs is
a flip: the test with one injected flip shows its size (a loss change at once, past the tolerance two steps later)
and how the bias update's sign() passes it on (only when a load reaches or leaves the mean).

The multi-rank test starts this file as a worker through the deepspeed launcher, like tests/test_train_distributed.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from k2core.model import K2ForCausalLM, update_router_bias
from k2core.model.moe import TopKRouter
from k2core.train import PretrainConfig
from k2core.train.data import batch_indices, load_tokenizer, pack_corpus
from tests import test_train_distributed as dense_dp
from tests.test_train_distributed import DP_RUN, _losses, _train, _weights, launch_ranks
from tests.test_train_loop import MODEL, loop_config

MOE = MODEL.model_copy(update={"first_k_dense_replace": 0})  # both layers routed: 4 experts, top-2, bias speed 1e-3
TOL = 1e-5  # the dense 1-vs-2-rank loss tolerance of tests/test_train_distributed.py
inputs = dense_dp.inputs  # its module-scoped corpus + tokenizer fixture


def _selection_scores(router: TopKRouter, x: torch.Tensor) -> torch.Tensor:
    """What the router ranks to pick experts: sigmoid affinity plus the balancing bias, [tokens, experts]."""
    return F.linear(x.float(), router.weight.float()).sigmoid() + router.e_score_correction_bias


class Recorder:
    """While active: every training-time routing decision (sorted top-k set, selection scores), in call order,
    and the gradients the optimizer receives at its first step (after DeepSpeed's all-reduce and clipping)."""

    def __init__(self) -> None:
        self.routes: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []
        self.first_grads: list[torch.Tensor] | None = None

    def _on_forward(self, module: nn.Module, args: tuple, output: object) -> None:
        if isinstance(module, TopKRouter) and module.training and torch.is_grad_enabled():
            self.routes.append(output[0].sort(dim=-1).values)
            self.scores.append(_selection_scores(module, args[0]).detach())

    def _on_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self.first_grads is None:
            self.first_grads = [p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]]

    def __enter__(self) -> Recorder:
        self._handles = [register_module_forward_hook(self._on_forward),
                         register_optimizer_step_pre_hook(self._on_step)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()


def _margins(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """Per token: how far the k-th chosen expert's score is above the best unchosen one."""
    top = scores.topk(top_k + 1, dim=-1).values
    return top[:, -2] - top[:, -1]


def _assert_grads_close(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    """Every tensor within TOL of its own scale; returns the worst max|diff| / max|ref|."""
    worst = 0.0
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        rel = float((a - b).abs().max() / b.abs().max())
        assert rel <= TOL, f"gradient {i} {tuple(b.shape)}: max|diff|/max|ref| = {rel:.2e}"
        worst = max(worst, rel)
    return worst


def _backward(model: K2ForCausalLM, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """Mean-loss gradient over equally weighted micro-batches: what DeepSpeed forms from accumulation and ranks."""
    model.zero_grad()
    for input_ids, labels in batches:
        (model(input_ids=input_ids, labels=labels).loss / len(batches)).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_step_one_gradient_and_routing_do_not_depend_on_the_batch_split(inputs):
    """Step 1 of 1 rank x micro-batch 2 (two accumulated micro-batches) against 2 ranks x micro-batch 1 (four
    single-sample forwards, averaged as accumulation + all-reduce average them): same top-k sets and loads, and
    every gradient within TOL (measured 2e-7: only the summation order over tokens differs)."""
    cfg = PretrainConfig(**loop_config(**DP_RUN))
    train, _ = pack_corpus(inputs["corpus"], load_tokenizer(inputs["tokenizer"]), cfg.seq_len, cfg.val_fraction,
                           cfg.seed)
    samples = [train.batch(batch_indices(len(train), i, 1, cfg.seed)) for i in range(4)]
    pairs = [tuple(torch.cat(parts) for parts in zip(*samples[i:i + 2])) for i in (0, 2)]
    torch.manual_seed(cfg.seed)
    model = K2ForCausalLM(MOE).train()
    routers = [m for m in model.modules() if isinstance(m, TopKRouter)]
    with Recorder() as joint:
        ref = _backward(model, pairs)
    joint_loads = [r.expert_load.clone() for r in routers]
    for router in routers:
        router.expert_load.zero_()
    with Recorder() as split:
        ours = _backward(model, samples)
    assert [r.expert_load.tolist() for r in routers] == [load.tolist() for load in joint_loads]
    _assert_grads_close(ours, ref)
    # joint: [pair 0: layer 0, layer 1], [pair 1: ...]; split: [sample 0: layer 0, layer 1], ... per sample
    layers = MOE.num_hidden_layers
    for pair in range(2):
        for layer in range(layers):
            halves = [split.routes[(2 * pair + half) * layers + layer] for half in range(2)]
            assert torch.equal(torch.cat(halves), joint.routes[pair * layers + layer])


def test_one_flipped_decision_moves_the_bias_only_when_a_load_crosses_the_mean():
    """bias += speed * sign(mean - load): a flip moves one token from expert a to b (the mean is fixed); the bias
    changes exactly where a load reaches or leaves the mean, by exactly speed, and nowhere else."""
    speed = 1e-3

    def bias_after(loads: list[int]) -> torch.Tensor:
        model = K2ForCausalLM(MODEL)
        router = next(m for m in model.modules() if isinstance(m, TopKRouter))
        router.expert_load.copy_(torch.tensor(loads))
        update_router_bias(model, speed)
        return router.e_score_correction_bias.clone()

    # step 1's measured loads (mean 32): moving one token between experts 0 and 1 crosses no mean
    assert torch.equal(bias_after([27, 35, 22, 44]), bias_after([28, 34, 22, 44]))
    # expert 1 at the mean goes over it, expert 2 reaches it: two bias entries move by exactly speed
    diff = bias_after([31, 32, 33, 32]) - bias_after([31, 33, 32, 32])
    assert torch.equal(diff, torch.tensor([0.0, speed, -speed, 0.0]))


def _flip_one_decision(forward: int) -> object:
    """A global forward hook that, in the `forward`-th training forward (1-based), makes the first router swap its
    smallest-margin token's k-th expert for its (k+1)-th, as a rounding-level score change would, load included."""
    seen = {"calls": 0}

    def hook(module: nn.Module, args: tuple, output: tuple[torch.Tensor, torch.Tensor]) -> object:
        if not (isinstance(module, TopKRouter) and module.training and torch.is_grad_enabled()):
            return None
        seen["calls"] += 1
        if seen["calls"] != (forward - 1) * MOE.num_hidden_layers + 1:  # routers run once per layer per forward
            return None
        index = output[0].clone()
        scores = _selection_scores(module, args[0])
        ranked = scores.topk(module.top_k + 1, dim=-1).indices
        token = int(_margins(scores, module.top_k).argmin())
        dropped, taken = int(ranked[token, -2]), int(ranked[token, -1])
        index[token][index[token] == dropped] = taken
        affinity = F.linear(args[0].float(), module.weight.float()).sigmoid().gather(1, index)
        module.expert_load[dropped] -= 1
        module.expert_load[taken] += 1
        return index, affinity / affinity.sum(-1, keepdim=True) * module.routed_scaling_factor

    return hook


def _step_loads(routes: list[torch.Tensor], step: int, layer: int, per_step: int) -> torch.Tensor:
    """Expert load of one layer's router summed over the micro-batches of one (1-based) step."""
    calls = routes[(step - 1) * per_step:step * per_step][layer::MOE.num_hidden_layers]
    return torch.bincount(torch.cat(calls).flatten(), minlength=MOE.n_routed_experts)


def test_a_single_flipped_decision_diverges_and_moves_the_bias(inputs, tmp_path):
    """What one rounding-level flip does in the real loop: flipping ONE of step 2's 128 top-k choices (its closest
    call) changes that step's loss (measured 3e-6 relative), grows past TOL within two steps (measured 4e-5 at step
    4), and, because it moved an expert's load onto or off the mean, changes the router bias by the sign() rule. A
    loss tolerance alone would miss it for a step, so the multi-rank test compares decisions directly."""
    cfg = loop_config(**DP_RUN)
    with Recorder() as base:
        reference = _losses(_train(cfg, inputs, tmp_path / "base", model=MOE))
    handle = register_module_forward_hook(_flip_one_decision(forward=cfg["gradient_accumulation"] + 1))
    try:
        with Recorder() as flipped:
            perturbed = _losses(_train(cfg, inputs, tmp_path / "flip", model=MOE))
    finally:
        handle.remove()
    per_step = cfg["gradient_accumulation"] * MOE.num_hidden_layers  # router calls per step
    assert all(torch.equal(a, b) for a, b in zip(base.routes[:per_step], flipped.routes[:per_step]))
    assert int((flipped.routes[per_step] != base.routes[per_step]).any(-1).sum()) == 1
    rel = [abs(a - b) / b for a, b in zip(perturbed, reference)]
    assert rel[0] == 0 and rel[1] > 0 and max(rel) > TOL, rel
    loads = [_step_loads(run.routes, 2, 0, per_step) for run in (base, flipped)]
    mean = loads[0].sum() / MOE.n_routed_experts
    assert not torch.equal(torch.sign(mean - loads[0]), torch.sign(mean - loads[1]))  # the flip crossed the mean
    bias = "model.layers.0.mlp.gate.e_score_correction_bias"
    assert not torch.equal(_weights(tmp_path / "flip")[bias], _weights(tmp_path / "base")[bias])


@pytest.mark.multiproc
def test_moe_two_ranks_match_one_rank_decision_for_decision(inputs, tmp_path):
    """The real launcher, the real loop, router-bias updates on (speed 1e-3) and QK-Clip active: step-1 gradients
    within TOL, every top-k set of every token identical at every step (the scores differ by far less than the
    closest call), router biases bitwise equal, losses within the dense tolerance. Measured: step-1 gradients 2.5e-7
    apart, scores at most 6e-8 (one fp32 ulp) apart against a closest call of 1.5e-4, losses 2e-8 apart."""
    cfg = loop_config(**DP_RUN)
    with Recorder() as one:
        reference = _losses(_train(cfg, inputs, tmp_path / "dp1", model=MOE))
    payload = {"cfg": loop_config(micro_batch_size=1, **DP_RUN), "out": str(tmp_path),
               **{key: str(path) for key, path in inputs.items()}}
    launch_ranks(Path(__file__), payload)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["losses"] == ranks[1]["losses"]
    torch.testing.assert_close(torch.tensor(ranks[0]["losses"]), torch.tensor(reference), rtol=TOL, atol=0)
    _assert_grads_close(ranks[0]["first_grads"], one.first_grads)
    # 1 rank's micro-batch m holds the sample of rank 0's micro-batch m, then rank 1's
    calls = cfg["steps"] * cfg["gradient_accumulation"] * MOE.num_hidden_layers
    assert len(one.routes) == len(ranks[0]["routes"]) == calls
    score_gap = 0.0
    for i, (routes, scores) in enumerate(zip(one.routes, one.scores, strict=True)):
        assert torch.equal(torch.cat([r["routes"][i] for r in ranks]), routes), f"router call {i}"
        score_gap = max(score_gap, float((torch.cat([r["scores"][i] for r in ranks]) - scores).abs().max()))
    closest = float(torch.cat([_margins(s, MOE.num_experts_per_tok) for s in one.scores]).min())
    assert score_gap < closest / 100
    ours, ref = _weights(tmp_path / "dp2"), _weights(tmp_path / "dp1")
    for name in ref:
        if name.endswith("e_score_correction_bias"):
            assert torch.equal(ours[name], ref[name]) and ref[name].abs().sum() > 0, name
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-5)


def _worker(args: dict) -> None:
    """Each rank: one recorded MoE run; every rank saves its own routing decisions and first-step gradients."""
    torch.set_num_threads(1)
    out = Path(args["out"])
    inputs = {key: Path(args[key]) for key in ("corpus", "tokenizer")}
    with Recorder() as rec:
        losses = _losses(_train(args["cfg"], inputs, out / "dp2", model=MOE))
    torch.save({"losses": losses, "routes": rec.routes, "scores": rec.scores, "first_grads": rec.first_grads},
               out / f"rank{torch.distributed.get_rank()}.pt")


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
