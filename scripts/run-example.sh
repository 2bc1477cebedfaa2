#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job on the bundled MNIST example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sweeper run experiments/mnist_cnn.yaml "$@"
