"""IFBench as a harness task: one greedy reply per prompt, scored 1 when every instruction is followed (strict).

The harness keeps one value per sample, so the task reports IFEval's prompt-level strict accuracy; each sample's
reason lists every instruction's strict and loose verdict. `k2core.eval.ifeval.aggregate` gives all four accuracies
from the same replies.
"""

from __future__ import annotations

import dataclasses

from k2core.eval.harness import GenerateSolver, Output, Sample, Score, Task, TaskOptions, subset
from k2core.eval.ifeval import Record, check_response, load_ifbench


def _score(sample: Sample, output: Output) -> Score:
    result = check_response(Record(**sample.metadata["record"]), output.completion)
    reason = "; ".join(f"{i.instruction_id}: strict={i.strict} loose={i.loose} ({i.reason})" for i in result.instructions)
    return Score(value=float(result.strict), answer=f"loose={result.loose}", reason=reason)


def ifbench_task(options: TaskOptions) -> Task:
    """IFBench's 294 test prompts (a seeded `limit` subset), 0-shot."""
    samples = [Sample(id=r.key, input=[{"role": "user", "content": r.prompt}],
                      metadata={"record": dataclasses.asdict(r)}) for r in load_ifbench()]
    return Task("ifbench", subset(samples, options.limit, options.seed),
                GenerateSolver(options.max_tokens, seed=options.seed), _score)
