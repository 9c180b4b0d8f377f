"""Bad input through the real `k2` command: one clear last line naming the file or key and what to do, exit code 2,
no traceback anywhere in the output (Prefect's engine logs stage exceptions; those logs must not carry one)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from k2core.errors import CorruptFileError, UserError, one_line
from k2core.storage import read_parquet, write_parquet
from k2core.tracking.mlflow_tracker import PARENT_ENV
from tests.conftest import REPO

K2 = Path(sys.executable).with_name("k2")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A stage's working folder: the repo's params.yaml on the ci profile."""
    text = (REPO / "params.yaml").read_text()
    assert "\nprofile: tiny\n" in text
    (tmp_path / "params.yaml").write_text(text.replace("\nprofile: tiny\n", "\nprofile: ci\n"))
    return tmp_path


def _k2(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `k2 ARGS` in root; (exit code, last stderr line, all output)."""
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", PARENT_ENV, "RANK")}
    done = subprocess.run([str(K2), *args], cwd=root, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return done.returncode, lines[-1] if lines else "", done.stdout + done.stderr


def test_wrong_type_in_params_names_the_key(project):
    params = project / "params.yaml"
    head, section, tail = params.read_text().partition("\ntokenizer:\n")
    assert section and "\n    vocab_size: 1024\n" in tail  # tokenizer.ci
    params.write_text(head + section + tail.replace("\n    vocab_size: 1024\n", "\n    vocab_size: lots\n", 1))
    code, last, output = _k2(project, "stage", "tokenizer")
    assert code == 2, output
    assert last.startswith(f"k2: {params}: invalid values (fix them there): tokenizer.ci.vocab_size: "), last
    assert "(got 'lots')" in last
    assert "Traceback" not in output


@pytest.mark.integration
def test_corrupted_parquet_names_the_file(project, prefect_api):
    corpus = project / "data/validated/corpus.parquet"
    corpus.parent.mkdir(parents=True)
    corpus.write_bytes(b"this is not parquet\n" * 50)
    code, last, output = _k2(project, "stage", "tokenizer", env={"PREFECT_API_URL": prefect_api})
    assert code == 2, output
    assert last.startswith("k2: data/validated/corpus.parquet: not a readable parquet file (") or \
        last.startswith(f"k2: {corpus}: not a readable parquet file ("), last
    assert "dvc checkout" in last and "dvc repro --force" in last
    assert "Traceback" not in output, output


def test_truncated_parquet_is_a_user_error(tmp_path):
    """The storage read itself: a truncated file raises CorruptFileError (a UserError) naming it."""
    import pandas as pd

    path = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"text": ["a", "b"]}), path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CorruptFileError) as raised:
        read_parquet(path)
    assert isinstance(raised.value, UserError) and one_line(raised.value).startswith(f"{path}: not a readable")
