#!/usr/bin/env bash
# Create ./.venv and install metalab into it, CPU PyTorch first.
#
# torch==2.13.0 goes in before anything else: asking pip for plain `torch` (or a range)
# with no torch installed downloads a multi-GB CUDA build. With 2.13.0 present, the
# project's `torch>=2.2` is already satisfied and nothing more is fetched.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${METALAB_VENV:-.venv}"
TORCH_SPEC="${METALAB_TORCH:-torch==2.13.0}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
echo "metalab installed in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
