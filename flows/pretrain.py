"""Stage `pretrain`: MuonClip pretraining through a DeepSpeed engine."""

from prefect import flow

from flows import layout
from flows.stage_runner import run_stage
from flows.training import train_and_publish
from tasks.training import pretrain_model

CORPUS = layout.VALIDATED_DIR / "corpus.parquet"


@flow(name="pretrain")
def pretrain_flow() -> dict:
    def body(cfg, tracker):
        def train(work_dir):
            return pretrain_model(cfg["model"], cfg["pretrain"], CORPUS, layout.TOKENIZER_DIR, work_dir, tracker)

        return train_and_publish("pretrain", cfg, [CORPUS, layout.TOKENIZER_DIR], tracker, train)

    return run_stage("pretrain", body)
