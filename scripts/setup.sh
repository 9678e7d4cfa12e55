#!/usr/bin/env bash
# Idempotent set-up: Debian packages used by the tests (GStreamer RTSP server, FFmpeg, Chromium for
# the web viewer's browser tests, iproute2 and nftables for the fleet's network-namespace test hosts),
# a venv in .venv, and posestream installed into it with its test extra.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools python3-gi chromium iproute2 nftables"
missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing Debian packages:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch 2.13.0 CPU: served from local disk on the project's machines; a plain `torch` would pull CUDA.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# An editable install leaves the checkout's modules uncompiled, and where PYTHONDONTWRITEBYTECODE is
# set (these machines) every process would compile them again at start (~0.1-0.25 s of CPU each, six
# processes per run); a regular `pip install` compiles them once, as this does.
.venv/bin/python -m compileall -q posestream stream engines plugins benchmarks > /dev/null
# TrackEval (the eval extra, part of test) pulls in opencv-python, OpenCV's GUI build, beside the headless
# build posestream depends on; both install the module cv2 and the last one written wins. Lay the headless
# build's files down again so the tests see what posestream installs (same version, no Qt/X11 libraries).
if ! .venv/bin/python -c "import sys; from posestream.plugins.sinks.window import gui_backend; sys.exit(gui_backend() != 'NONE')"; then
  headless=$(.venv/bin/python -c "from importlib.metadata import version; print(version('opencv-python-headless'))")
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "opencv-python-headless==$headless"
fi
