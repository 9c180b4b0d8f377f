"""Stage `validate`: pandera schemas; invalid rows quarantined with a per-row report."""

from prefect import flow

from flows import layout
from flows.stage_runner import run_stage
from tasks.data import validate


@flow(name="validate")
def validate_flow() -> dict:
    def body(cfg, tracker):
        report = validate(layout.SYNTH_DIR, layout.VALIDATED_DIR, layout.QUARANTINE_DIR, cfg["validate"])
        if layout.QUARANTINE_DIR.exists():
            tracker.log_artifact(layout.QUARANTINE_DIR, "quarantine")
        return report

    return run_stage("validate", body)
