"""The default tracker: OKS + IoU association, Kalman box motion, ByteTrack-style two passes.

Scores here are the detector's box scores (`Poses.box_scores`): the thresholds are ByteTrack's,
set for detector confidences, and what is matched is the box. The pose score means something else
per pose mode (one-stage: the best score of the poses that pose NMS merged, which can lift a weak
partial box; top-down: box score times mean keypoint score).

Per frame (`update`), after predicting every track one frame ahead:
1. high-score poses vs confirmed tracks, tracked (seen last frame) and lost alike, by
   `oks_weight * OKS + iou_weight * IoU` against the predicted box and the last pose moved onto it
   (ByteTrack's first pass pools them: a person hidden for a while reappears where the motion model
   put them);
2. low-score poses vs the tracked tracks still unmatched (ByteTrack's second pass: an occluded
   person's weak detection keeps its track alive instead of being thrown away);
3. re-identification: remaining high-score poses vs lost tracks still unmatched, by pose
   similarity alone (OKS with the last pose placed at the predicted box or where it was last seen,
   whichever fits better): a person who reappears away from the prediction;
4. remaining high-score poses vs tentative tracks;
5. poses still unmatched with score >= `new_track_score` start tentative tracks.

Cues beyond box and pose (each has its setting; see docs/tracking.md for what each measured):
- frame gaps (`frame_gap.FrameClock`): frames the tracker never saw (dropped in live mode) or a
  clock that jumped (a camera reconnecting after minutes) age every track by that many frames, so
  a stale track is deleted rather than handed to whoever appears next;
- camera motion (`camera_motion`, `tracker.camera_motion = "flow"`): the global affine between this
  frame and the last moves the predictions, last boxes and last poses;
- appearance (`appearance`, `tracker.appearance_weight` > 0; on by default): colours along the
  skeleton, kept per track, blended into the re-identification score of pass 3 (only raising it,
  only for candidates overlapping the lost track's predicted or last seen box).

Ids: a tentative track's poses are returned with id -1 and it is dropped on its first miss; after
`min_hits` consecutive hits it is confirmed and only then takes an id from the `IdAllocator`, so a
false positive neither shows an id nor burns one. The exception is the stream's first frame (the
first `update`): there is no history to confirm against, so (as ByteTrack does) a pose scoring at
least `first_frame_score` is confirmed at birth; that bar lies above the scores false positives
reach, and weaker first-frame poses start tentative tracks as on any other frame. A confirmed track
that misses becomes lost, is kept (and predicted) for `lost_buffer` frames for re-identification,
then deleted; its id is never handed out again. The returned `Poses` are the input poses, in input order, with `ids` filled.
"""
from __future__ import annotations

import copy
import logging

import numpy as np

from posestream.plugins.trackers import appearance, camera_motion
from posestream.plugins.trackers.frame_gap import FrameClock
from posestream.plugins.trackers.kalman import BoxKalman, xywh_to_cxcywh
from posestream.stream.core.contracts import IdAllocator, Tracker, TrackFrame
from posestream.stream.core.similarity import iou_matrix, oks_matrix
from posestream.stream.core.errors import InputError
from posestream.stream.core.keypoints import get_format
from posestream.stream.core.results import Poses
from posestream.stream.core.settings import Settings

log = logging.getLogger(__name__)

TENTATIVE, TRACKED, LOST = 0, 1, 2


