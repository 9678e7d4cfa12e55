"""MoveNet's post-processing as plain numpy functions, batched: the arithmetic that ends Google's
graphs (argmax, gathers, distance weighting), applied to the heads our network exports.

Heads are NCHW on the heatmap grid (stride 4): keypoint heatmaps (sigmoid) [B,17,H,W], centre
heatmap [B,1,H,W], keypoint regression from a centre [B,34,H,W] and keypoint offsets [B,34,H,W]
(channels 2k, 2k+1 = y, x of keypoint k, in grid cells). Results are (y, x, score) with y, x
normalised to [0, 1] of the input, as the original graphs output them.
"""
from __future__ import annotations

import numpy as np

KEYPOINTS = 17
# Constants of the multi-pose graph (float16 in the file; the parity fixture checks them)
MULTI_MAX_PERSONS = 6           # TopKV2 k
MULTI_NMS_KERNEL = 5            # MaxPool window that keeps local centre maxima
MULTI_NMS_TOLERANCE = 1.0132789611816406e-06
MULTI_SIGMA_FACTOR = 0.300048828125  # keypoint weight exp(-d^2 / (factor * min(H, W)))
MULTI_KEYPOINT_THRESHOLD = 0.126953125  # keypoints above it count towards the person score


def _pick(maps: np.ndarray, flat_index: np.ndarray) -> np.ndarray:
    """maps [B, C, H*W] at one flat index per (b, c): [B, C]."""
    return np.take_along_axis(maps, flat_index[..., None], axis=2)[..., 0]


def decode_singlepose(heatmaps: np.ndarray, centers: np.ndarray, regression: np.ndarray,
                      offsets: np.ndarray, distance_offset: float) -> np.ndarray:
    """MoveNet single-pose: [B,17,3] (y, x, score). `centers` is the centre heatmap already weighted
    towards the middle of the input (the network's output); each keypoint is the heatmap maximum
    after dividing by (distance to the position regressed from the centre + `distance_offset`)."""
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    b, k, h, w = heatmaps.shape
    centre = np.asarray(centers, dtype=np.float32).reshape(b, -1).argmax(1)
    cy, cx = centre // w, centre % w
    reg = np.asarray(regression, dtype=np.float32).reshape(b, 2 * k, h * w)
    reg = _pick(reg, np.repeat(centre[:, None], 2 * k, 1)).reshape(b, k, 2)
    ry = cy[:, None].astype(np.float32) + reg[..., 0]
    rx = cx[:, None].astype(np.float32) + reg[..., 1]
    gy = np.arange(h, dtype=np.float32)[None, None, :, None]
    gx = np.arange(w, dtype=np.float32)[None, None, None, :]
    distance = np.sqrt((gy - ry[..., None, None]) ** 2 + (gx - rx[..., None, None]) ** 2)
    weighted = (heatmaps / (distance + np.float32(distance_offset))).reshape(b, k, -1)
    best = weighted.argmax(2)
    ky, kx = best // w, best % w
    off = np.asarray(offsets, dtype=np.float32).reshape(b, k, 2, h * w)
    off_y = _pick(off[:, :, 0], best)
    off_x = _pick(off[:, :, 1], best)
    score = _pick(heatmaps.reshape(b, k, -1), best)
    return np.stack([(ky + off_y) / np.float32(h), (kx + off_x) / np.float32(w), score], -1)


def _max_pool_same(x: np.ndarray, kernel: int) -> np.ndarray:
    """Max over a kernel x kernel window centred at each cell ([B, H, W], edges padded with -inf)."""
    pad = kernel // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    h, w = x.shape[1:]
    return np.max([padded[:, i:i + h, j:j + w] for i in range(kernel) for j in range(kernel)], axis=0)


