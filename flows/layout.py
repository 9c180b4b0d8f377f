"""Where each stage reads and writes, in one place (dvc.yaml lists the same paths;
tests/test_dvc_layout.py checks that the two agree)."""

from __future__ import annotations

from pathlib import Path

STAGES: tuple[str, ...] = ("synth", "validate", "tokenizer", "pretrain", "sft", "rl", "bench")
CHECKPOINT_STAGES: tuple[str, ...] = ("pretrain", "sft", "rl")

# Config sections each stage reads (DVC params lists are built from these too).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "synth": ("synth",),
    "validate": ("validate",),
    "tokenizer": ("tokenizer",),
    "pretrain": ("model", "pretrain"),
    "sft": ("sft",),
    "rl": ("rl",),
    "bench": ("bench",),
}

SYNTH_DIR = Path("data/synth")
VALIDATED_DIR = Path("data/validated")
QUARANTINE_DIR = Path("data/quarantine")
TOKENIZER_DIR = Path("artifacts/tokenizer")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORT_PATH = Path("reports/bench.html")  # the checkpoint comparison report bench writes
BENCH_SAMPLES_DIR = Path("reports/bench_samples")  # bench's per-sample logs, one folder per evaluated model
BENCH_CACHE_DIR = Path(".cache/bench")  # bench's per-sample answer cache (a crashed bench resumes from it)


def checkpoint_dir(stage: str) -> Path:
    """The published HF-format checkpoint of a training stage (a DVC output)."""
    return Path("checkpoints") / stage


def resume_dir(stage: str) -> Path:
    """DeepSpeed state kept across interruptions (a persistent, uncached DVC output)."""
    return Path("checkpoints") / "resume" / stage


def metrics_path(stage: str) -> Path:
    return METRICS_DIR / f"{stage}.json"