class _Tracks:
    """All tracks of one stream as parallel arrays (one row per track), so prediction, similarity
    and correction run vectorised over tracks."""

    def __init__(self, num_keypoints: int) -> None:
        self.ids = np.zeros(0, dtype=np.int64)          # -1 while tentative
        self.state = np.zeros(0, dtype=np.int8)         # TENTATIVE | TRACKED | LOST
        self.hits = np.zeros(0, dtype=np.int64)         # consecutive matched frames
        self.misses = np.zeros(0, dtype=np.int64)       # frames since the last match
        self.mean = np.zeros((0, 8))                    # Kalman state (cx, cy, w, h, velocities)
        self.cov = np.zeros((0, 8, 8))
        self.keypoints = np.zeros((0, num_keypoints, 3))  # last matched pose
        self.last_boxes = np.zeros((0, 4))              # last matched box, x, y, w, h
        self.colours = np.zeros((0, len(appearance.PARTS), 3), dtype=np.float32)  # appearance per part
        self.colour_counts = np.zeros((0, len(appearance.PARTS)), dtype=np.int64)    # 0 = part unseen

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, kalman: BoxKalman, boxes: np.ndarray, keypoints: np.ndarray, colours: np.ndarray,
            colour_counts: np.ndarray) -> None:
        mean, cov = kalman.initiate(boxes)
        n = len(boxes)
        self.ids = np.concatenate([self.ids, np.full(n, -1, dtype=np.int64)])
        self.state = np.concatenate([self.state, np.full(n, TENTATIVE, dtype=np.int8)])
        self.hits = np.concatenate([self.hits, np.ones(n, dtype=np.int64)])
        self.misses = np.concatenate([self.misses, np.zeros(n, dtype=np.int64)])
        self.mean = np.concatenate([self.mean, mean])
        self.cov = np.concatenate([self.cov, cov])
        self.keypoints = np.concatenate([self.keypoints, keypoints])
        self.last_boxes = np.concatenate([self.last_boxes, boxes])
        self.colours = np.concatenate([self.colours, colours])
        self.colour_counts = np.concatenate([self.colour_counts, colour_counts])

    def keep(self, mask: np.ndarray) -> None:
        for name in ("ids", "state", "hits", "misses", "mean", "cov", "keypoints", "last_boxes",
                     "colours", "colour_counts"):
            setattr(self, name, getattr(self, name)[mask])

    def warp(self, affine: np.ndarray) -> None:
        """Everything positional seen from a camera that moved by `affine` (pose pixels)."""
        self.mean, self.cov = camera_motion.warp_state(self.mean, self.cov, affine)
        self.last_boxes = camera_motion.warp_boxes(self.last_boxes, affine)
        self.keypoints[..., :2] = camera_motion.warp_points(self.keypoints[..., :2], affine)


def _place(keypoints: np.ndarray, from_boxes: np.ndarray, to_boxes: np.ndarray) -> np.ndarray:
    """Move and scale poses from the boxes they were seen in onto other boxes (x, y, w, h)."""
    src = xywh_to_cxcywh(from_boxes)
    dst = xywh_to_cxcywh(to_boxes)
    ratio = dst[:, None, 2:] / np.maximum(src[:, None, 2:], 1.0)
    placed = keypoints.copy()
    placed[:, :, :2] = (keypoints[:, :, :2] - src[:, None, :2]) * ratio + dst[:, None, :2]
    return placed


