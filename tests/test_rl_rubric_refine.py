"""The DPO refinement step of a k2-checkpoint critic on the closed loop's preference rows."""

import copy
import math

import pytest
import torch

from k2core.chat import IM_END
from k2core.rl.loss import sequence_logprobs
from k2core.rl.rubric import Disagreement, load_library, preference_examples, preference_frame, select_rubrics
from k2core.rl.rubric.refine import dpo_loss, preference_batch, refine_critic
from tests.test_rl_trainer import build_tokenizer, tiny_model

MAX_LEN = 256


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def frame():
    rubrics = select_rubrics(load_library(), [])
    disagreements = [Disagreement("What is 3 * 4?", "12", "Great question! It is 13.", "incorrect", rubrics),
                     Disagreement("What is 2 + 2?", "4", "5", "tie", rubrics)]
    return preference_frame(preference_examples(disagreements))


def test_dpo_loss_by_hand():
    one = torch.tensor([1.0])
    zero = torch.tensor([0.0])
    # margin = beta * ((1 - 0) - (-1 - 0)) = 0.5 * 2 = 1  ->  -log sigmoid(1) = log(1 + e^-1)
    assert dpo_loss(one, -one, zero, zero, beta=0.5).item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    assert dpo_loss(zero, zero, zero, zero, beta=0.1).item() == pytest.approx(math.log(2.0), rel=1e-6)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(one, one, one, one, beta=0.0)


def test_reply_mask_covers_exactly_the_verdict(tokenizer, frame):
    (ids, attention, reply), (r_ids, _, r_reply) = preference_batch(tokenizer, frame.iloc[:2], MAX_LEN)
    assert ids.shape[1] <= MAX_LEN
    for row in range(2):
        text = tokenizer.decode(ids[row][reply[row]].tolist())
        assert text.startswith("VIOLATIONS:") and "VERDICT:" in text and text.endswith(IM_END)
    assert tokenizer.decode(ids[0][reply[0]].tolist()).split("VERDICT: ")[1].startswith("A")
    assert tokenizer.decode(r_ids[0][r_reply[0]].tolist()).split("VERDICT: ")[1].startswith("B")
    assert "no_initial_praise" in tokenizer.decode(ids[0][reply[0]].tolist())  # the detectors' flag on B
    with pytest.raises(ValueError, match="max_len"):
        preference_batch(tokenizer, frame.iloc[:1], 8)


def test_refinement_moves_the_critic_toward_the_verified_verdicts(tokenizer, frame):
    # The rows that show the verified-correct response as A: a preference a random tiny model can pick up in a few
    # steps (the full frame is order-balanced, which needs real judging ability, not what this test is about).
    rows = frame.iloc[::2]
    critic = tiny_model(len(tokenizer))
    reference = copy.deepcopy(critic)
    optimizer = torch.optim.AdamW(critic.parameters(), lr=3e-3)
    losses = [refine_critic(critic, reference, tokenizer, rows, optimizer, beta=0.5, batch_size=4,
                            max_len=MAX_LEN)[0] for _ in range(6)]
    assert losses[0] == pytest.approx(math.log(2.0), abs=1e-5)  # critic == reference before the first step
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.35
    chosen, rejected = preference_batch(tokenizer, rows, MAX_LEN)
    with torch.no_grad():
        margin = (sequence_logprobs(critic, *chosen) - sequence_logprobs(critic, *rejected)) \
            - (sequence_logprobs(reference, *chosen) - sequence_logprobs(reference, *rejected))
    assert bool((margin > 0).all())
    with pytest.raises(ValueError, match="no critic preference rows"):
        refine_critic(critic, reference, tokenizer, frame.iloc[:0], optimizer)
