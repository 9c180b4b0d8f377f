"""Stage `synth`: pretraining corpus (real + rephrased text), math learning notes, tool-use data.

Trajectory shards run as mapped Prefect tasks, so the flow's task runner (threads by default, Dask or Ray, or a
work pool's workers) decides where they run, without code changes.
"""

from prefect import flow

from flows import layout
from flows.stage_runner import run_stage
from k2core.data.synth import run_synth
from tasks.agentic import map_shards

SIMILARITY_PLOT = layout.SYNTH_DIR / "reports" / "rephrase_similarity.png"


@flow(name="synth")
def synth_flow() -> dict:
    def body(cfg, tracker):
        stats = run_synth(cfg["synth"], str(layout.SYNTH_DIR), mapper_factory=map_shards)
        if SIMILARITY_PLOT.exists():
            tracker.log_artifact(SIMILARITY_PLOT, "plots")
        return stats

    return run_stage("synth", body)