class OksByteTracker(Tracker):
    """`OksByteTracker(settings, ids)`: one instance per stream; `update(poses, frame)` once per frame.
    The `[tracker]` bounds and the rules between its keys are checked by `TrackerSettings`."""

    def __init__(self, settings: Settings, ids: IdAllocator) -> None:
        s = settings.tracker
        self.high_score = s.high_score
        self.low_score = s.low_score
        self.new_track_score = s.new_track_score
        self.first_frame_score = s.first_frame_score
        self.match_similarity = s.match_similarity
        self.low_match_similarity = s.low_match_similarity
        self.reid_similarity = s.reid_similarity
        self.keypoint_score = s.keypoint_score
        weight_sum = s.oks_weight + s.iou_weight
        self.oks_weight = s.oks_weight / weight_sum
        self.iou_weight = s.iou_weight / weight_sum
        self.min_hits = s.min_hits
        self.lost_buffer = s.lost_buffer
        self.position_std = s.kalman_position_std
        self.velocity_std = s.kalman_velocity_std
        self.camera_motion = s.camera_motion
        self.appearance_weight = s.appearance_weight
        self.appearance_sigma = s.appearance_sigma
        self.appearance_momentum = s.appearance_momentum
        self._clock = FrameClock()
        self._camera = camera_motion.CameraFollower()
        self._ids = ids
        self._kalman = BoxKalman(self.position_std, self.velocity_std)
        self._tracks: _Tracks | None = None  # created on the first frame, sized to its format
        self._format: str | None = None
        self._sigmas = np.zeros(0)
        self._segments = appearance.segments(())
        self._first_frame = True
        # The matcher's scipy.optimize takes ~0.4 s to import, and the supervisor imports this class
        # only to ask `reads_pixels` while it plans the stages: it is imported with an instance, in
        # the track stage's own process, while the detector starts.
        from posestream.plugins.trackers.association import assign
        self._assign = assign

    @classmethod
    def reads_pixels(cls, settings: Settings) -> bool:
        """Pixels are read for camera motion and for appearance, and only then."""
        s = settings.tracker
        return s.camera_motion != "off" or s.appearance_weight > 0

    def _check_format(self, poses: Poses) -> _Tracks:
        if self._tracks is None:
            keypoint_format = get_format(poses.format)
            self._format = poses.format
            self._sigmas = keypoint_format.sigma_array
            self._segments = appearance.segments(keypoint_format.names)
            self._tracks = _Tracks(keypoint_format.num_keypoints)
        if poses.format != self._format:
            raise InputError(f"tracker: keypoint format changed from '{self._format}' to "
                             f"'{poses.format}' within one stream")
        if poses.keypoints.shape[1] != len(self._sigmas) and len(poses):
            raise InputError(f"tracker: poses have {poses.keypoints.shape[1]} keypoints, format "
                             f"'{self._format}' has {len(self._sigmas)}")
        return self._tracks

    def update(self, poses: Poses, frame: TrackFrame | None = None) -> Poses:
        """Assign track ids to this frame's poses (input order kept; -1 = no confirmed track)."""
        tracks = self._check_format(poses)
        steps = self._skip(tracks, self._clock.steps(frame))
        lost = tracks.state == LOST
        tracks.mean[lost, 6:] = 0.0  # a hidden person's size is held, not extrapolated
        for _ in range(steps):
            tracks.mean, tracks.cov = self._kalman.predict(tracks.mean, tracks.cov)
        image = frame.image if frame is not None else None
        if image is not None and self.camera_motion != "off":
            self._follow_camera(tracks, image, frame.scale, poses.boxes)
        colours, colour_counts = self._colours(poses, image, frame.scale if frame else 1.0)
        predicted_boxes = BoxKalman.boxes(tracks.mean)
        predicted_poses = _place(tracks.keypoints, tracks.last_boxes, predicted_boxes)

        boxes = poses.boxes.astype(np.float64)
        keypoints = poses.keypoints.astype(np.float64)
        free_tracks = np.ones(len(tracks), dtype=bool)
        free_poses = np.ones(len(poses), dtype=bool)
        pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (track rows, pose rows) per pass

        def match(pose_rows: np.ndarray, track_rows: np.ndarray, min_similarity: float,
                  reid: bool = False) -> None:
            pose_rows = pose_rows[free_poses[pose_rows]]
            track_rows = track_rows[free_tracks[track_rows]]
            if len(pose_rows) == 0 or len(track_rows) == 0:
                return
            oks = oks_matrix(keypoints[pose_rows], predicted_poses[track_rows], boxes[pose_rows],
                             predicted_boxes[track_rows], self._sigmas, self.keypoint_score)
            if reid:
                oks_seen = oks_matrix(keypoints[pose_rows], tracks.keypoints[track_rows],
                                      boxes[pose_rows], tracks.last_boxes[track_rows],
                                      self._sigmas, self.keypoint_score)
                similarity = np.maximum(oks, oks_seen)
            else:
                iou = iou_matrix(boxes[pose_rows], predicted_boxes[track_rows])
                similarity = self.oks_weight * oks + self.iou_weight * iou
            if reid and colours is not None:
                similarity = self._with_looks(tracks, track_rows, similarity, colours[pose_rows],
                                              colour_counts[pose_rows], boxes[pose_rows],
                                              predicted_boxes)
            rows, cols = self._assign(similarity, min_similarity)
            free_poses[pose_rows[rows]] = False
            free_tracks[track_rows[cols]] = False
            pairs.append((track_rows[cols], pose_rows[rows]))

        scores = poses.box_scores
        high = np.flatnonzero(scores >= self.high_score)
        low = np.flatnonzero((scores >= self.low_score) & (scores < self.high_score))
        tracked = np.flatnonzero(tracks.state == TRACKED)
        match(high, np.flatnonzero(tracks.state != TENTATIVE), self.match_similarity)
        match(low, tracked, self.low_match_similarity)
        match(high, np.flatnonzero(lost), self.reid_similarity, reid=True)
        match(high, np.flatnonzero(tracks.state == TENTATIVE), self.match_similarity)

        out_ids = np.full(len(poses), -1, dtype=np.int64)
        if pairs:
            track_rows = np.concatenate([t for t, _ in pairs])
            pose_rows = np.concatenate([p for _, p in pairs])
            self._correct(tracks, track_rows, boxes[pose_rows], keypoints[pose_rows])
            if colours is not None:
                tracks.colours[track_rows], tracks.colour_counts[track_rows] = appearance.blend(
                    tracks.colours[track_rows], tracks.colour_counts[track_rows],
                    colours[pose_rows], colour_counts[pose_rows], self.appearance_momentum)
            out_ids[pose_rows] = tracks.ids[track_rows]
        self._age_unmatched(tracks, free_tracks)

        new = np.flatnonzero(free_poses & (scores >= self.new_track_score))
        if len(new):
            first = len(tracks)
            parts = len(appearance.PARTS)
            tracks.add(self._kalman, boxes[new], keypoints[new],
                       colours[new] if colours is not None else np.zeros((len(new), parts, 3), np.float32),
                       colour_counts[new] if colours is not None else np.zeros((len(new), parts), np.int64))
            if self.min_hits <= 1:
                at_birth = np.ones(len(new), dtype=bool)
            elif self._first_frame:
                at_birth = scores[new] >= self.first_frame_score
            else:
                at_birth = np.zeros(len(new), dtype=bool)
            self._confirm(tracks, first + np.flatnonzero(at_birth))
            out_ids[new] = tracks.ids[first:]
        self._first_frame = False
        tracked_poses = copy.copy(poses)  # shares the (unchanged, validated) arrays
        tracked_poses.ids = out_ids
        return tracked_poses

    def _skip(self, tracks: _Tracks, steps: int) -> int:
        """Age every track by the frames skipped before this one (`steps` - 1) and delete those now
        past the lost buffer, tentative ones included; how many predictions the rest need."""
        if steps <= 1:
            return 1
        tracks.misses += steps - 1
        expired = tracks.misses > self.lost_buffer
        if expired.any():
            log.debug("frame gap of %d frames: %d track(s) deleted", steps - 1, int(expired.sum()))
            tracks.keep(~expired)
            self._camera.reset()  # the picture from before the gap says nothing now
        return min(steps, self.lost_buffer + 1)

    def _follow_camera(self, tracks: _Tracks, image: np.ndarray, scale: float,
                       boxes: np.ndarray) -> None:
        """Move the tracks by the camera's motion since the frame it was last measured on."""
        affine = self._camera.motion(image, boxes * scale)
        if affine is not None and len(tracks):
            tracks.warp(camera_motion.rescale(affine, scale))

    def _colours(self, poses: Poses, image: np.ndarray | None, scale: float
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The poses' appearance descriptors, when appearance is on and the pixels are here."""
        if image is None or self.appearance_weight <= 0:
            return None, None
        keypoints = poses.keypoints.astype(np.float64).copy()
        keypoints[..., :2] *= scale
        return appearance.describe(image, keypoints, self._segments, self.keypoint_score)

    def _with_looks(self, tracks: _Tracks, track_rows: np.ndarray, similarity: np.ndarray,
                    colours: np.ndarray, colour_counts: np.ndarray, boxes: np.ndarray,
                    predicted_boxes: np.ndarray) -> np.ndarray:
        """Re-identification scores with appearance blended in (`appearance_weight`), for the
        candidates whose box overlaps the lost track's predicted or last seen box; never below
        the pose score, and pairs that share no body part keep it."""
        looks = appearance.similarity(colours, colour_counts, tracks.colours[track_rows],
                                      tracks.colour_counts[track_rows], self.appearance_sigma)
        near = ((iou_matrix(boxes, predicted_boxes[track_rows]) > 0)
                | (iou_matrix(boxes, tracks.last_boxes[track_rows]) > 0))
        blended = (1.0 - self.appearance_weight) * similarity + self.appearance_weight * np.nan_to_num(looks)
        return np.where(np.isnan(looks) | ~near, similarity, np.maximum(similarity, blended))

    def _correct(self, tracks: _Tracks, rows: np.ndarray, boxes: np.ndarray,
                 keypoints: np.ndarray) -> None:
        tracks.mean[rows], tracks.cov[rows] = self._kalman.update(
            tracks.mean[rows], tracks.cov[rows], boxes)
        tracks.keypoints[rows] = keypoints
        tracks.last_boxes[rows] = boxes
        tracks.misses[rows] = 0
        tracks.hits[rows] += 1
        confirmed = tracks.state[rows] != TENTATIVE
        tracks.state[rows[confirmed]] = TRACKED
        ready = rows[~confirmed & (tracks.hits[rows] >= self.min_hits)]
        self._confirm(tracks, ready)

    def _confirm(self, tracks: _Tracks, rows: np.ndarray) -> None:
        for row in rows:
            tracks.ids[row] = self._ids.next()
            log.debug("track %d confirmed", tracks.ids[row])
        tracks.state[rows] = TRACKED

    def _age_unmatched(self, tracks: _Tracks, unmatched: np.ndarray) -> None:
        tracks.misses[unmatched] += 1
        tracks.hits[unmatched] = 0
        tracks.state[unmatched & (tracks.state == TRACKED)] = LOST
        expired = unmatched & (((tracks.state == LOST) & (tracks.misses > self.lost_buffer))
                               | (tracks.state == TENTATIVE))
        if expired.any():
            for track_id in tracks.ids[expired & (tracks.ids >= 0)]:
                log.debug("track %d deleted after %d lost frames", track_id, self.lost_buffer)
            tracks.keep(~expired)
