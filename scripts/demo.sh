#!/usr/bin/env bash
# Set everything up on a fresh machine and run the whole pipeline on the built-in example.
# Writes demo-output/demo_annotated.mp4 and demo-output/alphapose-results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/posestream models prepare
exec .venv/bin/posestream demo --out demo-output "$@"
