"""The benchmark: one metrics JSON with a section per checkpoint, from tiny checkpoints and data."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from k2core.agentic.tasks import generate_tasks, task_to_row
from k2core.eval.bench import BenchConfig, bench_metrics, heldout_texts, run_bench, task_result
from k2core.eval.suite import SuiteConfig
from k2core.train.data import is_validation
from tests.test_rl_trainer import TEXTS, build_tokenizer, tiny_model, write_pipeline_inputs


def bench_config(**overrides: object) -> BenchConfig:
    values = dict(heldout_fraction=0.5, heldout_seed=0, lm_max_docs=8, lm_seq_len=32, lm_batch_size=4,
                  math_max_problems=2, math_max_new_tokens=4, math_batch_size=2, reward_timeout_s=20.0,
                  tool_max_tasks=1, tool_max_turns=1, tool_max_new_tokens=4, tool_agents={},
                  harness=SuiteConfig())
    values.update(overrides)
    return BenchConfig(**values)


def write_data_dir(root: Path) -> Path:
    paths = write_pipeline_inputs(root)
    data = root / "validated"
    data.mkdir()
    pd.read_parquet(paths["math"]).to_parquet(data / "math.parquet")
    docs = [dict(doc_id=f"d{i}", source="toy", kind="text", text=TEXTS[i % len(TEXTS)] + f" #{i}") for i in range(12)]
    pd.DataFrame(docs).to_parquet(data / "corpus.parquet")
    tasks = generate_tasks(["retail"], 2, 1, 1, ["terse"], test_fraction=0.5, seed=0)
    pd.DataFrame([task_to_row(t) for t in tasks]).to_parquet(data / "tool_tasks.parquet")
    return data


def test_heldout_texts_are_pretrainings_validation_documents(tmp_path: Path) -> None:
    data = write_data_dir(tmp_path)
    texts = heldout_texts(data, bench_config())
    corpus = pd.read_parquet(data / "corpus.parquet")
    expected = [t for d, t in zip(corpus["doc_id"], corpus["text"]) if is_validation(d, 0.5, 0)]
    assert texts == expected[:8] and 0 < len(texts) < len(corpus)


def _value(entry: dict, task: str, metric: str) -> float:
    return entry["tasks"][task]["metrics"][metric]["value"]


def test_run_bench_writes_one_section_per_checkpoint_under_the_same_keys(tmp_path: Path) -> None:
    data = write_data_dir(tmp_path)
    tokenizer = build_tokenizer(tmp_path / "tok")
    ckpts = {}
    for seed, name in enumerate(["pretrain", "rl"]):
        tiny_model(len(tokenizer), seed=seed).save_pretrained(tmp_path / name)
        ckpts[name] = tmp_path / name
    out = tmp_path / "metrics" / "bench.json"
    seen = []

    def on_result(name, entry):
        seen.append((name, sorted(entry["tasks"])))
        return {"mlflow_run_id": f"run-{name}"}

    results = run_bench(ckpts, tmp_path / "tok", data, bench_config(), on_result, out)

    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    models = results["models"]
    assert seen == [("pretrain", ["heldout_lm", "math", "tool"]), ("rl", ["heldout_lm", "math", "tool"])]
    for name, entry in models.items():
        assert (entry["kind"], entry["path"], entry["mlflow_run_id"]) == ("checkpoint", str(ckpts[name]), f"run-{name}")
        assert math.isfinite(_value(entry, "heldout_lm", "val_loss")) and _value(entry, "heldout_lm", "bits_per_byte") > 0
        assert 0.0 <= _value(entry, "math", "accuracy") <= 1.0 and entry["tasks"]["math"]["n"] == 2
        assert 0.0 <= _value(entry, "tool", "pass1") <= 1.0 and entry["tasks"]["tool"]["n"] == 1
        assert entry["tasks"]["heldout_lm"]["details"]["tokens"] > 0
    assert _value(models["pretrain"], "heldout_lm", "val_loss") != _value(models["rl"], "heldout_lm", "val_loss")
    keys = {name: bench_metrics(entry["tasks"]) for name, entry in models.items()}
    assert set(keys["pretrain"]) == set(keys["rl"]) and "bench/math/accuracy" in keys["rl"]
    assert keys["rl"]["bench/math/accuracy"] == _value(models["rl"], "math", "accuracy")
    assert all(key.startswith("bench/") and "^" not in key for key in keys["rl"])


def test_bench_metrics_carry_intervals_where_a_task_has_them() -> None:
    tasks = {"mmlu": {"n": 10, "metrics": {"accuracy": {"value": 0.5, "ci95": [0.2, 0.8]}}},
             "math": task_result({"accuracy": 1, "note": "x"}, 3)}
    assert bench_metrics(tasks) == {"bench/mmlu/accuracy": 0.5, "bench/mmlu/accuracy/ci95_low": 0.2,
                                    "bench/mmlu/accuracy/ci95_high": 0.8, "bench/math/accuracy": 1.0}
    assert tasks["math"] == {"n": 3, "metrics": {"accuracy": {"value": 1.0, "ci95": None}}, "details": {"note": "x"}}


def test_a_chat_backend_is_benchmarked_as_the_agent_on_the_same_tool_tasks(tmp_path: Path) -> None:
    """`tool_agents` evaluates any backend (here the `k2` backend on the checkpoint's folder, as `k2 serve` would
    serve it) on the checkpoints' tool tasks: the same tool metrics as the checkpoint evaluated in memory."""
    data = write_data_dir(tmp_path)
    tokenizer = build_tokenizer(tmp_path / "tok")
    tiny_model(len(tokenizer), seed=1).save_pretrained(tmp_path / "rl")
    tokenizer.save_pretrained(str(tmp_path / "rl"))
    served = {"served_rl": {"kind": "k2", "path": str(tmp_path / "rl"), "device": "cpu", "dtype": "float32"}}
    cfg = bench_config(tool_max_turns=3, tool_max_new_tokens=8, tool_agents=served)
    models = run_bench({"rl": tmp_path / "rl"}, tmp_path / "tok", data, cfg)["models"]
    agent, checkpoint = models["served_rl"], models["rl"]
    assert (agent["kind"], agent["backend"], sorted(agent["tasks"])) == ("backend", "k2", ["tool"])
    ours, theirs = agent["tasks"]["tool"], checkpoint["tasks"]["tool"]
    assert ours["n"] == 1 and set(ours["metrics"]) == set(theirs["metrics"])
    for key in ours["metrics"]:  # the in-memory path also counts the calls K2's parser dropped
        if key != "malformed_tool_calls":
            assert ours["metrics"][key] == theirs["metrics"][key], key
    with pytest.raises(ValueError, match="reuse checkpoint names"):
        run_bench({"served_rl": tmp_path / "rl"}, tmp_path / "tok", data, cfg)


