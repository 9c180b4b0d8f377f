"""Stage `bench`: every checkpoint on held-out text, math and tool-environment tasks."""

from prefect import flow

from flows import layout
from flows.stage_runner import run_stage
from tasks.evaluation import benchmark


@flow(name="bench")
def bench_flow() -> dict:
    def body(cfg, tracker):
        checkpoints = {stage: layout.checkpoint_dir(stage) for stage in layout.CHECKPOINT_STAGES}
        return benchmark(checkpoints, layout.TOKENIZER_DIR, layout.VALIDATED_DIR, cfg["bench"], tracker=tracker)

    return run_stage("bench", body)
