"""Benchmarks of pipeline checkpoints: held-out LM loss and bits/byte, math accuracy, tool-use pass^1."""

from k2core.eval.bench import BenchConfig, evaluate_checkpoint, heldout_texts, run_bench
from k2core.eval.lm import evaluate_lm
from k2core.eval.math import evaluate_math

__all__ = ["BenchConfig", "evaluate_checkpoint", "evaluate_lm", "evaluate_math", "heldout_texts", "run_bench"]
