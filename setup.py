"""posestream: real-time multi-person 2D pose estimation over live video."""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithDefaults(build_py):
    """Ship the root `config.toml` inside the `stream` package, so a wheel install has its defaults."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "stream" / "default_config.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "config.toml", target)


setup(
    name="posestream",
    version="0.1.0",
    description="Real-time multi-person 2D pose estimation over live video",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["stream", "stream.*", "engines", "engines.*", "plugins",
                                    "plugins.*", "benchmarks", "benchmarks.*"]),
    include_package_data=False,
    cmdclass={"build_py": BuildWithDefaults},
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "av>=12",
        "pyzmq>=25",
        "msgpack>=1.0",
        "onnxruntime>=1.17",
        "onnx>=1.15",
        "torch>=2.1",
        "scipy>=1.10",
        "Pillow>=9",  # image sizes from headers, without decoding, for image-folder sources
        "pycocotools>=2.0.7",
        "scikit-image>=0.21",  # only for its bundled public-domain photo used by `posestream demo`
        "tomli>=2.0; python_version<'3.11'",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout>=2.1", "matplotlib>=3.7"],
        "gpu": ["tensorrt>=10,<11"],
        "plot": ["matplotlib>=3.7"],
    },
    entry_points={
        "console_scripts": ["posestream = stream.cli:main"],
        "posestream.detectors": ["yolo = plugins.detectors.yolo:YoloDetector"],
        "posestream.pose": [
            "yolo-crop = plugins.pose.yolo_crop:YoloCropPose",
            "heatmap = plugins.pose.heatmap:HeatmapPose",
            "simcc = plugins.pose.simcc:SimccPose",
        ],
        "posestream.trackers": [
            "none = plugins.trackers.none:NoTracker",
            "oks-byte = plugins.trackers.oks_byte:OksByteTracker",
        ],
        "posestream.sinks": [
            "json = plugins.sinks.json_sink:JsonSink",
            "video = plugins.sinks.video:VideoSink",
            "images = plugins.sinks.images:ImagesSink",
            "window = plugins.sinks.window:WindowSink",
            "zmq = plugins.sinks.zmq_sink:ZmqSink",
        ],
    },
)
