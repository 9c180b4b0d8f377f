"""The k1.5 loss: its gradient is minus eq. 3 of the note, and REINFORCE at theta = theta_old."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from k2core.rl.batch import pack_rollouts
from k2core.rl.loss import group_advantages, k15_loss, masked_nll, sampling_log_softmax, sequence_logprobs


class Bigram(nn.Module):
    """A tiny causal LM: the next-token logits depend on the current token only."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(vocab, vocab) * 0.5)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[input_ids])


def _grad(model: nn.Module, value: Tensor) -> Tensor:
    (g,) = torch.autograd.grad(value, [model.table], retain_graph=True)
    return g


@pytest.fixture
def setup() -> tuple[Bigram, Bigram, object]:
    torch.manual_seed(0)
    old = Bigram(6)
    new = copy.deepcopy(old)
    with torch.no_grad():
        new.table.add_(0.3 * torch.randn_like(new.table))
    prompts = [[0, 1], [2, 3, 4]]
    responses = [[[1, 2, 5], [3], [4, 4, 4, 1]], [[5, 5], [0, 1, 2], [2]]]
    rewards = [[1.0, 0.0, 0.5], [0.0, 0.0, 1.0]]
    return old, new, pack_rollouts(prompts, responses, rewards, pad_id=0)


def test_sequence_logprobs_sum_response_tokens_only_and_ignore_batching(setup) -> None:
    old, _, batch = setup
    logp = sequence_logprobs(old, batch.input_ids, batch.attention_mask, batch.response_mask)
    # Row 0 is prompt [0, 1] + response [1, 2, 5]: the response tokens are predicted from 1, 1, 2.
    table = torch.log_softmax(old.table, dim=-1)
    expected = table[1, 1] + table[1, 2] + table[2, 5]
    assert torch.allclose(logp[0], expected)
    for rows, ids, mask, resp in batch.micro_batches(1):
        alone = sequence_logprobs(old, ids, mask, resp)
        assert torch.allclose(alone, logp[rows])


@pytest.mark.parametrize("tau", [0.05, 1.0, 4.0])
def test_gradient_is_minus_eq3(setup, tau: float) -> None:
    old, new, batch = setup
    with torch.no_grad():
        old_logp = sequence_logprobs(old, batch.input_ids, batch.attention_mask, batch.response_mask).view(2, 3)
    logp = sequence_logprobs(new, batch.input_ids, batch.attention_mask, batch.response_mask).view(2, 3)
    loss = k15_loss(logp, old_logp, batch.rewards, tau)
    got = _grad(new, loss)

    adv = group_advantages(batch.rewards)
    eq3 = torch.zeros_like(new.table)
    for g in range(2):
        per_group = torch.zeros_like(new.table)
        for i in range(3):
            log_ratio = logp[g, i] - old_logp[g, i]
            per_group += _grad(new, logp[g, i]) * adv[g, i] - (tau / 2) * _grad(new, log_ratio.pow(2))
        eq3 += per_group / 3
    eq3 /= 2  # mean over the two prompts
    assert torch.allclose(got, -eq3, atol=1e-6)
    assert not torch.allclose(got, torch.zeros_like(got))


def test_at_theta_old_it_is_mean_baseline_reinforce(setup) -> None:
    old, _, batch = setup
    logp = sequence_logprobs(old, batch.input_ids, batch.attention_mask, batch.response_mask).view(2, 3)
    loss = k15_loss(logp, logp.detach(), batch.rewards, tau=0.7)
    got = _grad(old, loss)
    adv = batch.rewards - batch.rewards.mean(dim=1, keepdim=True)  # baseline includes the sample itself
    reinforce = _grad(old, (adv * logp).mean())
    assert torch.allclose(got, -reinforce, atol=1e-6)
    assert adv.sum().abs() < 1e-6


def test_all_equal_rewards_give_no_gradient_at_theta_old(setup) -> None:
    old, _, batch = setup
    logp = sequence_logprobs(old, batch.input_ids, batch.attention_mask, batch.response_mask).view(2, 3)
    loss = k15_loss(logp, logp.detach(), torch.ones(2, 3), tau=0.5)
    assert torch.count_nonzero(_grad(old, loss)) == 0


def test_tau_must_be_positive(setup) -> None:
    _, _, batch = setup
    with pytest.raises(ValueError, match="tau must be > 0"):
        k15_loss(torch.zeros(2, 3), torch.zeros(2, 3), batch.rewards, tau=0.0)


