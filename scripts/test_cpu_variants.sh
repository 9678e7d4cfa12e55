#!/usr/bin/env bash
# The model-touching tests on other arithmetic paths than this CPU's default (docs/testing.md):
# OpenVINO's oneDNN kernels capped at AVX2 (a CPU without AVX-512/VNNI) and at SSE4.1 (a second
# instruction set even on an AVX2-only CPU), then every model session on one thread. Not part of
# every CI run (about 3 x 6 minutes on 2 cores). Extra arguments go to pytest, e.g. -x or -k yolo;
# VARIANTS="--isa=AVX2" picks variations.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export POSESTREAM_HOME=${POSESTREAM_HOME:-$PWD/.venv/posestream-home}
.venv/bin/posestream models prepare >/dev/null
MODEL_TESTS=(tests/engines tests/plugins tests/test_golden_json.py tests/stream/test_eval_cli.py
             tests/stream/test_image_cli.py tests/stream/test_pipeline.py tests/stream/test_scale_in_decoder.py)
status=0
for variant in ${VARIANTS:---isa=AVX2 --isa=SSE41 --inference-threads=1}; do
  echo "== variation $variant"
  .venv/bin/python -m pytest -q "$variant" "${MODEL_TESTS[@]}" "$@" || status=1
done
exit $status
