"""`k2 eval` end to end as a subprocess: a tiny k2 checkpoint (log-likelihood MMLU, resumed from the cache), an
OpenAI-compatible endpoint (parsed letters, model name from /v1/models), and how --model strings resolve."""

import argparse
import json
import subprocess
import sys

import pytest

from flows.eval_cli import llm_config
from k2core.errors import UserError
from k2core.eval.harness import TaskOptions
from k2core.eval.registry import build_tasks
from k2core.llm import ChatResponse, Usage
from k2core.llm.server import running_server
from tests.conftest import REPO
from tests.tiny_k2 import tiny_checkpoint

K2 = [sys.executable, "-m", "flows.cli"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("eval-cli"))


def _k2_eval(*args):
    return subprocess.run([*K2, "eval", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_k2_eval_on_a_checkpoint_writes_logs_summary_and_table_and_resumes(checkpoint, tmp_path):
    args = ["--model", str(checkpoint), "--tasks", "mmlu,mmlu_cloze", "--limit", "4", "--out", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--resamples", "200"]
    first = _k2_eval(*args)
    assert first.returncode == 0, first.stderr
    header, rule, *rows = first.stdout.splitlines()[:6]
    assert header.split() == ["task", "metric", "value", "95%", "CI", "n"] and set(rule) <= {"-", " "}
    assert [r.split()[:2] for r in rows] == [["mmlu", "accuracy"], ["mmlu", "macro_accuracy"],
                                             ["mmlu_cloze", "accuracy"], ["mmlu_cloze", "macro_accuracy"]]
    assert all(r.split()[-1] == "4" for r in rows)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["backend_id"].startswith("k2:tiny-k2:") and summary["llm"]["kind"] == "k2"
    for task in ("mmlu", "mmlu_cloze"):
        assert summary["tasks"][task]["n"] == 4 and summary["tasks"][task]["generated"] == 4
        lines = [json.loads(x) for x in (tmp_path / "out" / f"{task}.samples.jsonl").read_text().splitlines()]
        assert len(lines) == 4 and all(len(x["response"]) == 4 and x["answer"] in "ABCD" for x in lines)
        low, high = summary["tasks"][task]["metrics"]["accuracy"]["ci95"]
        assert low <= summary["tasks"][task]["metrics"]["accuracy"]["value"] <= high
    again = _k2_eval(*args)
    assert again.returncode == 0, again.stderr
    resumed = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [resumed["tasks"][t]["generated"] for t in ("mmlu", "mmlu_cloze")] == [0, 0]
    assert resumed["tasks"] == {t: {**v, "generated": 0} for t, v in summary["tasks"].items()}


class Oracle:
    """Answers each MMLU question with its gold letter, as a model behind an endpoint would reply."""

    backend_id = "oracle"

    def __init__(self):
        task = build_tasks(["mmlu"], TaskOptions(limit=None))[0]
        self.gold = {s.input[-1]["content"]: s.target for s in task.samples}
        self.calls = 0

    def complete(self, request):
        self.calls += 1
        text = f"The answer is ({self.gold[request.messages[-1]['content']]})."
        return ChatResponse(message={"role": "assistant", "content": text}, usage=Usage(prompt_tokens=1,
                                                                                         completion_tokens=1))


def test_k2_eval_against_an_endpoint_parses_letters(tmp_path):
    oracle = Oracle()
    with running_server(oracle, "gold-model") as server:
        result = _k2_eval("--model", server.url, "--tasks", "mmlu", "--limit", "12", "--concurrency", "4",
                          "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["llm"] == {"kind": "openai", "model": "gold-model", "base_url_env": "K2_EVAL_BASE_URL",
                              "api_key_env": "OPENAI_API_KEY"}
    assert summary["tasks"]["mmlu"]["metrics"]["accuracy"]["value"] == 1.0 and oracle.calls == 12


def test_k2_eval_names_bad_input_in_one_line(tmp_path):
    missing = _k2_eval("--model", str(tmp_path / "nope.gguf"), "--tasks", "mmlu")
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == [
        f"k2: --model {tmp_path / 'nope.gguf'}: no such file or folder (pass a checkpoint, an HF folder, a .gguf file "
        "or an http(s):// endpoint)"]


def test_k2_eval_passes_texts_trials_and_temperature_to_the_tasks(checkpoint, tmp_path):
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("The weather in Paris is 3 degrees.\n\nThe user asks about tools.\n", encoding="utf-8")
    lm = _k2_eval("--model", str(checkpoint), "--tasks", "lm_loss", "--texts", str(held_out), "--out",
                  str(tmp_path / "lm"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu")
    assert lm.returncode == 0, lm.stderr
    summary = json.loads((tmp_path / "lm" / "summary.json").read_text())
    bpb = summary["tasks"]["lm_loss"]["metrics"]["bits_per_byte"]["value"]
    assert summary["tasks"]["lm_loss"]["n"] == 2 and bpb > 0
    row = next(line.split() for line in lm.stdout.splitlines() if line.startswith("lm_loss"))
    assert row[:3] == ["lm_loss", "bits_per_byte", f"{bpb:.4f}"]  # a quantity, not a percentage
    greedy_trials = _k2_eval("--model", str(checkpoint), "--tasks", "humaneval", "--trials", "3", "--device", "cpu")
    assert greedy_trials.returncode == 2 and "need a temperature > 0" in greedy_trials.stderr


def _args(model, **extra):
    return argparse.Namespace(model=model, config=None, model_name=extra.get("model_name"),
                              api_key_env="OPENAI_API_KEY", device="cpu", dtype="float32")


def test_model_strings_resolve_to_backend_configs(checkpoint, tmp_path):
    assert llm_config(_args(str(checkpoint)))["kind"] == "k2"
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert llm_config(_args(str(gguf))) == {"kind": "local", "path": str(gguf), "device": "cpu", "dtype": "float32"}
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert llm_config(_args(str(hf)))["kind"] == "local"
    url = llm_config(_args("http://127.0.0.1:9/v1", model_name="m"))
    assert (url["kind"], url["model"]) == ("openai", "m")
    for bad in (tmp_path, tmp_path / "weights.bin"):
        (tmp_path / "weights.bin").write_bytes(b"x")
        with pytest.raises(UserError, match="--model"):
            llm_config(_args(str(bad)))
    with pytest.raises(UserError, match="did not name a model"):
        llm_config(_args("http://127.0.0.1:9/v1"))  # nothing listens: the model name cannot be discovered
