"""Stage `synth`: pretraining corpus (real + rephrased text), math learning notes, tool-use data.

Trajectory shards run as mapped Prefect tasks, so the flow's task runner decides where they run, without code
changes: `K2_SYNTH_TASK_RUNNER` names it (`threads[:N]` by default, `processes[:N]`, `dask[:N]`,
`dask:tcp://HOST:PORT`, `ray[:ADDRESS]`; docs/scale-out.md). Shards carry the configs of the LLM backends their roles
use and each worker builds them itself.
"""

import os

from prefect import flow

from flows import layout
from flows.stage_runner import run_stage
from k2core.data.synth import run_synth
from tasks.agentic import map_shards, task_runner

SIMILARITY_PLOT = layout.SYNTH_DIR / "reports" / "rephrase_similarity.png"


@flow(name="synth", task_runner=task_runner(os.environ.get("K2_SYNTH_TASK_RUNNER")))
def synth_flow() -> dict:
    def body(cfg, tracker):
        synth = cfg["synth"]
        stats = run_synth(synth, str(layout.SYNTH_DIR),
                          mapper_factory=lambda agentic, _backends: map_shards(agentic, synth.llm))
        if SIMILARITY_PLOT.exists():
            tracker.log_artifact(SIMILARITY_PLOT, "plots")
        return stats

    return run_stage("synth", body)
