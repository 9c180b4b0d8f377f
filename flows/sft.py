"""Stage `sft`: chat-format fine-tuning from the pretrained checkpoint, assistant-only loss."""

from prefect import flow

from flows import layout
from flows.stage_runner import run_stage
from flows.training import train_and_publish
from tasks.training import finetune

INIT = layout.checkpoint_dir("pretrain")
SFT_DATA = layout.VALIDATED_DIR / "sft.parquet"


@flow(name="sft")
def sft_flow() -> dict:
    def body(cfg, tracker):
        def train(work_dir):
            return finetune(cfg["sft"], INIT, SFT_DATA, layout.TOKENIZER_DIR, work_dir, tracker)

        return train_and_publish("sft", cfg, [INIT, SFT_DATA, layout.TOKENIZER_DIR], tracker, train)

    return run_stage("sft", body)
