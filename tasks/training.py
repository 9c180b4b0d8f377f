"""Prefect tasks of the training stages and checkpoint publishing."""

from __future__ import annotations

from pathlib import Path

from k2core.faults import crash_point
from k2core.storage import replace_dir, verify_manifest, write_json, write_manifest
from k2core.tracking.mlflow_tracker import RUN_RECORD, MlflowTracker
from k2core.train import pretrain, sft
from tasks import k2_task

pretrain_model = k2_task(pretrain, name="pretrain")
finetune = k2_task(sft, name="sft")


@k2_task(name="publish-checkpoint")
def publish_checkpoint(stage: str, hf_dir: Path, published: Path, tracker: MlflowTracker, step: int = 0) -> str:
    """Publish the HF folder as the stage's DVC output, log it as an MLflow LoggedModel (at training step `step`)
    and register it as a version of `k2-<stage>`; returns the version.

    The export is verified against its manifest, copied with the run record (run and model ids) added and a new
    manifest written last, then swapped in atomically: `published` is always the previous complete checkpoint or
    the new one.
    """
    verified = verify_manifest(hf_dir)
    model_id = tracker.new_model(stage)

    def finish(staging: Path) -> None:
        write_json({"stage": stage, "mlflow_run_id": tracker.run_id, "mlflow_model_id": model_id},
                   staging / RUN_RECORD)
        write_manifest(staging, stage, known=verified)
        crash_point("publish")  # the new folder complete beside the old one, not swapped in yet

    replace_dir(hf_dir, published, prepare=finish)
    crash_point("publish")  # swapped in, not yet logged to MLflow nor registered
    return tracker.log_checkpoint_model(published, stage, model_id, step)
