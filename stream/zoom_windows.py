"""Geometry of zoom windows for small people, as plain numpy functions (no model needed to test them).

A *window* is a region of the frame, `[x, y, w, h]` in frame pixels, looked at with more detail than
the full-frame pass. Windows travel to the detector packed into a *mosaic*: an image as wide as the
full-frame pass's canvas, cut into `columns x rows` slots with a gap between them, each slot holding
one window scaled by the zoom; a mosaic is only as tall as the rows its windows fill, so its cost
(one detector call) follows the number of windows.

- `mosaic_slots`, `used_height`: the slots of a mosaic, and how tall a mosaic of n windows is;
- `scan_grid`: windows that tile the whole frame with overlap (what a scan walks through);
- `cover`: windows on groups of nearby boxes until every box lies inside one (where small people were);
- `build_mosaic` / `from_mosaic`: pack windows into a mosaic, and bring what the detector found in
  it back to frame pixels, marking persons cut by a window edge that is not the frame's edge;
- `inside_fraction`: how much of a box lies in another (a window's view of part of a large person);
- `merge`: the full-frame pass's persons and the windows' persons, duplicates suppressed by IoU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from posestream.stream.core.results import Poses
from posestream.stream.core.similarity import iou_matrix

MOSAIC_GAP = 16   # mosaic pixels between slots: two strides of the coarsest common YOLO head (8)
MOSAIC_PAD = 114  # fill of gaps and unused slot area (the letterbox pad of YOLO models)


def canvas_hw(frame_hw: tuple[int, int], long_side: int, rectangular: bool, stride: int = 32) -> tuple[int, int]:
    """The (H, W) of the full-frame pass's network input for a frame of `frame_hw`: a mosaic of this
    size needs no letterbox resize (square `long_side`, or the frame's aspect rounded up to `stride`)."""
    if not rectangular:
        return long_side, long_side
    height, width = max(1, frame_hw[0]), max(1, frame_hw[1])
    scale = long_side / max(height, width)
    return (max(stride, math.ceil(height * scale / stride) * stride),
            max(stride, math.ceil(width * scale / stride) * stride))


def mosaic_slots(mosaic_hw: tuple[int, int], columns: int, rows: int, gap: int = MOSAIC_GAP) -> np.ndarray:
    """Slots `[columns * rows, 4]` (x, y, w, h, integers) of a mosaic, row by row."""
    height, width = mosaic_hw
    slot_w = max(1, (width - (columns - 1) * gap) // columns)
    slot_h = max(1, (height - (rows - 1) * gap) // rows)
    return np.array([[col * (slot_w + gap), row * (slot_h + gap), slot_w, slot_h]
                     for row in range(rows) for col in range(columns)], dtype=np.int64)


def used_height(slots: np.ndarray, count: int, mosaic_h: int, stride: int = 32) -> int:
    """The height of a mosaic holding windows in its first `count` slots: only the rows they fill,
    rounded up to `stride` (a mosaic of one row of windows costs a detector call of that height)."""
    bottom = int((slots[:count, 1] + slots[:count, 3]).max()) if count else stride
    return min(mosaic_h, math.ceil(bottom / stride) * stride)


def window_size(slot_wh: tuple[int, int], scale: float, frame_hw: tuple[int, int]) -> tuple[float, float]:
    """(w, h) in frame pixels of a window that fills a slot at `scale` (slot px per frame px), no
    larger than the frame."""
    return min(slot_wh[0] / scale, frame_hw[1]), min(slot_wh[1] / scale, frame_hw[0])


def _starts(length: float, size: float, overlap: float) -> list[float]:
    """Evenly spread starts of windows of `size` covering [0, length] with at least `overlap`."""
    if size >= length:
        return [0.0]
    count = math.ceil((length - overlap) / max(size - overlap, 1.0))
    count = max(count, 2)
    step = (length - size) / (count - 1)
    return [i * step for i in range(count)]


def scan_grid(frame_hw: tuple[int, int], window_wh: tuple[float, float], overlap: float) -> np.ndarray:
    """Windows `[N, 4]` of `window_wh` that tile the frame, neighbours overlapping by at least
    `overlap` pixels (so a person that small lies whole in one of them), row by row."""
    height, width = frame_hw
    w, h = window_wh
    return np.array([[x, y, w, h] for y in _starts(height, h, overlap) for x in _starts(width, w, overlap)],
                    dtype=np.float64).reshape(-1, 4)


def _inside(boxes: np.ndarray, window: np.ndarray) -> np.ndarray:
    return ((boxes[:, 0] >= window[0]) & (boxes[:, 1] >= window[1])
            & (boxes[:, 0] + boxes[:, 2] <= window[0] + window[2])
            & (boxes[:, 1] + boxes[:, 3] <= window[1] + window[3]))


def cover(boxes: np.ndarray, scores: np.ndarray, window_wh: tuple[float, float], frame_hw: tuple[int, int],
          limit: int) -> np.ndarray:
    """At most `limit` windows `[M, 4]` of `window_wh`, placed greedily: the best-scored box not yet
    inside a window seeds one, which also takes the nearest other such boxes while all of them fit
    in a window together; the window is centred on them (moved inside the frame), and every box that
    lies inside it counts as covered. A box larger than a window gets one centred on it all the same."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = window_wh
    height, width = frame_hw
    corners = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    covered = np.zeros(len(boxes), dtype=bool)
    windows = []
    for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        if len(windows) >= limit:
            break
        if covered[i]:
            continue
        group = corners[i].copy()
        others = np.flatnonzero(~covered)
        for j in others[np.argsort(np.hypot(*(centres[others] - centres[i]).T), kind="stable")]:
            joined = np.concatenate([np.minimum(group[:2], corners[j, :2]), np.maximum(group[2:], corners[j, 2:])])
            if joined[2] - joined[0] <= w and joined[3] - joined[1] <= h:
                group = joined
        cx, cy = (group[0] + group[2]) / 2, (group[1] + group[3]) / 2
        window = np.array([min(max(cx - w / 2, 0.0), max(width - w, 0.0)),
                           min(max(cy - h / 2, 0.0), max(height - h, 0.0)), w, h])
        covered |= _inside(boxes, window)
        covered[i] = True
        windows.append(window)
    return np.array(windows, dtype=np.float64).reshape(-1, 4)


@dataclass(frozen=True)
class Placement:
    """Where one window went: frame region `window` (integer pixel bounds) drawn into `slot` of the
    mosaic at `scale_x`, `scale_y` mosaic px per frame px."""

    window: tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels
    slot: tuple[int, int, int, int]    # x, y, w, h in mosaic pixels (the drawn part)
    scale_x: float
    scale_y: float


def build_mosaic(frame: np.ndarray, windows: np.ndarray, slots: np.ndarray, scale: float,
                 mosaic_hw: tuple[int, int]) -> tuple[np.ndarray, list[Placement]]:
    """A mosaic image holding `windows` (at most one per slot) scaled by `scale`, and where each went."""
    mosaic = np.full((*mosaic_hw, 3), MOSAIC_PAD, dtype=np.uint8)
    height, width = frame.shape[:2]
    placements = []
    for window, slot in zip(windows, slots):
        x0, y0 = int(max(0, math.floor(window[0]))), int(max(0, math.floor(window[1])))
        x1 = int(min(width, max(x0 + 1, math.ceil(window[0] + window[2]))))
        y1 = int(min(height, max(y0 + 1, math.ceil(window[1] + window[3]))))
        out_w = int(min(slot[2], max(1, round((x1 - x0) * scale))))
        out_h = int(min(slot[3], max(1, round((y1 - y0) * scale))))
        crop = frame[y0:y1, x0:x1]
        if crop.shape[:2] != (out_h, out_w):
            crop = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        mosaic[slot[1]:slot[1] + out_h, slot[0]:slot[0] + out_w] = crop
        placements.append(Placement((x0, y0, x1, y1), (int(slot[0]), int(slot[1]), out_w, out_h),
                                    out_w / (x1 - x0), out_h / (y1 - y0)))
    return mosaic, placements


def from_mosaic(found: Poses, placements: list[Placement], frame_hw: tuple[int, int],
                edge: float = 2.0) -> tuple[Poses, np.ndarray]:
    """The persons `found` in a mosaic, in frame pixels, and which of them are whole. A person belongs
    to the slot holding its box centre (persons in no slot are left out). It is not whole when its box
    reaches past that slot's drawn part, or lies within `edge` mosaic pixels of a window side that is
    not a frame side: a person cut by the window, who lies whole in the full frame or in another
    window (it still says where to look)."""
    height, width = frame_hw
    boxes = found.boxes.astype(np.float64)
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    out_boxes = np.zeros_like(boxes)
    out_points = found.keypoints.astype(np.float64).copy()
    placed = np.zeros(len(found), dtype=bool)
    whole = np.zeros(len(found), dtype=bool)
    for p in placements:
        sx, sy, sw, sh = p.slot
        index = np.flatnonzero((centres[:, 0] >= sx) & (centres[:, 0] < sx + sw) & (centres[:, 1] >= sy)
                               & (centres[:, 1] < sy + sh))
        if index.size == 0:
            continue
        b = boxes[index]
        left, top = b[:, 0] - sx, b[:, 1] - sy
        right, bottom = left + b[:, 2], top + b[:, 3]
        x0, y0, x1, y1 = p.window
        cut = (((left < edge) & (x0 > 0)) | ((top < edge) & (y0 > 0))
               | ((right > sw - edge) & (x1 < width)) | ((bottom > sh - edge) & (y1 < height))
               | (left < -edge) | (top < -edge) | (right > sw + edge) | (bottom > sh + edge))
        placed[index] = True
        whole[index] = ~cut
        out_boxes[index] = np.stack([x0 + left / p.scale_x, y0 + top / p.scale_y,
                                     b[:, 2] / p.scale_x, b[:, 3] / p.scale_y], axis=1)
        out_points[index, :, 0] = x0 + (out_points[index, :, 0] - sx) / p.scale_x
        out_points[index, :, 1] = y0 + (out_points[index, :, 1] - sy) / p.scale_y
    index = np.flatnonzero(placed)
    return (Poses(out_boxes[index], found.box_scores[index], out_points[index], found.scores[index],
                  format=found.format), whole[index])


def inside_fraction(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For boxes `[N, 4]` and `others` `[M, 4]` (x, y, w, h): the share of each box's area that lies in
    each other box, `[N, M]` (0 for boxes without area)."""
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(width, 0.0) * np.maximum(height, 0.0)
    area = (np.maximum(a[:, 2], 0.0) * np.maximum(a[:, 3], 0.0))[:, None]
    return np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)


def merge(parts: list[Poses], iou_threshold: float, max_persons: int) -> Poses:
    """One person list from the full-frame pass and the windows: greedy by box score, a person whose
    box overlaps a kept one by IoU above `iou_threshold` is dropped (the same person seen twice, at
    two scales), at most `max_persons` kept (0 = all)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Poses.empty()
    if len(parts) == 1:
        return parts[0]
    joined = Poses(np.concatenate([p.boxes for p in parts]), np.concatenate([p.box_scores for p in parts]),
                   np.concatenate([p.keypoints for p in parts]), np.concatenate([p.scores for p in parts]),
                   format=parts[0].format)
    order = np.argsort(-joined.box_scores, kind="stable")
    overlaps = iou_matrix(joined.boxes[order], joined.boxes[order])
    suppressed = np.zeros(len(order), dtype=bool)
    kept: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        if max_persons and len(kept) >= max_persons:
            break
        suppressed |= overlaps[i] > iou_threshold
    return joined.select(order[kept])