def decode_multipose(heatmaps: np.ndarray, centers: np.ndarray, regression: np.ndarray,
                     offsets: np.ndarray, box_offsets: np.ndarray, box_scales: np.ndarray,
                     max_persons: int = MULTI_MAX_PERSONS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MoveNet multi-pose per image: keypoints [B,P,17,3] (y, x, score), boxes [B,P,4] (ymin, xmin,
    ymax, xmax), normalised and clipped to [0, 1], and person scores [B,P], best first. `centers` is
    the sigmoid centre heatmap; persons are its local maxima (5x5), the `max_persons` highest."""
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    b, k, h, w = heatmaps.shape
    centre = np.asarray(centers, dtype=np.float32)[:, 0]
    peaks = centre * (np.abs(centre - _max_pool_same(centre, MULTI_NMS_KERNEL)) < MULTI_NMS_TOLERANCE)
    flat = peaks.reshape(b, -1)
    top = np.argsort(-flat, axis=1, kind="stable")[:, :max_persons]
    centre_score = np.take_along_axis(flat, top, 1)
    cy, cx = (top // w).astype(np.float32), (top % w).astype(np.float32)

    def at_centres(maps: np.ndarray) -> np.ndarray:  # [B, C, H, W] -> [B, P, C]
        m = np.asarray(maps, dtype=np.float32)
        return np.take_along_axis(m.reshape(b, m.shape[1], -1), top[:, None, :], 2).transpose(0, 2, 1)

    scale = np.maximum(at_centres(box_scales), 0.0)
    shift = at_centres(box_offsets)
    mid_y, mid_x = cy + shift[..., 0], cx + shift[..., 1]
    boxes = np.stack([np.clip(mid_y - scale[..., 0] * 0.5, 0, h), np.clip(mid_x - scale[..., 1] * 0.5, 0, w),
                      np.clip(mid_y + scale[..., 0] * 0.5, 0, h), np.clip(mid_x + scale[..., 1] * 0.5, 0, w)], -1)
    reg = at_centres(regression).reshape(b, -1, k, 2)
    ry, rx = cy[..., None] + reg[..., 0], cx[..., None] + reg[..., 1]  # [B, P, K]
    gy = np.arange(h, dtype=np.float32)[None, :, None, None, None]
    gx = np.arange(w, dtype=np.float32)[None, None, :, None, None]
    d2 = (gy - ry[:, None, None]) ** 2 + (gx - rx[:, None, None]) ** 2  # [B, H, W, P, K]
    weight = np.exp(-d2 / np.float32(MULTI_SIGMA_FACTOR * min(h, w)))
    inside = ((gy >= boxes[:, None, None, :, 0:1]) & (gy < boxes[:, None, None, :, 2:3])
              & (gx >= boxes[:, None, None, :, 1:2]) & (gx < boxes[:, None, None, :, 3:4]))
    weighted = heatmaps.transpose(0, 2, 3, 1)[:, :, :, None, :] * weight * inside  # [B, H, W, P, K]
    best = weighted.reshape(b, h * w, -1, k).argmax(1)  # [B, P, K]
    ky, kx = best // w, best % w
    # a keypoint's score: the most any person's weighting gives that cell (the graph's Max over persons)
    strongest = weighted.max(3).reshape(b, h * w, k)  # [B, H*W, K]
    score = np.take_along_axis(strongest, best.reshape(b, -1, k), 1)  # [B, P, K]
    off = np.asarray(offsets, dtype=np.float32).reshape(b, k, 2, h * w)
    off_y = np.take_along_axis(off[:, None, :, 0].repeat(best.shape[1], 1), best[..., None], 3)[..., 0]
    off_x = np.take_along_axis(off[:, None, :, 1].repeat(best.shape[1], 1), best[..., None], 3)[..., 0]
    keypoints = np.stack([(ky + off_y) / np.float32(h), (kx + off_x) / np.float32(w), score], -1)
    counted = score > MULTI_KEYPOINT_THRESHOLD
    person = centre_score * (score * counted).sum(-1) / np.maximum(counted.sum(-1), 1)
    boxes = boxes / np.array([h, w, h, w], dtype=np.float32)
    return keypoints, np.clip(boxes, 0.0, 1.0), person
