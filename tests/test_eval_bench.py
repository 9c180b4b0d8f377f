"""The benchmark: one metrics JSON with a section per checkpoint, from tiny checkpoints and data."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from k2core.agentic.tasks import generate_tasks, task_to_row
from k2core.eval.bench import BenchConfig, heldout_texts, run_bench
from k2core.tracking import InMemoryTracker
from k2core.train.data import is_validation
from tests.test_rl_trainer import TEXTS, build_tokenizer, tiny_model, write_pipeline_inputs


def bench_config(**overrides: object) -> BenchConfig:
    values = dict(heldout_fraction=0.5, heldout_seed=0, lm_max_docs=8, lm_seq_len=32, lm_batch_size=4,
                  math_max_problems=2, math_max_new_tokens=4, math_batch_size=2, reward_timeout_s=20.0,
                  tool_max_tasks=1, tool_max_turns=1, tool_max_new_tokens=4, tool_agents={})
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


def test_run_bench_writes_one_section_per_checkpoint(tmp_path: Path) -> None:
    data = write_data_dir(tmp_path)
    tokenizer = build_tokenizer(tmp_path / "tok")
    ckpts = {}
    for seed, name in enumerate(["pretrain", "rl"]):
        tiny_model(len(tokenizer), seed=seed).save_pretrained(tmp_path / name)
        ckpts[name] = tmp_path / name
    out = tmp_path / "metrics" / "bench.json"
    tracker = InMemoryTracker()
    results = run_bench(ckpts, tmp_path / "tok", data, bench_config(), tracker, out)

    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert set(results) == {"pretrain", "rl"}
    for metrics in results.values():
        assert math.isfinite(metrics["val_loss"]) and metrics["bits_per_byte"] > 0
        assert 0.0 <= metrics["math_accuracy"] <= 1.0 and metrics["math_problems"] == 2
        assert 0.0 <= metrics["tool_pass1"] <= 1.0 and metrics["tool_tasks"] == 1
        assert not any("^" in key for key in metrics)
    assert results["pretrain"]["val_loss"] != results["rl"]["val_loss"]
    assert tracker.last("rl/math_accuracy") == results["rl"]["math_accuracy"]
    assert tracker.dicts["bench.json"] == results


def test_a_chat_backend_is_benchmarked_as_the_agent_on_the_same_tool_tasks(tmp_path: Path) -> None:
    """`tool_agents` evaluates any backend (here the `k2` backend on the checkpoint's folder, as `k2 serve` would
    serve it) on the checkpoints' tool tasks: the same tool metrics as the checkpoint evaluated in memory."""
    data = write_data_dir(tmp_path)
    tokenizer = build_tokenizer(tmp_path / "tok")
    tiny_model(len(tokenizer), seed=1).save_pretrained(tmp_path / "rl")
    tokenizer.save_pretrained(str(tmp_path / "rl"))
    served = {"served_rl": {"kind": "k2", "path": str(tmp_path / "rl"), "device": "cpu", "dtype": "float32"}}
    cfg = bench_config(tool_max_turns=3, tool_max_new_tokens=8, tool_agents=served)
    results = run_bench({"rl": tmp_path / "rl"}, tmp_path / "tok", data, cfg)
    agent, checkpoint = results["served_rl"], results["rl"]
    assert set(agent) == {key for key in checkpoint if key.startswith("tool_")}
    assert agent["tool_tasks"] == 1
    for key in agent:  # the in-memory path also counts the calls K2's parser dropped
        if key != "tool_malformed_tool_calls":
            assert agent[key] == checkpoint[key], key
    with pytest.raises(ValueError, match="reuse checkpoint names"):
        run_bench({"served_rl": tmp_path / "rl"}, tmp_path / "tok", data, cfg)


def test_bench_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        bench_config(mmlu=True)
