"""Stage `synth`: pretraining corpus, math learning notes, tool-use trajectories."""

from prefect import flow

from flows import layout
from flows.stage_runner import run_stage
from tasks.data import synthesize


@flow(name="synth")
def synth_flow() -> dict:
    return run_stage("synth", lambda cfg, tracker: synthesize(cfg["synth"], layout.SYNTH_DIR))
