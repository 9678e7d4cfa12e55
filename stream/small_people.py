"""Small people: zoom into the parts of a stream's frames where its people are small, around any `Detector`.

Every frame gets the detector's full-frame pass, as without this strategy. A frame larger than the
detector's input (`detector.input_size` on its long side) also gets *windows*: regions seen at
`small_people.zoom` times the full pass's scale, packed `mosaic_columns` x `mosaic_rows` (3 x 2) to
one image as wide as the full pass's canvas and as tall as the rows they fill, so six windows cost
one more detector call of the frame's size, three windows half of one. Where they go:

- **where small people were**: around every person the stream showed in its recent frames (the last
  `memory` frames that are at least `lag` frames old) whose box in the full pass was shorter than
  `small_height` network pixels, found by the full pass or by a window; and, for one look, around
  each *hint* of the newest of those frames: a small detection scoring between `hint_score` and
  `detector.score_threshold` (the inner detector decodes from `hint_score`; hints are never output);
- **a slow scan**: a grid of windows over the whole frame, walked round robin: all of it on a
  stream's first frame (and after a resolution change), then one row of a mosaic every `scan_every`
  frames, and whatever slots of a row the windows above leave free.

A stream whose people are all large therefore pays half a detector call per `scan_every` frames; a
stream with small people about half a call per three places where they are. The windows' persons that are
whole (not cut by a window side) join the full pass's, duplicates suppressed by IoU
(`zoom_windows.merge`).

Determinism: the windows of frame t depend only on frames up to t - `lag` of its stream, where
`lag` exceeds the frames a detect stage may have started but not finished (`in_flight`, or its
batch), so offline runs give the same persons whether frames overlap or not. Frames without a stream
(`detect`: still images, evaluation) get hint windows from their own full pass, in a second step;
frames no larger than the detector input are detected as before.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np

from posestream.stream.core.contracts import Detector
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import Settings
from posestream.stream.zoom_windows import (Placement, build_mosaic, canvas_hw, cover, from_mosaic,
                                            inside_fraction, merge, mosaic_slots, scan_grid, used_height,
                                            window_size)

Mosaic = tuple[np.ndarray, list[Placement]]
PART_OF_LARGE = 0.5  # a window person or hint with this share of its box inside a large person is part of them


def _part_of(boxes: np.ndarray, large: np.ndarray) -> np.ndarray:
    """Which `boxes` lie mostly inside one of the `large` persons' boxes."""
    return inside_fraction(boxes, large).max(axis=1, initial=0.0) >= PART_OF_LARGE


def hint_settings(settings: Settings) -> Settings:
    """The settings the wrapped detector runs with: decoding from `small_people.hint_score`."""
    detector = settings.detector
    lowest = min(detector.score_threshold, settings.small_people.hint_score)
    return dataclasses.replace(settings, detector=dataclasses.replace(detector, score_threshold=lowest))


@dataclass
class _StreamState:
    """What one stream showed: small persons and hints per frame, and where the scan is."""

    shape: tuple[int, int]
    seen: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # frame -> boxes, scores
    scan_next: int = 0
    planned: int = 0


@dataclass
class _Started:
    """A stream frame on its way: where its windows went and the inner detector's handles."""

    key: Hashable
    frame_id: int
    shape: tuple[int, int]
    placements: list[list[Placement]]
    handles: list[object]


