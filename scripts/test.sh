#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the tests.
#   bash scripts/test.sh         the fast tier (about 5 minutes): unit tests on tiny graphs, the bad-input battery,
#                                one real Ray + MLflow CLI run with sim = export, the README example, one real
#                                pretrained model (pytest -m "not slow")
#   bash scripts/test.sh --all   everything (what CI runs: .ci/run), with the slowest tests listed
# Any other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the report and dashboard tests load pages in Debian's headless Chromium
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
fi
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
tier=(-m "not slow")
args=()
for a in "$@"; do
  if [ "$a" = "--all" ]; then tier=(--durations=25); else args+=("$a"); fi
done
exec .venv/bin/python -m pytest -q -p no:cacheprovider "${tier[@]}" "${args[@]}"
