"""`k2 serve`: an OpenAI-compatible server on 127.0.0.1 for a checkpoint, a local model or another server.

    k2 serve                          the embedded SmolLM2-135M-Instruct
    k2 serve checkpoints/sft          one of this project's checkpoints (K2 chat format, K2 tool calls)
    k2 serve models/qwen              any HF chat model folder or .gguf file
    k2 serve --config llm.yaml        any LLM config block (kind: local | k2 | openai), e.g. with cache_dir

Then point any OpenAI client at http://127.0.0.1:8000/v1 (model name: the folder name, or --name).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

# Read by libgomp when torch loads (later, in serve_command): with the default spinning policy the OpenMP team of
# the loading thread takes the cores the batcher thread's team needs (a batch measured 20-40x slower on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _is_k2_checkpoint(path: Path) -> bool:
    """A folder our K2ForCausalLM wrote (DeepSeek-V3 layout) with a tokenizer that knows K2's chat tokens."""
    from k2core.chat import TOOL_CALLS_BEGIN

    config, tokenizer = path / "config.json", path / "tokenizer.json"
    if not (config.is_file() and tokenizer.is_file()):
        return False
    is_deepseek_v3 = json.loads(config.read_text()).get("model_type") == "deepseek_v3"
    return is_deepseek_v3 and TOOL_CALLS_BEGIN in tokenizer.read_text()


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The LLM config block the command line describes (before validation)."""
    if args.config:
        if args.model:
            raise ValueError("pass either a model path or --config, not both")
        values = yaml.safe_load(Path(args.config).read_text())
        if not isinstance(values, dict):
            raise ValueError(f"{args.config} must hold one mapping (kind: local | k2 | openai, ...)")
        return values
    kind = args.kind or ("k2" if args.model and _is_k2_checkpoint(Path(args.model)) else "local")
    if kind == "k2" and not args.model:
        raise ValueError("--kind k2 needs the checkpoint folder")
    values: dict[str, Any] = {"kind": kind, "path": args.model, "device": args.device, "dtype": args.dtype}
    if args.cache_dir:
        values["cache_dir"] = args.cache_dir
    return values


def model_name(args: argparse.Namespace, values: dict[str, Any]) -> str:
    if args.name:
        return args.name
    if values.get("kind") == "openai":
        return str(values["model"])
    return Path(values["path"]).name if values.get("path") else "smollm2-135m-instruct"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `k2 serve` options (the parser's help is this module's docstring)."""
    parser.add_argument("model", nargs="?", help="checkpoint folder, HF model folder or .gguf file (default: SmolLM2)")
    parser.add_argument("--kind", choices=["local", "k2"], help="override the guess from the folder's contents")
    parser.add_argument("--config", help="YAML/JSON file with one LLM config block instead of a path")
    parser.add_argument("--name", help="model name clients must send (default: the folder name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--cache-dir", help="keep every answer in this folder (same request, same answer, no compute)")
    parser.add_argument("--max-batch", type=int, default=8,
                        help="concurrent requests answered in one forward pass (1: one at a time)")
    parser.add_argument("--batch-window-ms", type=float, default=5.0,
                        help="how long a request waits for others to join its batch")


def serve_command(args: argparse.Namespace) -> int:
    """Build the backend (loading the model once), then serve until Ctrl-C."""
    from pydantic import ValidationError

    from k2core.llm import make_backend, parse_llm_config
    from k2core.llm.server import ChatServer

    try:
        if args.max_batch < 1 or args.batch_window_ms < 0:
            raise ValueError("--max-batch must be at least 1 and --batch-window-ms at least 0")
        values = config_from_args(args)
        cfg = parse_llm_config(values)
    except (ValueError, ValidationError, OSError) as error:
        print(f"k2 serve: {error}", file=sys.stderr)
        return 2
    name = model_name(args, values)
    print(f"k2 serve: loading {cfg.kind} model {name!r} ...", flush=True)
    server = ChatServer(make_backend(cfg), name, args.host, args.port, args.max_batch, args.batch_window_ms / 1000)
    print(f"k2 serve: {server.url} (model {name!r}); Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="k2 serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return serve_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
