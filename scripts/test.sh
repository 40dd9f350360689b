#!/usr/bin/env bash
# README's test command: set up (idempotent), then the whole suite, slow end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/tools.sh || true  # docker, mmdebstrap, hadolint for tests/cluster/test_images.py; they skip without
. .venv/bin/activate
exec python -m pytest -q "$@"
