"""Stage `tokenizer`: byte-level BPE with K2's special tokens and chat template."""

from prefect import flow

from flows import layout
from flows.stage_runner import run_stage
from tasks.data import tokenize_train


@flow(name="tokenizer")
def tokenizer_flow() -> dict:
    def body(cfg, tracker):
        stats = tokenize_train(layout.VALIDATED_DIR / "corpus.parquet", cfg["tokenizer"], layout.TOKENIZER_DIR)
        tracker.log_artifact(layout.TOKENIZER_DIR, "tokenizer")
        return stats

    return run_stage("tokenizer", body)