class SmallPeopleDetector(Detector):
    """`SmallPeopleDetector(inner, settings)`: `inner` built with `hint_settings(settings)`."""

    def __init__(self, inner: Detector, settings: Settings) -> None:
        self.inner = inner
        cfg, det = settings.small_people, settings.detector
        self.size, self.rectangular = det.input_size, det.rectangular
        self.threshold, self.iou_threshold, self.max_persons = det.score_threshold, det.iou_threshold, det.max_persons
        self.zoom, self.small_height, self.hint_score = cfg.zoom, cfg.small_height, cfg.hint_score
        self.memory, self.scan_every, self.max_mosaics = cfg.memory, cfg.scan_every, cfg.max_mosaics
        self.columns, self.rows = cfg.mosaic_columns, cfg.mosaic_rows
        self.in_flight = inner.in_flight
        self.lag = max(inner.in_flight, det.batch) + 1
        self._streams: dict[Hashable, _StreamState] = {}
        self.frames = self.mosaics = 0  # frames detected, mosaics of windows run for them (the extra cost)

    @property
    def model_info(self) -> dict | None:
        """What the wrapped detector's model runs as (the run's summary states it)."""
        return getattr(self.inner, "model_info", None)

    # -- geometry of one frame size --------------------------------------------------------------------
    def _geometry(self, shape: tuple[int, int]) -> tuple[float, tuple[int, int], np.ndarray, tuple[float, float]] | None:
        """(full-pass scale, mosaic size, its slots, window size in frame px), None where no zoom applies."""
        if min(shape) < 1 or max(shape) <= self.size:
            return None
        scale = self.size / max(shape)
        mosaic_hw = canvas_hw(shape, self.size, self.rectangular)
        slots = mosaic_slots(mosaic_hw, self.columns, self.rows)
        return scale, mosaic_hw, slots, window_size((int(slots[0, 2]), int(slots[0, 3])), self.zoom * scale, shape)

    def _mosaics(self, frame: np.ndarray, windows: np.ndarray) -> list[Mosaic]:
        geometry = self._geometry(frame.shape[:2])
        if geometry is None or len(windows) == 0:
            return []
        scale, mosaic_hw, slots, _ = geometry
        per = len(slots)
        self.mosaics += -(-len(windows) // per)
        chunks = [windows[i:i + per] for i in range(0, len(windows), per)]
        return [build_mosaic(frame, chunk, slots, self.zoom * scale,
                             (used_height(slots, len(chunk), mosaic_hw[0]), mosaic_hw[1])) for chunk in chunks]

    def _net_heights(self, poses: Poses, shape: tuple[int, int]) -> np.ndarray:
        """Box heights in the full pass's network pixels (infinite where no zoom applies)."""
        geometry = self._geometry(shape)
        return poses.boxes[:, 3] * (geometry[0] if geometry is not None else np.inf)

    def _small(self, poses: Poses, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and scores of the persons short enough in the full pass to want a window."""
        mask = self._net_heights(poses, shape) < self.small_height
        return poses.boxes[mask].astype(np.float64), poses.box_scores[mask].astype(np.float64)

    # -- where to look ---------------------------------------------------------------------------------
    def _stream_windows(self, state: _StreamState, frame_id: int) -> np.ndarray:
        """The windows of frame `frame_id`: around the small persons frames [id - lag - memory + 1,
        id - lag] showed and the hints of frame id - lag (a hint gets one look: a window that finds a
        person there keeps it), then the scan."""
        geometry = self._geometry(state.shape)
        if geometry is None:
            return np.zeros((0, 4))
        scale, _, slots, window_wh = geometry
        newest = frame_id - self.lag
        recent = [(b, s) if f == newest else (b[s >= self.threshold], s[s >= self.threshold])
                  for f, (b, s) in state.seen.items() if newest - self.memory < f <= newest]
        boxes = np.concatenate([b for b, _ in recent]) if recent else np.zeros((0, 4))
        scores = np.concatenate([s for _, s in recent]) if recent else np.zeros(0)
        per = len(slots)
        windows = cover(boxes, scores, window_wh, state.shape, per * self.max_mosaics)
        grid = scan_grid(state.shape, window_wh, overlap=0.25 * min(window_wh))
        if state.planned == 0:
            scan = len(grid)  # a stream's first frame: the whole grid
        elif len(windows):
            scan = -len(windows) % self.columns  # the free slots of the last row
        else:
            scan = self.columns if frame_id % self.scan_every == 0 else 0  # one row of a mosaic
        state.planned += 1
        picked = [grid[(state.scan_next + i) % len(grid)] for i in range(min(scan, len(grid)))]
        state.scan_next = (state.scan_next + len(picked)) % len(grid)
        return np.concatenate([windows, np.array(picked).reshape(-1, 4)])

    def _state(self, key: Hashable, shape: tuple[int, int]) -> _StreamState:
        state = self._streams.get(key)
        if state is None or state.shape != shape:  # new stream, or its camera changed resolution
            state = self._streams[key] = _StreamState(shape)
        return state

    # -- bringing the parts together ---------------------------------------------------------------------
    def _combine(self, full: Poses, found: list[Poses], placements: list[list[Placement]],
                 shape: tuple[int, int]) -> tuple[Poses, np.ndarray, np.ndarray]:
        """The frame's persons (full pass and whole window persons, from `detector.score_threshold`),
        and the boxes and scores of its small persons and hints. Window persons and hints that lie
        mostly inside a large person of the full pass are that person's parts seen close up: left out."""
        sure = full.select(full.box_scores >= self.threshold)
        large = sure.boxes[self._net_heights(sure, shape) >= self.small_height]
        parts, candidates = [sure], [full]
        for poses, placed in zip(found, placements):
            mapped, whole = from_mosaic(poses, placed, shape)
            parts.append(mapped.select(whole & (mapped.box_scores >= self.threshold)))
            candidates.append(mapped)
        parts = [parts[0]] + [p.select(~_part_of(p.boxes, large)) for p in parts[1:]]
        small = [self._small(c, shape) for c in candidates]
        boxes, scores = np.concatenate([b for b, _ in small]), np.concatenate([s for _, s in small])
        own = ~_part_of(boxes, large)
        return merge(parts, self.iou_threshold, self.max_persons), boxes[own], scores[own]

    def _record(self, key: Hashable, frame_id: int, shape: tuple[int, int], boxes: np.ndarray,
                scores: np.ndarray) -> None:
        self.frames += 1
        state = self._streams.get(key)
        if state is None or state.shape != shape:
            return  # the stream changed resolution since this frame was planned
        state.seen[frame_id] = (boxes, scores)
        for old in [f for f in state.seen if f <= frame_id - self.lag - self.memory]:
            del state.seen[old]

    # -- the Detector contract ---------------------------------------------------------------------------
    def detect(self, frames: Sequence[np.ndarray]) -> list[Poses]:
        """Frames without a stream: the full pass, then windows where it found small persons or hints."""
        fulls = self.inner.detect(frames)
        mosaics = []
        for frame, full in zip(frames, fulls):
            boxes, scores = self._small(full, frame.shape[:2])
            geometry = self._geometry(frame.shape[:2])
            windows = (cover(boxes, scores, geometry[3], frame.shape[:2], len(geometry[2]) * self.max_mosaics)
                       if geometry is not None else np.zeros((0, 4)))
            mosaics.append(self._mosaics(frame, windows))
        self.frames += len(frames)
        found = iter(self.inner.detect([image for ms in mosaics for image, _ in ms]))
        return [self._combine(full, [next(found) for _ in ms], [p for _, p in ms], frame.shape[:2])[0]
                for frame, full, ms in zip(frames, fulls, mosaics)]

    def detect_frames(self, frames: Sequence[np.ndarray], keys: Sequence[tuple[Hashable, int]]) -> list[Poses]:
        results: list[Poses] = []
        start = 0
        while start < len(frames):  # a frame whose windows depend on an earlier one runs after it
            end = start + 1
            while end < len(frames) and not any(stream == keys[end][0] and frame_id <= keys[end][1] - self.lag
                                                for stream, frame_id in keys[start:end]):
                end += 1
            results.extend(self._detect_chunk(frames[start:end], keys[start:end]))
            start = end
        return results

    def _detect_chunk(self, frames: Sequence[np.ndarray], keys: Sequence[tuple[Hashable, int]]) -> list[Poses]:
        plans = []
        for frame, (stream, frame_id) in zip(frames, keys):
            state = self._state(stream, frame.shape[:2])
            plans.append(self._mosaics(frame, self._stream_windows(state, frame_id)))
        images = list(frames) + [image for ms in plans for image, _ in ms]
        results = iter(self.inner.detect(images))
        fulls = [next(results) for _ in frames]
        out = []
        for frame, (stream, frame_id), full, ms in zip(frames, keys, fulls, plans):
            shape = frame.shape[:2]
            persons, boxes, scores = self._combine(full, [next(results) for _ in ms], [p for _, p in ms], shape)
            self._record(stream, frame_id, shape, boxes, scores)
            out.append(persons)
        return out

    def start_frame(self, frame: np.ndarray, key: tuple[Hashable, int]) -> object:
        stream, frame_id = key
        shape = frame.shape[:2]
        mosaics = self._mosaics(frame, self._stream_windows(self._state(stream, shape), frame_id))
        handles = [self.inner.start(frame)] + [self.inner.start(image) for image, _ in mosaics]
        return _Started(stream, frame_id, shape, [p for _, p in mosaics], handles)

    def finished(self, handle: object) -> bool:
        return not isinstance(handle, _Started) or all(self.inner.finished(h) for h in handle.handles)

    def finish(self, handle: object) -> Poses:
        if not isinstance(handle, _Started):
            return super().finish(handle)  # started by the contract's default `start`
        full, *found = [self.inner.finish(h) for h in handle.handles]
        persons, boxes, scores = self._combine(full, found, handle.placements, handle.shape)
        self._record(handle.key, handle.frame_id, handle.shape, boxes, scores)
        return persons

    def close(self) -> None:
        self.inner.close()