def test_bench_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        bench_config(mmlu=True)
    with pytest.raises(ValueError, match=r"unknown harness task\(s\) \['mmlu_10shot'\]; known: mmlu, "):
        bench_config(harness={"tasks": {"mmlu_10shot": {"limit": 2}}})


def test_every_checkpoint_and_tool_agent_is_scored_on_the_public_benchmarks(tmp_path: Path) -> None:
    """The harness tasks of `bench.harness` run on each checkpoint (log-likelihood MMLU, generated IFBench) and on
    a backend tool agent, with per-sample logs per model; a second bench answers everything from the cache."""
    data = write_data_dir(tmp_path)
    tokenizer = build_tokenizer(tmp_path / "tok")
    for seed, name in enumerate(["sft", "rl"]):
        tiny_model(len(tokenizer), seed=seed).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(str(tmp_path / name))
    served = {"served_rl": {"kind": "k2", "path": str(tmp_path / "rl"), "device": "cpu", "dtype": "float32"}}
    harness = {"seed": 3, "bootstrap_resamples": 50,
               "tasks": {"mmlu": {"limit": 3}, "ifbench": {"limit": 2, "max_tokens": 4}}}
    cfg = bench_config(harness=harness, tool_agents=served)
    ckpts = {"sft": tmp_path / "sft", "rl": tmp_path / "rl"}

    def bench() -> dict:
        return run_bench(ckpts, tmp_path / "tok", data, cfg, samples_dir=tmp_path / "samples",
                         cache_dir=tmp_path / "cache")["models"]

    models = bench()
    assert sorted(models) == ["rl", "served_rl", "sft"]
    for name, entry in models.items():
        assert {"mmlu", "ifbench"} <= set(entry["tasks"]), name
        mmlu, ifbench = entry["tasks"]["mmlu"], entry["tasks"]["ifbench"]
        fresh = (3, 2) if name != "served_rl" else (0, 0)  # the same weights behind the same backend: cached answers
        assert (mmlu["n"], ifbench["n"], mmlu["generated"], ifbench["generated"]) == (3, 2, *fresh)
        low, high = mmlu["metrics"]["accuracy"]["ci95"]
        assert low <= mmlu["metrics"]["accuracy"]["value"] <= high
        assert {"prompt_strict", "inst_loose"} <= set(ifbench["metrics"])
        folder = tmp_path / "samples" / name
        assert entry["samples_dir"] == str(folder)
        lines = [json.loads(line) for line in (folder / "mmlu.samples.jsonl").read_text().splitlines()]
        assert len(lines) == 3 and all(len(line["response"]) == 4 for line in lines)  # one log-prob per letter
        assert json.loads((folder / "summary.json").read_text())["suite"]["seed"] == 3
        assert "bench/mmlu/accuracy/ci95_low" in bench_metrics(entry["tasks"])
    # the served checkpoint is the rl checkpoint behind the same k2 backend: identical answers, so identical scores
    assert models["served_rl"]["tasks"]["mmlu"]["metrics"] == models["rl"]["tasks"]["mmlu"]["metrics"]
    again = bench()
    assert all(entry["tasks"][task]["generated"] == 0 for entry in again.values() for task in ("mmlu", "ifbench"))
    assert again["sft"]["tasks"]["mmlu"]["metrics"] == models["sft"]["tasks"]["mmlu"]["metrics"]
