"""The one comparison of results with golden/reference outputs: by value, with stated tolerances.

ONNX Runtime and OpenVINO choose kernels by the CPU's instruction set (AVX2, AVX-512, VNNI, AMX),
so the last digits of every model output move between machines. A reference test therefore never
compares bytes: it parses both sides and compares

- structure exactly: the same frames, the same persons in the same order, the same track ids,
  image ids, category ids and stream names;
- coordinates (boxes, keypoint x/y) within `Tolerance.xy` pixels;
- scores (box, pose and keypoint scores) within `Tolerance.score`;

and a failure names the first differing field with both values. Results are AlphaPose JSON
records (`image_id`, flat `keypoints`, `box`, `score`, `idx`) or schema-v2 frame messages
(`frame`, `persons[id, box, box_score, score, keypoints]`); raw model outputs (arrays whose
channels are coordinates or scores) go through `first_output_difference`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    xy: float = 0.05      # pixels, for boxes and keypoint coordinates
    score: float = 1e-4   # for box, pose and keypoint scores


_SCORES = {"score", "box_score"}
_COORDINATES = {"box", "bbox"}
_WALL_CLOCK = {"capture_ts", "publish_ts"}  # when it ran, not what it computed


def _number_differs(got: Any, want: Any, tol: float) -> bool:
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        return True
    return not math.isclose(float(got), float(want), rel_tol=0.0, abs_tol=tol) and not (
        math.isnan(float(got)) and math.isnan(float(want)))


def _keypoints_difference(path: str, got: Any, want: Any, tol: Tolerance) -> str | None:
    """Keypoints as a flat [x, y, s, ...] list (AlphaPose) or as [[x, y, s], ...] (wire)."""
    flat_got, flat_want = np.asarray(got, dtype=float).ravel(), np.asarray(want, dtype=float).ravel()
    if np.shape(got) != np.shape(want) or flat_got.size % 3:
        return f"{path}: shape {np.shape(got)} != expected {np.shape(want)}"
    for i, (g, w) in enumerate(zip(flat_got, flat_want)):
        limit = tol.score if i % 3 == 2 else tol.xy
        if _number_differs(g, w, limit):
            part = ("x", "y", "score")[i % 3]
            return (f"{path}[{i // 3}].{part}: got {g!r}, expected {w!r} "
                    f"(|diff| {abs(g - w):.6g} > {limit})")
    return None


def _difference(path: str, got: Any, want: Any, tol: Tolerance, key: str = "") -> str | None:
    if key == "keypoints":
        return _keypoints_difference(path, got, want, tol)
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            return f"{path}: got {type(got).__name__}, expected an object"
        if set(got) != set(want):
            return f"{path}: keys {sorted(got)} != expected {sorted(want)}"
        for name in want:  # the expected file's field order: names the first field as written
            if name in _WALL_CLOCK:
                continue
            found = _difference(f"{path}.{name}", got[name], want[name], tol, name)
            if found:
                return found
        return None
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"{path}: got {got!r}, expected a list"
        if len(got) != len(want):
            return f"{path}: {len(got)} items, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            found = _difference(f"{path}[{i}]", g, w, tol, key)
            if found:
                return found
        return None
    if isinstance(want, float) or (key in _SCORES | _COORDINATES and isinstance(want, (int, float))):
        limit = tol.score if key in _SCORES else tol.xy
        if _number_differs(got, want, limit):
            return f"{path}: got {got!r}, expected {want!r} (tolerance {limit})"
        return None
    if got != want or type(got) is not type(want):
        return f"{path}: got {got!r}, expected {want!r}"
    return None


def first_result_difference(got: Sequence[Any], want: Sequence[Any],
                            tol: Tolerance = Tolerance()) -> str | None:
    """The first field in which result lists differ beyond `tol`, described with both values; None
    when they agree. Records are compared in order: order and ids are part of the result."""
    if len(got) != len(want):
        shorter = min(len(got), len(want))
        head = _difference("results", list(got[:shorter]), list(want[:shorter]), tol)
        return head or f"{len(got)} records, expected {len(want)}"
    return _difference("results", list(got), list(want), tol)


def assert_same_results(got: Sequence[Any], want: Sequence[Any], tol: Tolerance = Tolerance()) -> None:
    """Fail with the first differing field (see `first_result_difference`)."""
    problem = first_result_difference(got, want, tol)
    assert problem is None, problem


def first_output_difference(got: np.ndarray, want: np.ndarray,
                            channels: Mapping[str, tuple[Any, float]], axis: int = -2) -> str | None:
    """Raw model outputs: `channels` maps a name to (index along `axis`, tolerance), e.g.
    {"coordinates": (COORD_CHANNELS, 0.05), "scores": (SCORE_CHANNELS, 1e-3)}; the worst element of
    the first group out of tolerance is named with its index and both values."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return f"shape {got.shape} != expected {want.shape}"
    for name, (index, limit) in channels.items():
        g, w = np.take(got, index, axis=axis), np.take(want, index, axis=axis)
        diff = np.abs(g - w)
        if diff.size and not float(diff.max()) <= limit:
            where = np.unravel_index(int(np.nanargmax(np.where(np.isnan(diff), np.inf, diff))), diff.shape)
            return (f"{name}: max |diff| {float(diff[where]):.6g} > {limit} at {tuple(int(i) for i in where)}: "
                    f"got {g[where]!r}, expected {w[where]!r}")
    return None


def assert_outputs_close(got: np.ndarray, want: np.ndarray, channels: Mapping[str, tuple[Any, float]],
                         what: str = "", axis: int = -2) -> None:
    """Fail naming the worst differing element (see `first_output_difference`)."""
    problem = first_output_difference(got, want, channels, axis)
    assert problem is None, f"{what}: {problem}" if what else problem


# YOLO-pose raw output [B, 56, N]: cx, cy, w, h, person score, then 17 x (x, y, score)
SCORE_CHANNELS = [4] + list(range(7, 56, 3))
COORD_CHANNELS = [c for c in range(56) if c not in SCORE_CHANNELS]


def yolo_pose_channels(xy: float = 0.05, score: float = 1e-3) -> dict[str, tuple[list[int], float]]:
    """Channel groups of a YOLO-pose output with their tolerances (defaults: the bounds our FP32
    exports meet against the reference export on any CPU: 0.05 px and 1e-3)."""
    return {"coordinates": (COORD_CHANNELS, xy), "scores": (SCORE_CHANNELS, score)}
