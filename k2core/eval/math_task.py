"""Grade-school math from reasoning-gym's `gsm_symbolic` generator (GSM8K-derived templates) as a harness task.

Problems come from a fixed evaluation seed (`EVAL_SEED`), not the synthesis stage's seeds, so they are held out
from the pipeline's math data by construction (a procedural generator can still repeat a question by chance).
The prompt is one user turn holding the question, as RL and the bench prompt math; the reply is scored by RL's own
math reward (last `\\boxed{}` or last number equals the gold answer).
"""

from __future__ import annotations

from k2core.eval.harness import GenerateSolver, Output, Sample, Score, Task, TaskOptions, subset
from k2core.rl.rewards import RewardScorer

GENERATOR = "gsm_symbolic"
EVAL_SEED = 90_001
DEFAULT_SIZE = 250  # the task's full set; --limit takes a seeded subset of it
REWARD_TIMEOUT_S = 5.0


def math_samples(size: int = DEFAULT_SIZE) -> list[Sample]:
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(GENERATOR, size=size, seed=EVAL_SEED)
    return [Sample(id=f"{GENERATOR}/{i}", input=[{"role": "user", "content": entry["question"].strip()}],
                   target=str(entry["answer"]).strip()) for i, entry in enumerate(dataset)]


def math_task(options: TaskOptions) -> Task:
    scorer = RewardScorer(REWARD_TIMEOUT_S)

    def score(sample: Sample, output: Output) -> Score:
        result = scorer("math", output.completion, sample.target)
        extracted = result.get("extracted")
        reason = result.get("error") or (f"extracted {extracted}" if extracted is not None else "no answer found")
        return Score(value=result["score"], answer=extracted, reason=reason)

    size = DEFAULT_SIZE if options.limit is None else min(options.limit, DEFAULT_SIZE)
    # draw the subset from the full set, so a --limit run scores questions of the full run
    return Task("gsm_symbolic", subset(math_samples(DEFAULT_SIZE), size, options.seed),
                GenerateSolver(options.max_tokens, seed=options.seed), score)
