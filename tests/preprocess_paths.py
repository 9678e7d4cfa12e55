"""Runs a detector plugin both ways OpenVINO can be fed, for the tests that compare them."""
from __future__ import annotations

from typing import Any

import numpy as np

from posestream.stream.core.config import load_config
from posestream.stream.core.results import Poses


def detect_both_ways(plugin: type, overrides: dict[str, Any], images: list[np.ndarray]) -> dict[str, list[Poses]]:
    """`plugin(settings).detect(images)` with OpenVINO, normalising inside the model
    (`engine.preprocess = "auto"`, uint8 images in) and in numpy ("numpy"): {mode: persons per image}."""
    found = {}
    for mode in ("auto", "numpy"):
        config = load_config(overrides={**overrides, "engine.backend": "openvino", "engine.preprocess": mode})
        with plugin(config) as detector:
            assert detector.takes_images == (mode == "auto")
            found[mode] = detector.detect(images)
    return found
