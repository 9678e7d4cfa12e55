"""posestream: real-time multi-person 2D pose estimation over live video.

The repository keeps its top-level folders (`stream/`, `engines/`, `plugins/`, `benchmarks/`) and
maps them into the one import namespace `posestream` (`posestream.stream`, `posestream.engines`, ...);
the thin `posestream/` folder holds the public API and the command line. A wheel installs no other
top-level name.
"""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
MAPPED_FOLDERS = ("stream", "engines", "plugins", "benchmarks")


class BuildWithDefaults(build_py):
    """Ship the root `config.toml` and the `presets/` inside the package, so a wheel install has
    its defaults and presets."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "posestream" / "default_config.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "config.toml", target)
        presets = target.parent / "presets"
        presets.mkdir(exist_ok=True)
        for preset in (ROOT / "presets").glob("*.toml"):
            shutil.copyfile(preset, presets / preset.name)


def namespace_packages() -> tuple[list[str], dict[str, str]]:
    """Every package under `posestream`, and where its folder lies in the repository."""
    packages = ["posestream", *(f"posestream.{p}" for p in find_packages(where="posestream"))]
    package_dir = {"posestream": "posestream"}
    for folder in MAPPED_FOLDERS:
        packages.append(f"posestream.{folder}")
        package_dir[f"posestream.{folder}"] = folder
        for sub in find_packages(where=folder):
            packages.append(f"posestream.{folder}.{sub}")
    return packages, package_dir


PACKAGES, PACKAGE_DIR = namespace_packages()
FLEET = ["ray==2.60.0"]  # `posestream fleet`: Ray is the control plane of a camera fleet (tests use it)
# `posestream eval --mot`: TrackEval computes MOTA, IDF1 and HOTA. 1.3.0 supports numpy 2 (py-motmetrics
# 1.4.0, the last release, calls np.asfarray, removed in numpy 2, and has no HOTA). It declares
# opencv-python, the GUI build, for a segmentation metric posestream never runs: see scripts/setup.sh.
EVAL = ["trackeval==1.3.0"]

setup(
    name="posestream",
    version="0.2.0",
    description="Real-time multi-person 2D pose estimation over live video",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    include_package_data=False,
    package_data={"posestream.plugins.sinks.web": ["static/*.html"]},
    cmdclass={"build_py": BuildWithDefaults},
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "av>=12",
        "pyzmq>=25",
        "msgpack>=1.0",
        "onnxruntime>=1.17",
        "openvino>=2025.0",  # the default CPU backend (FP32 and INT8 models)
        "nncf>=2.14",  # builds the default INT8 model at `models prepare` (a plain install gives the default)
        "onnx>=1.15",
        "torch>=2.1",
        "scipy>=1.10",
        "Pillow>=9",  # image sizes from headers, without decoding, for image-folder sources
        "pycocotools>=2.0.7",
        "scikit-image>=0.21",  # only for its bundled public-domain photo used by `posestream demo`
        "tflite>=2.18",  # the TFLite flatbuffer schema, for importing MediaPipe landmark models
        "tomli>=2.0; python_version<'3.11'",
        "aiohttp>=3.9",  # the web viewer's HTTP/WebSocket server
        "prometheus_client>=0.17",  # the web viewer's /metrics
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout>=2.1", "matplotlib>=3.7", "ai-edge-litert>=2.3",
                 "playwright>=1.40", *FLEET, *EVAL],  # playwright drives Debian's chromium; never `playwright install`
        "fleet": FLEET,
        "eval": EVAL,
        "gpu": ["tensorrt>=10,<12"],  # 10.x and 11.x (see docs/gpu.md: 11 has no calibrated INT8)
        "plot": ["matplotlib>=3.7"],
    },
    entry_points={
        "console_scripts": ["posestream = posestream.cli:main"],
        "posestream.detectors": [
            "yolo = posestream.engines.families.yolo11.detector:YoloDetector",
            "movenet-multipose = posestream.engines.families.movenet.multipose:MoveNetMultiPose",
            "mediapipe-person = posestream.engines.families.mediapipe_detector.detector:MediaPipePersonDetector",
        ],
        "posestream.pose": [
            "yolo-crop = posestream.engines.families.yolo11.crop_pose:YoloCropPose",
            "heatmap = posestream.engines.families.heatmap.pose:HeatmapPose",
            "simcc = posestream.engines.families.simcc.pose:SimccPose",
            "blazepose = posestream.engines.families.blazepose.pose:BlazePose",
            "movenet = posestream.engines.families.movenet.pose:MoveNetPose",
        ],
        "posestream.families": [
            "yolo11 = posestream.engines.families.yolo11.family:FAMILY",
            "heatmap = posestream.engines.families.heatmap.family:FAMILY",
            "simcc = posestream.engines.families.simcc.family:FAMILY",
            "blazepose = posestream.engines.families.blazepose.family:FAMILY",
            "movenet = posestream.engines.families.movenet.family:FAMILY",
            "mediapipe_detector = posestream.engines.families.mediapipe_detector.family:FAMILY",
        ],
        "posestream.trackers": [
            "none = posestream.plugins.trackers.none:NoTracker",
            "oks-byte = posestream.plugins.trackers.oks_byte:OksByteTracker",
        ],
        "posestream.sinks": [
            "json = posestream.plugins.sinks.json_sink:JsonSink",
            "video = posestream.plugins.sinks.video:VideoSink",
            "images = posestream.plugins.sinks.images:ImagesSink",
            "window = posestream.plugins.sinks.window:WindowSink",
            "zmq = posestream.plugins.sinks.zmq_sink:ZmqSink",
            "web = posestream.plugins.sinks.web:WebSink",
        ],
    },
)
