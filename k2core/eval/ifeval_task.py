"""IFBench as a harness task: one greedy reply per prompt, scored by every instruction's strict and loose verdict.

Metrics are IFEval's four: prompt-level strict and loose (the share of prompts whose instructions are all
followed) and instruction-level strict and loose (instructions followed over instructions given, pooled over all
prompts: a micro average). A sample's value is its prompt-level strict verdict; its named values carry the loose
verdict and its instruction counts, so the instruction-level figures are ratios whose bootstrap resamples prompts
(each with all its instructions). Each sample's reason lists every instruction's verdicts. A refused request
follows none of its instructions.
"""

from __future__ import annotations

import dataclasses

from k2core.eval.harness import GenerateSolver, Output, Sample, Score, Task, TaskOptions, subset
from k2core.eval.ifeval import Record, check_response, load_ifbench
from k2core.eval.stats import Metric

METRICS = [
    Metric("prompt_strict"),
    Metric("prompt_loose", value="prompt_loose"),
    Metric("inst_strict", value="inst_strict", per="instructions"),
    Metric("inst_loose", value="inst_loose", per="instructions"),
]


def _score(sample: Sample, output: Output) -> Score:
    result = check_response(Record(**sample.metadata["record"]), output.completion)
    reason = "; ".join(f"{i.instruction_id}: strict={i.strict} loose={i.loose} ({i.reason})" for i in result.instructions)
    values = {"prompt_loose": float(result.loose), "inst_strict": float(sum(i.strict for i in result.instructions)),
              "inst_loose": float(sum(i.loose for i in result.instructions)),
              "instructions": float(len(result.instructions))}
    return Score(value=float(result.strict), values=values, answer=f"loose={result.loose}", reason=reason)


def _refusal(sample: Sample, output: Output) -> Score:
    score = _score(sample, Output())
    return score.model_copy(update={"reason": f"backend refused the request: {output.error}"})


def ifbench_task(options: TaskOptions) -> Task:
    """IFBench's 294 test prompts (a seeded `limit` subset), 0-shot."""
    samples = [Sample(id=r.key, input=[{"role": "user", "content": r.prompt}],
                      metadata={"record": dataclasses.asdict(r)}) for r in load_ifbench()]
    return Task("ifbench", subset(samples, options.limit, options.seed),
                GenerateSolver(options.max_tokens, seed=options.seed), _score, METRICS, _refusal)
