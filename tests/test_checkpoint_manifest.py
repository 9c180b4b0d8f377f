"""Checkpoint manifests: every k2 checkpoint folder carries sha256 digests written last; every k2 loader verifies them.

A truncated, flipped or deleted file gives one CheckpointIntegrityError naming it and the fix; a folder without a
manifest (a plain HF folder) still loads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from flows import cli
from k2core.llm import K2LLMConfig, LocalLLMConfig, make_backend
from k2core.model import K2ForCausalLM
from k2core.model.checkpoint import save_hf_folder
from k2core.storage import MANIFEST, CheckpointIntegrityError, verify_manifest
from k2core.tracking.mlflow_tracker import PARENT_ENV, open_run
from k2core.train import load_tokenizer
from tasks.training import publish_checkpoint
from tests.test_train_data import build_tokenizer
from tests.test_train_loop import MODEL


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A stage's HF export (out_dir/hf) of a small K2 model."""
    root = tmp_path_factory.mktemp("manifest")
    tokenizer = load_tokenizer(build_tokenizer(root / "tok"))
    torch.manual_seed(0)
    save_hf_folder(K2ForCausalLM(MODEL), tokenizer, root / "hf", "sft")
    return root / "hf"


@pytest.fixture
def published(export, tmp_path, monkeypatch) -> Path:
    """`checkpoints/sft` as the stage publishes it (real MLflow store in tmp_path)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(PARENT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with open_run("sft", {}, tmp_path) as tracker:
        publish_checkpoint.fn("sft", export, Path("checkpoints/sft"), tracker)
    return Path("checkpoints/sft")


def test_export_and_published_folder_carry_a_manifest_written_last(export, published):
    listed = json.loads((published / MANIFEST).read_text())
    assert listed["stage"] == "sft"
    names = sorted(p.name for p in published.iterdir())
    assert sorted(listed["files"]) == sorted(n for n in names if n != MANIFEST)
    assert {"config.json", "model.safetensors", "tokenizer.json", "k2_run.json"} <= set(listed["files"])
    assert verify_manifest(published) == listed["files"]
    assert "k2_run.json" not in json.loads((export / MANIFEST).read_text())["files"]
    assert not list(published.parent.glob(".*"))  # no staging folder left next to it
    loaded = K2ForCausalLM.from_pretrained(published).state_dict()
    reference = K2ForCausalLM.from_pretrained(export).state_dict()
    assert all(torch.equal(loaded[name], reference[name]) for name in reference)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("name", "damage", "reason"), [
    ("model.safetensors", _truncate, "bytes, the manifest says"),
    ("model.safetensors", _flip, "sha256 mismatch (corrupted)"),
    ("config.json", _flip, "sha256 mismatch (corrupted)"),
    ("tokenizer.json", Path.unlink, "missing"),
])
def test_damaged_file_gives_one_clear_error_naming_it(published, name, damage, reason):
    damage(published / name)
    with pytest.raises(CheckpointIntegrityError) as caught:
        K2ForCausalLM.from_pretrained(published)
    message = str(caught.value)
    assert message.startswith(f"checkpoints/sft/{name}: ") and reason in message
    assert message.endswith("re-run `k2 stage sft` or `dvc pull`") and "\n" not in message
    with pytest.raises(CheckpointIntegrityError, match=name):  # the chat backend checks before it parses anything
        make_backend(K2LLMConfig(kind="k2", path=str(published)))
    with pytest.raises(CheckpointIntegrityError, match=name):  # so does the transformers backend
        make_backend(LocalLLMConfig(kind="local", path=str(published)))


def test_folder_without_manifest_loads_and_bad_manifest_is_named(published, tmp_path):
    plain = tmp_path / "plain"
    K2ForCausalLM(MODEL).save_pretrained(plain)  # an HF folder not published by a k2 stage
    assert verify_manifest(plain) is None
    K2ForCausalLM.from_pretrained(plain)
    (published / MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointIntegrityError, match=r"checkpoints/sft/manifest.json: unreadable manifest"):
        K2ForCausalLM.from_pretrained(published)
    (published / MANIFEST).unlink()
    K2ForCausalLM.from_pretrained(published)


def test_publish_refuses_a_damaged_export_and_keeps_the_previous_checkpoint(export, published, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(export, damaged)
    _flip(damaged / "model.safetensors")
    before = (published / "model.safetensors").read_bytes()
    with open_run("sft", {}, tmp_path) as tracker, pytest.raises(CheckpointIntegrityError, match="model.safetensors"):
        publish_checkpoint.fn("sft", damaged, published, tracker)
    assert (published / "model.safetensors").read_bytes() == before
    verify_manifest(published)


def test_cli_prints_one_line_and_export_hf_output_carries_a_manifest(published, tmp_path, capsys):
    out = tmp_path / "exported"
    assert cli.main(["export-hf", str(published), str(out)]) == 0
    assert sorted(verify_manifest(out)) == sorted(p.name for p in out.iterdir() if p.name != MANIFEST)
    _truncate(published / "model.safetensors")
    capsys.readouterr()
    assert cli.main(["export-hf", str(published), str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("k2: checkpoints/sft/model.safetensors: ") and err.count("\n") == 1
