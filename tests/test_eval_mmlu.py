"""MMLU: the data, the few-shot split, the letter parser, oracle/constant/random/swapped backends, and the
log-likelihood path on a real (tiny) model against a direct computation."""

import json
import random
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from k2core.errors import UserError
from k2core.eval.harness import TaskOptions, run_task
from k2core.eval.mmlu import LETTERS, load_questions, parse_choice, split_shots
from k2core.eval.registry import build_tasks
from k2core.llm import K2LLMConfig, LocalLLMConfig, make_backend
from k2core.llm.loglik import continuation_logprobs, document_prefix
from tests.gold_replier import GoldReplier
from tests.tiny_k2 import tiny_checkpoint

N = 400  # seeded subset size for the chance-level checks


def test_the_test_split_is_complete_and_the_shots_are_held_out():
    questions = load_questions()
    assert len(questions) == 14042 and len({q.id for q in questions}) == 14042
    subjects = Counter(q.subject for q in questions)
    assert len(subjects) == 57 and min(subjects.values()) == 100 and subjects["professional law"] == 1534
    assert all(q.answer in LETTERS and len(q.choices) == 4 for q in questions)
    shots, pool = split_shots(questions)
    assert all(len(s) == 5 and {q.subject for q in s} == {subject} for subject, s in shots.items())
    assert len(pool) == 14042 - 57 * 5
    assert not {q.id for s in shots.values() for q in s} & {q.id for q in pool}
    assert split_shots(questions) == (shots, pool)  # fixed seed: the same shots every run


@pytest.mark.parametrize("reply, letter", [
    ("B", "B"), ("b", "B"), ("B.", "B"), ("(C)", "C"), ("D) Paris", "D"), ("The answer is (B)", "B"),
    ("the answer is c.", "C"), ("Answer: A", "A"), ("I think it is C because of X.", "C"),
    ("A or B", None), ("A and C are both right", None), ("The answer is A. No, the answer is B.", None),
    ("A cell divides", None), ("", None), ("none of them", None), ("E", None),
])
def test_the_letter_parser_on_near_misses(reply, letter):
    assert parse_choice(reply) == letter


def _task(name="mmlu", limit=N, loglik=False):
    return build_tasks([name], TaskOptions(limit=limit, seed=0, loglikelihood=loglik))[0]


def _swap(letter):
    return LETTERS[(LETTERS.index(letter) + 1) % 4]


@pytest.mark.parametrize("name", ["mmlu", "mmlu_5shot"])
def test_an_oracle_scores_100_and_a_swapped_letter_scores_0(name):
    task = _task(name, limit=200)
    assert run_task(task, GoldReplier(task, lambda t: f"The answer is ({t})."), progress=False
                    ).metrics["accuracy"].value == 1.0
    assert run_task(task, GoldReplier(task, lambda t: _swap(t)), progress=False).metrics["accuracy"].value == 0.0


def test_constant_and_random_backends_score_chance():
    task = _task()
    shares = Counter(s.target for s in task.samples)
    constant = run_task(task, GoldReplier(task, lambda t: "A"), progress=False).metrics["accuracy"]
    assert constant.value == shares["A"] / N  # exactly the share of A among the targets
    rng = random.Random(0)
    guessed = run_task(task, GoldReplier(task, lambda t: rng.choice(LETTERS)), progress=False).metrics["accuracy"]
    tolerance = 3 * (0.25 * 0.75 / N) ** 0.5  # 3 binomial standard deviations
    assert abs(guessed.value - 0.25) < tolerance
    assert guessed.ci_low < 0.25 < guessed.ci_high


class LetterScores:
    """A log-likelihood backend that puts the most mass on the continuation `pick(target index)`."""

    backend_id = "letter-scores"

    def __init__(self, task, pick):
        self.gold = {s.metadata["prompt"]: LETTERS.index(s.target) for s in task.samples}
        self.pick = pick

    def complete(self, request):
        raise AssertionError("log-likelihood tasks must not generate")

    def loglikelihood(self, prompt, continuations):
        best = self.pick(self.gold[prompt])
        # -1 (best) or -5 nats per character: the best is the argmax whether or not scores are length-normalised
        return [-(1.0 if i == best else 5.0) * len(c) for i, c in enumerate(continuations)]