def test_masked_nll_is_token_mean_over_flagged_positions(setup) -> None:
    old, _, batch = setup
    nll = masked_nll(old, batch.input_ids[:1], batch.attention_mask[:1], batch.response_mask[:1])
    logp = sequence_logprobs(old, batch.input_ids[:1], batch.attention_mask[:1], batch.response_mask[:1])
    assert torch.allclose(nll, -logp[0] / 3)


def test_loss_value_is_k2s_formula_over_2tau_by_hand(setup) -> None:
    """K2 §3.2: L = E_x (1/K) sum_i (r_i - rbar - tau * log(pi/pi_old))^2, sequence-level log-ratio, rbar the mean
    over all K; ours is that over 2 tau. A bigram model whose log-probs are hand-set makes every number explicit."""
    old, _, _ = setup
    with torch.no_grad():
        old.table.zero_()  # uniform over 6 tokens: every token's log-prob is -log 6
    new = copy.deepcopy(old)
    with torch.no_grad():
        new.table[1, 2] = torch.log(torch.tensor(3.0))  # from token 1: p(2) = 3/8, the 5 others 1/8
    # two prompts, K = 2; response tokens predicted from: row 0 (1->2), row 1 (1->3), row 2 (0->4, 4->4), row 3 (2->1)
    batch = pack_rollouts([[0, 1], [0]], [[[2], [3]], [[4, 4], [1]]], [[1.0, 0.0], [0.5, 0.0]], pad_id=0)
    old_logp = sequence_logprobs(old, batch.input_ids, batch.attention_mask, batch.response_mask).view(2, 2)
    logp = sequence_logprobs(new, batch.input_ids, batch.attention_mask, batch.response_mask).view(2, 2)
    log6 = math.log(6)
    assert old_logp.flatten().tolist() == pytest.approx([-log6, -log6, -2 * log6, -log6])
    delta = [math.log(6 * 3 / 8), math.log(6 / 8), 0.0, 0.0]  # only the rows predicted from token 1 moved
    assert (logp - old_logp).flatten().tolist() == pytest.approx(delta, abs=1e-6)
    tau = 0.25
    advantages = [0.5, -0.5, 0.25, -0.25]  # r - mean of the group's two rewards
    k2 = sum((a - tau * d) ** 2 for a, d in zip(advantages, delta, strict=True)) / 4  # (1/2 prompts)(1/K) sum
    assert k15_loss(logp, old_logp, batch.rewards, tau).item() == pytest.approx(k2 / (2 * tau), rel=1e-6)
    # with the numbers written out: deltas log(9/4) and log(3/4)
    by_hand = ((0.5 - 0.25 * math.log(2.25)) ** 2 + (-0.5 - 0.25 * math.log(0.75)) ** 2 + 0.25**2 + 0.25**2) / 4
    assert k15_loss(logp, old_logp, batch.rewards, tau).item() == pytest.approx(by_hand / 0.5, rel=1e-6)


def test_sampling_log_softmax_is_the_samplers_nucleus_renormalised() -> None:
    torch.manual_seed(1)
    logits = torch.randn(5, 40) * 2
    temperature, top_p = 0.7, 0.6
    probs = torch.softmax(logits / temperature, dim=-1)
    for row in range(5):
        order = probs[row].argsort(descending=True)
        mass, kept = 0.0, []
        for token in order.tolist():  # the smallest prefix whose mass reaches top_p
            kept.append(token)
            mass += float(probs[row, token])
            if mass >= top_p:
                break
        target = int(order[len(kept)]) if len(kept) < 40 else kept[0]  # a token just outside the nucleus
        logp = sampling_log_softmax(logits[row:row + 1], torch.tensor([target]), temperature, top_p)[0]
        support = set(kept) | {target}
        norm = sum(float(probs[row, t]) for t in support)
        for token in range(40):
            if token in support:
                assert float(logp[token]) == pytest.approx(math.log(float(probs[row, token]) / norm), rel=1e-5)
            else:
                assert logp[token] == float("-inf")
    plain = sampling_log_softmax(logits, torch.zeros(5, dtype=torch.long), temperature, 1.0)
    assert torch.allclose(plain, torch.log_softmax(logits / temperature, dim=-1))
    with pytest.raises(ValueError, match="temperature > 0"):
        sampling_log_softmax(logits, torch.zeros(5, dtype=torch.long), 0.0, 1.0)
