"""The `k2` command line: plan, export-hf, and clear errors."""

import json
import subprocess
import sys

import torch

from flows.cli import main
from k2core.model import K2Config, K2ForCausalLM


def test_plan_prints_the_kimi_k2_counts(capsys):
    assert main(["plan", "kimi-k2"]) == 0
    out = capsys.readouterr().out
    assert "1.04T" in out and "32.86B" in out


def test_unknown_stage_is_refused_with_the_list(capsys):
    assert main(["stage", "pretrian"]) == 2
    assert "unknown stage 'pretrian'" in capsys.readouterr().err


def test_export_hf_writes_a_folder_transformers_loads(tmp_path):
    source = tmp_path / "ckpt"
    K2ForCausalLM(K2Config.preset("tiny")).save_pretrained(source)
    (source / "tokenizer.json").write_text("{}")
    assert main(["export-hf", str(source), str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "deepseek_v3"
    assert (tmp_path / "out" / "tokenizer.json").exists()
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    ours = K2ForCausalLM.from_pretrained(source).eval()
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, ours(ids).logits, atol=1e-4)


def test_console_script_reports_a_bad_params_file(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: tiny\nsynth: {tiny: {seed: zero}}\n")
    result = subprocess.run([sys.executable, "-m", "flows.cli", "stage", "synth"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "synth.tiny.seed" in result.stderr
