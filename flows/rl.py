"""Stage `rl`: K1.5 policy optimisation on verifiable math prompts, with PTX loss."""

from prefect import flow

from flows import layout
from flows.stage_runner import run_stage
from flows.training import train_and_publish
from tasks.rl import reinforce

INIT = layout.checkpoint_dir("sft")
MATH = layout.VALIDATED_DIR / "math.parquet"
SFT_DATA = layout.VALIDATED_DIR / "sft.parquet"


@flow(name="rl")
def rl_flow() -> dict:
    def body(cfg, tracker):
        def train(work_dir):
            result = reinforce(cfg["rl"], INIT, MATH, SFT_DATA, layout.TOKENIZER_DIR, work_dir, tracker)
            return result["final"]

        return train_and_publish("rl", cfg, [INIT, MATH, SFT_DATA, layout.TOKENIZER_DIR], tracker, train)

    return run_stage("rl", body)
