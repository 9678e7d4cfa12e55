#!/usr/bin/env bash
# Set everything up on a fresh machine and run the test suite (the README's test command; CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test.sh: setup took ${SECONDS} s"
export POSESTREAM_HOME=${POSESTREAM_HOME:-$PWD/.venv/posestream-home}
.venv/bin/posestream models prepare
echo "test.sh: setup and models prepare took ${SECONDS} s; the slowest tests are listed at the end"
exec .venv/bin/python -m pytest -ra --durations=25 tests "$@"
