"""`k2 eval`: public benchmarks on any model, outside the pipeline.

    k2 eval --model checkpoints/sft --tasks mmlu,gsm_symbolic --limit 200     a k2 checkpoint
    k2 eval --model models/qwen --tasks mmlu_5shot                            any HF folder (or a .gguf file)
    k2 eval --model http://127.0.0.1:8000/v1 --tasks mmlu --limit 100         any OpenAI-compatible endpoint
    k2 eval --config llm.yaml --tasks mmlu                                    any LLM config block (as for synth roles)

Writes `<out>/<task>.samples.jsonl` (one line per sample) and `<out>/summary.json`, and prints a results table with
bootstrap 95% intervals. Every answer is cached per sample under --cache-dir: rerunning an interrupted evaluation
asks the model only for the samples it has not answered yet. Endpoints are queried --concurrency at a time.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from k2core.errors import UserError

BASE_URL_ENV = "K2_EVAL_BASE_URL"  # where `k2 eval --model URL` puts the URL for the openai backend config


def _endpoint_model(url: str, api_key_env: str) -> str:
    """The first model an endpoint lists at /models (what `--model-name` defaults to)."""
    key = os.environ.get(api_key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(f"{url.rstrip('/')}/models", headers=headers, timeout=30)
        response.raise_for_status()
        models = response.json()["data"]
        return str(models[0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as error:
        raise UserError(f"{url}/models did not name a model ({error}); pass --model-name") from None


def llm_config(args: argparse.Namespace) -> dict[str, Any]:
    """The LLM config block --model (or --config) describes: a k2 checkpoint folder -> k2, another folder or a
    .gguf file -> local, an http(s) URL -> openai (model from --model-name or the server's /models)."""
    from flows.serve import _is_k2_checkpoint

    if args.config:
        values = yaml.safe_load(Path(args.config).read_text())
        if not isinstance(values, dict):
            raise UserError(f"{args.config} must hold one LLM config mapping (kind: local | k2 | openai, ...)")
        return values
    if not args.model:
        raise UserError("k2 eval needs --model (a checkpoint, HF folder, .gguf file or endpoint URL) or --config")
    model = args.model
    if re.match(r"https?://", model):
        os.environ[BASE_URL_ENV] = model
        name = args.model_name or _endpoint_model(model, args.api_key_env)
        return {"kind": "openai", "model": name, "base_url_env": BASE_URL_ENV, "api_key_env": args.api_key_env}
    path = Path(model)
    if not path.exists():
        raise UserError(f"--model {model}: no such file or folder (pass a checkpoint, an HF folder, a .gguf file "
                        "or an http(s):// endpoint)")
    if path.is_file() and path.suffix != ".gguf":
        raise UserError(f"--model {model}: a model file must be .gguf; otherwise pass its folder")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"--model {model}: the folder has no config.json; pass a model folder")
    kind = "k2" if path.is_dir() and _is_k2_checkpoint(path) else "local"
    return {"kind": kind, "path": str(path), "device": args.device, "dtype": args.dtype}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def default_out(values: dict[str, Any]) -> Path:
    name = values.get("model") or Path(values.get("path") or "smollm2").name
    return Path("reports") / "eval" / f"{_slug(str(name))}-{time.strftime('%Y%m%d-%H%M%S')}"


def results_table(results: dict[str, Any]) -> str:
    """task, metric, value, 95% CI, n: one row per metric, proportions in percent, other quantities (bits per
    byte) as they are."""
    rows = [("task", "metric", "value", "95% CI", "n")]
    for name, result in results.items():
        for metric, est in result.metrics.items():
            scale, digits = (1, 4) if metric in result.quantities else (100, 2)
            low, value, high = (f"{scale * x:.{digits}f}" for x in (est.ci_low, est.value, est.ci_high))
            rows.append((name, metric, value, f"[{low}, {high}]", str(result.n)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def eval_command(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    values = llm_config(args)  # bad input fails here, before the heavy imports below
    from pydantic import ValidationError

    from k2core.eval.harness import TaskOptions, evaluate
    from k2core.eval.registry import build_tasks
    from k2core.eval.sample_cache import SampleCache
    from k2core.llm import make_backend, parse_llm_config
    from k2core.llm.loglik import LoglikelihoodBackend

    try:
        cfg = parse_llm_config({**values, "cache_dir": None})  # the harness keeps its own per-sample cache
    except ValidationError as error:
        raise UserError(f"the model's LLM config is invalid: {error}") from None
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    out = Path(args.out) if args.out else default_out(values)
    print(f"k2 eval: loading {cfg.kind} model ...", file=sys.stderr, flush=True)
    backend = make_backend(cfg)
    options = TaskOptions(limit=args.limit, seed=args.seed, max_tokens=args.max_tokens,
                          loglikelihood=isinstance(backend, LoglikelihoodBackend), trials=args.trials,
                          temperature=args.temperature, texts=args.texts)
    tasks = build_tasks(names, options)
    concurrency = args.concurrency if cfg.kind == "openai" else 1  # local models answer one at a time
    results = evaluate(tasks, backend, out, SampleCache(args.cache_dir), concurrency, args.resamples, args.seed,
                       extra={"model": args.model or args.config, "llm": values, "limit": args.limit})
    print(results_table(results))
    print(f"\nper-sample logs and summary.json in {out}")
    return 0


def add_arguments(sub: argparse._SubParsersAction) -> None:
    """The `eval` subcommand."""
    parser = sub.add_parser("eval", help="benchmarks (MMLU, math, ...) on a checkpoint, a model or an endpoint",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="k2 checkpoint folder, HF model folder, .gguf file or http(s)://.../v1 URL")
    parser.add_argument("--config", help="YAML file with one LLM config block instead of --model")
    parser.add_argument("--model-name", help="model name to send an endpoint (default: the first of its /models)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    parser.add_argument("--tasks", default="mmlu", help="comma-separated names of k2core.eval.registry.TASKS: mmlu "
                        "(0-shot), mmlu_5shot, mmlu_cloze, gsm_symbolic, ifbench, humaneval, lm_loss, bfcl, ...")
    parser.add_argument("--limit", type=int, help="score a seeded subset of this many samples per task (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="subset, generation and bootstrap seed")
    parser.add_argument("--max-tokens", type=int, default=256, help="generation budget per reply")
    parser.add_argument("--trials", type=int, default=1, help="trials per task (τ² pass^k) or replies per problem "
                        "(humaneval pass@k, with --temperature > 0)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature for humaneval's "
                        "--trials replies (default greedy)")
    parser.add_argument("--texts", help="lm_loss: held-out text (.txt, .jsonl or .parquet with a text column); "
                        "default: an offline stdlib-docstring text")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight against an endpoint")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--out", help="output folder (default: reports/eval/<model>-<timestamp>)")
    parser.add_argument("--cache-dir", default=".cache/eval", help="per-sample answer cache (resumes a crashed run)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (local models)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.set_defaults(handler=eval_command)
