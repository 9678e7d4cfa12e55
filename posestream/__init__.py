"""posestream: real-time multi-person 2D human pose estimation over live video.

The public API, imported lazily so that `import posestream` (and the command line) stays quick:

    from posestream import Subscriber, Pipeline, load_config

Everything else lives in the sub-packages: `posestream.stream` (core types and the streaming
runtime), `posestream.engines` (inference backends, shared model plumbing and one folder per model
family, with the detector and pose estimator plugins), `posestream.plugins` (trackers, sinks) and
`posestream.benchmarks`.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "Subscriber": "posestream.stream.client",
    "Pipeline": "posestream.stream.pipeline",
    "load_config": "posestream.stream.core.config",
    "FrameResult": "posestream.stream.core.results",
    "Poses": "posestream.stream.core.results",
    "KeypointFormat": "posestream.stream.core.keypoints",
    "get_format": "posestream.stream.core.keypoints",
    "PosestreamError": "posestream.stream.core.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'posestream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
