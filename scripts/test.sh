#!/usr/bin/env bash
# Set everything up on a fresh machine and run the test suite (the README's test command; CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export POSESTREAM_HOME=${POSESTREAM_HOME:-$PWD/.venv/posestream-home}
.venv/bin/posestream models prepare
exec .venv/bin/python -m pytest -ra tests "$@"