def test_loglikelihood_oracle_scores_100_and_swapped_scores_0():
    for name in ("mmlu", "mmlu_cloze"):
        task = _task(name, limit=100, loglik=True)
        assert run_task(task, LetterScores(task, lambda i: i), progress=False).metrics["accuracy"].value == 1.0
        assert run_task(task, LetterScores(task, lambda i: (i + 1) % 4), progress=False
                        ).metrics["accuracy"].value == 0.0


def test_cloze_needs_loglikelihoods():
    with pytest.raises(UserError, match="log-likelihood"):
        _task("mmlu_cloze", loglik=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("mmlu-k2"))


def _direct(model, tokenizer, prefix, prompt, continuation):
    """Sum of log p(continuation tokens) from one full forward pass over prefix + prompt + continuation."""
    context = tokenizer.encode(prompt, add_special_tokens=False)
    whole = tokenizer.encode(prompt + continuation, add_special_tokens=False)
    ids = torch.tensor([prefix + whole])
    with torch.no_grad():
        logprobs = F.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    start = len(prefix) + len(context)
    return sum(float(logprobs[pos - 1, ids[0, pos]]) for pos in range(start, ids.shape[1]))


@pytest.mark.parametrize("name", ["mmlu", "mmlu_cloze"])
def test_k2_loglikelihood_picks_the_argmax_of_a_direct_computation(checkpoint, name, tmp_path):
    backend = make_backend(K2LLMConfig(kind="k2", path=str(checkpoint)))
    model, tokenizer = backend.loaded.model, backend.loaded.tokenizer
    task = _task(name, limit=6, loglik=True)
    task.samples = [s for s in task.samples if len(tokenizer.encode(s.metadata["prompt"])) < 400][:3]
    assert task.samples
    result = run_task(task, backend, tmp_path, progress=False)
    lines = (tmp_path / f"{name}.samples.jsonl").read_text().splitlines()
    prefix = [document_prefix(tokenizer)]
    for sample, line in zip(task.samples, lines, strict=True):
        direct = [_direct(model, tokenizer, prefix, sample.metadata["prompt"], c) for c in sample.metadata["continuations"]]
        logged = json.loads(line)
        assert logged["response"] == pytest.approx(direct, abs=1e-3)
        scores = direct if name == "mmlu" else [lp / len(c) for lp, c in zip(direct, sample.metadata["continuations"])]
        assert logged["answer"] == LETTERS[max(range(4), key=scores.__getitem__)]
    assert result.n == len(task.samples)


def test_local_backend_loglikelihood_matches_the_hf_model(checkpoint):
    backend = make_backend(LocalLLMConfig(kind="local", path=str(checkpoint)))
    model, tokenizer = backend.loaded.model, backend.loaded.tokenizer
    prompt, continuations = "Document 3: the weather in Paris is", [" 3", " 4 degrees", " cold"]
    prefix = tokenizer.encode("", add_special_tokens=True)
    got = backend.loglikelihood(prompt, continuations)
    assert got == pytest.approx([_direct(model, tokenizer, prefix, prompt, c) for c in continuations], abs=1e-3)
    # the one-pass path (every continuation one token after the same prompt tokens) gives what full passes give
    single = [c for c in (" the", " user", " Paris", " weather", " degrees", " is")
              if len(tokenizer.encode(prompt + c, add_special_tokens=False))
              == len(tokenizer.encode(prompt, add_special_tokens=False)) + 1]
    assert len(single) >= 2, single
    assert continuation_logprobs(model, tokenizer, prefix, prompt, single, None) == pytest.approx(
        [_direct(model, tokenizer, prefix, prompt, c) for c in single], abs=1e-3)
