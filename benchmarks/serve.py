"""Throughput of `k2 serve`: N concurrent clients with request batching, against one request at a time.

    .venv/bin/python benchmarks/serve.py [--kind local] [--path MODEL] [--clients 8] [--max-tokens 32] [--rounds 3]

One backend (default: the embedded SmolLM2-135M-Instruct; `--kind k2 --path checkpoints/sft` for a checkpoint)
behind two real servers on 127.0.0.1 in this process, sharing the loaded model:
- `sequential`: one client sending the N requests one after another (server with max_batch=1);
- `concurrent_unbatched`: N clients at once, server with max_batch=1 (the model lock serialises them);
- `concurrent_batched`: N clients at once, server with max_batch=N (one forward pass per token for all).
Requests are greedy chat completions of N different questions, `--max-tokens` each. Modes run interleaved, round
after round; each mode reports its median round. Prints JSON: requests/s and completion tokens/s per mode, the
speed-up of batching, the batch sizes the batched server ran, and whether every mode gave the same answers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Before torch loads libgomp: with the default (spinning) wait policy, the OpenMP team of the thread that loaded the
# model spins on the cores the batcher thread's team needs (measured: a batch 20-40x slower on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k2core.llm import make_backend, parse_llm_config  # noqa: E402
from k2core.llm.server import running_server  # noqa: E402

QUESTIONS = [
    "What is 2+3?", "Name the capital of France.", "What colour is the sky?", "Write a haiku about rain.",
    "How many legs does a spider have?", "What is the boiling point of water?", "Who wrote Hamlet?",
    "Give me a synonym for happy.", "What is the largest planet?", "Translate 'thank you' into Spanish.",
    "What is a prime number?", "Name three fruits.", "How many days are in a leap year?",
    "What does a thermometer measure?", "Name a mammal that can fly.", "What is the opposite of cold?",
]


def _ask(client: httpx.Client, url: str, question: str, max_tokens: int) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "temperature": 0}
    reply = client.post(f"{url}/chat/completions", json=body, timeout=600)
    reply.raise_for_status()
    return reply.json()


def _round(url: str, questions: list[str], max_tokens: int, concurrent: bool) -> tuple[float, list[dict[str, Any]]]:
    """Seconds for all questions, and the replies in question order."""
    replies: list[dict[str, Any]] = [{} for _ in questions]
    with httpx.Client() as client:
        start = time.perf_counter()
        if concurrent:
            def ask(i: int) -> None:
                replies[i] = _ask(client, url, questions[i], max_tokens)

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            for i, question in enumerate(questions):
                replies[i] = _ask(client, url, question, max_tokens)
        return time.perf_counter() - start, replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="local", choices=["local", "k2"])
    parser.add_argument("--path", help="model folder or .gguf file (default: the embedded SmolLM2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.clients <= len(QUESTIONS):
        parser.error(f"--clients must be from 1 to {len(QUESTIONS)}")
    backend = make_backend(parse_llm_config({"kind": args.kind, "path": args.path, "device": args.device}))
    questions = QUESTIONS[: args.clients]
    modes = {"sequential": (1, False), "concurrent_unbatched": (1, True), "concurrent_batched": (args.clients, True)}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    answers: dict[str, list[str]] = {}
    tokens: dict[str, int] = {}
    with running_server(backend, "bench", max_batch=1) as single, \
            running_server(backend, "bench", max_batch=args.clients) as batched:
        urls = {"sequential": single.url, "concurrent_unbatched": single.url, "concurrent_batched": batched.url}
        _round(batched.url, questions[:2], 2, True)  # warm-up (first-call allocations)
        batched.batcher.batch_sizes.clear()
        for _ in range(args.rounds):
            for mode, (_, concurrent) in modes.items():
                seconds, replies = _round(urls[mode], questions, args.max_tokens, concurrent)
                times[mode].append(seconds)
                answers[mode] = [r["choices"][0]["message"]["content"] for r in replies]
                tokens[mode] = sum(r["usage"]["completion_tokens"] for r in replies)
        batch_sizes = list(batched.batcher.batch_sizes)
    result: dict[str, Any] = {
        "backend": backend.backend_id, "device": args.device, "torch_threads": torch.get_num_threads(),
        "clients": args.clients, "max_tokens": args.max_tokens, "rounds": args.rounds,
        "answers_identical_across_modes": len({json.dumps(a) for a in answers.values()}) == 1,
        "batch_sizes": batch_sizes,
    }
    for mode in modes:
        median = statistics.median(times[mode])
        result[mode] = {"median_s": round(median, 3), "requests_per_s": round(args.clients / median, 3),
                        "completion_tokens_per_s": round(tokens[mode] / median, 1),
                        "rounds_s": [round(t, 3) for t in times[mode]]}
    result["batched_speedup_vs_sequential"] = round(
        statistics.median(times["sequential"]) / statistics.median(times["concurrent_batched"]), 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
