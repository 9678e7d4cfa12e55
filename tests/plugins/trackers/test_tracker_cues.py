"""The tracker's cues as plain functions (frame gaps, camera motion, appearance), and what they do
inside OksByteTracker: stale tracks are not handed to new people after a jump, a shaking camera
keeps ids, two people who look different are told apart when one comes back."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.plugins.trackers import appearance, camera_motion
from posestream.plugins.trackers.frame_gap import RESTART, FrameClock
from posestream.stream.core.contracts import TrackFrame
from posestream.stream.core.keypoints import get_format
from posestream.stream.core.results import Poses

# -- frame gaps --------------------------------------------------------------------------------------


def test_clock_counts_frames_from_numbers_and_time() -> None:
    clock = FrameClock()
    assert clock.steps(None) == 1
    assert [clock.steps(TrackFrame(i, i / 25)) for i in range(5)] == [1, 1, 1, 1, 1]
    assert clock.steps(TrackFrame(9, 9 / 25)) == 5             # 4 frames dropped
    assert clock.steps(TrackFrame(10, 10 / 25 + 120.0)) == 3001  # numbered on, but 2 minutes later
    assert clock.steps(TrackFrame(11, 10 / 25 + 120.04)) == 1   # the gap did not skew the interval
    assert clock.steps(TrackFrame(11, 130.0)) == RESTART        # number did not advance
    assert clock.steps(TrackFrame(12, 1.0)) == RESTART          # clock went back


def test_clock_without_time_uses_frame_numbers() -> None:
    clock = FrameClock()
    assert [clock.steps(TrackFrame(i)) for i in (0, 1, 2, 50)] == [1, 1, 1, 48]


# -- camera motion -----------------------------------------------------------------------------------

def _texture(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """A smooth random texture with corners everywhere (blurred noise), BGR uint8."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 255, (height // 8, width // 8), dtype=np.uint8)
    grey = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def _shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    import cv2

    return cv2.warpAffine(image, np.array([[1.0, 0, dx], [0, 1.0, dy]]), image.shape[1::-1],
                          borderMode=cv2.BORDER_REFLECT)


def test_flow_finds_the_camera_shift_in_frame_pixels() -> None:
    frame = _texture()
    previous, factor = camera_motion.grey_small(frame)
    current, _ = camera_motion.grey_small(_shifted(frame, 12.0, -6.0))
    assert factor == pytest.approx(0.5)
    affine = camera_motion.rescale(camera_motion.estimate(previous, current), factor)
    np.testing.assert_allclose(affine[:, 2], [12.0, -6.0], atol=0.5)
    np.testing.assert_allclose(affine[:, :2], np.eye(2), atol=0.01)
    still = camera_motion.estimate(previous, previous.copy())
    assert camera_motion.is_still(still, max(previous.shape))
    assert not camera_motion.is_still(affine, 320)


def test_flow_on_a_flat_picture_is_the_identity() -> None:
    flat = np.full((240, 320), 128, dtype=np.uint8)
    np.testing.assert_array_equal(camera_motion.estimate(flat, flat), np.eye(2, 3))


def test_follower_rests_on_a_fixed_camera_and_catches_a_pan_whole() -> None:
    """Still for STILL_RUN checks in a row: then only every CHECK_EVERY-th frame is looked at, and
    a pan that starts in between comes back whole (all frames since the last look) at the next."""
    frame = _texture(360, 640, seed=1)
    follower = camera_motion.CameraFollower()
    none = np.zeros((0, 4))
    looked = [follower.motion(frame, none) for _ in range(1 + camera_motion.STILL_RUN)]
    assert all(m is None for m in looked)  # a reference frame, then still estimates
    results = []
    for t in range(2 * camera_motion.CHECK_EVERY):
        results.append(follower.motion(_shifted(frame, 4.0 * (t + 1), 0.0), none))  # panning 4 px/frame
    moved = [(t, m) for t, m in enumerate(results) if m is not None]
    first_t, first = moved[0]
    assert first_t == camera_motion.CHECK_EVERY - 1  # the first frame looked at after resting
    np.testing.assert_allclose(first[:, 2], [4.0 * camera_motion.CHECK_EVERY, 0.0], atol=0.5)
    assert all(m is not None for m in results[first_t:])  # moving: looked at every frame again
    np.testing.assert_allclose(results[-1][:, 2], [4.0, 0.0], atol=0.5)


def test_warp_moves_centres_and_velocities_and_scales_sizes() -> None:
    affine = np.array([[2.0, 0.0, 10.0], [0.0, 2.0, -5.0]])  # zoom 2x, then shift
    mean = np.array([[100.0, 50.0, 20.0, 40.0, 1.0, -1.0, 0.5, 0.0]])
    cov = np.eye(8)[None]
    moved, moved_cov = camera_motion.warp_state(mean, cov, affine)
    np.testing.assert_allclose(moved, [[210.0, 95.0, 40.0, 80.0, 2.0, -2.0, 1.0, 0.0]])
    np.testing.assert_allclose(np.diag(moved_cov[0]), [4.0] * 8)
    boxes = camera_motion.warp_boxes(np.array([[90.0, 30.0, 20.0, 40.0]]), affine)
    np.testing.assert_allclose(boxes, [[190.0, 55.0, 40.0, 80.0]])


# -- appearance --------------------------------------------------------------------------------------

FIGURE = np.array([  # COCO-17 keypoints as fractions of the person box
    (0.50, 0.08), (0.54, 0.06), (0.46, 0.06), (0.58, 0.07), (0.42, 0.07),
    (0.72, 0.20), (0.28, 0.20), (0.80, 0.36), (0.20, 0.36), (0.84, 0.50), (0.16, 0.50),
    (0.64, 0.52), (0.36, 0.52), (0.64, 0.73), (0.36, 0.73), (0.64, 0.95), (0.36, 0.95),
])
COCO = appearance.segments(get_format("coco17").names)


def _person(box: tuple[float, float, float, float], score: float = 0.9) -> np.ndarray:
    x, y, w, h = box
    return np.concatenate([FIGURE * [w, h] + [x, y], np.full((17, 1), score)], axis=1)


def _dressed(image: np.ndarray, box: tuple[int, int, int, int], shirt: tuple[int, int, int],
             trousers: tuple[int, int, int]) -> None:
    x, y, w, h = box
    image[y:y + h // 2, x:x + w] = shirt
    image[y + h // 2:y + h, x:x + w] = trousers


def test_colours_tell_two_people_apart_and_match_the_same_one() -> None:
    image = np.full((400, 600, 3), 90, dtype=np.uint8)
    _dressed(image, (50, 50, 120, 300), (0, 0, 200), (60, 40, 20))      # red shirt, dark blue trousers
    _dressed(image, (350, 50, 120, 300), (0, 200, 0), (200, 200, 200))  # green shirt, light trousers
    keypoints = np.stack([_person((50, 50, 120, 300)), _person((350, 50, 120, 300))])
    means, counts = appearance.describe(image, keypoints, COCO, 0.3)
    assert (counts > 0).all()
    same = appearance.similarity(means, counts, means, counts, sigma=12.0)
    np.testing.assert_allclose(np.diag(same), 1.0)
    assert same[0, 1] < 0.05 and same[1, 0] < 0.05


def test_unseen_parts_do_not_count() -> None:
    image = np.full((400, 600, 3), 90, dtype=np.uint8)
    hidden = _person((50, 50, 120, 300), score=0.0)  # no keypoint passes the score bar
    outside = _person((900, 50, 120, 300))           # entirely off the picture
    means, counts = appearance.describe(image, np.stack([hidden, outside]), COCO, 0.3)
    assert (counts == 0).all()
    assert np.isnan(appearance.similarity(means, counts, means, counts, 12.0)).all()
    assert appearance.describe(image, np.zeros((0, 17, 3)), COCO, 0.3)[0].shape == (0, 5, 3)


def test_blend_moves_seen_parts_and_adopts_new_ones() -> None:
    old = np.zeros((1, 5, 3), dtype=np.float32)
    old_counts = np.array([[10, 10, 0, 0, 0]])
    new = np.full((1, 5, 3), 10.0, dtype=np.float32)
    new_counts = np.array([[10, 0, 10, 0, 0]])
    means, counts = appearance.blend(old, old_counts, new, new_counts, momentum=0.9)
    np.testing.assert_allclose(means[0, :, 0], [1.0, 0.0, 10.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(counts, [[10, 10, 10, 0, 0]])


# -- inside the tracker ------------------------------------------------------------------------------

def test_a_jump_of_minutes_deletes_stale_tracks(tracker_factory, make_poses) -> None:
    """A camera that reconnects after two minutes (frame numbers go on, its clock jumped): the
    person standing where someone stood before is a new id, not the old one."""
    tracker, _ = tracker_factory()
    person = (300, 300, 200, "down", 0.9)
    before = [tracker.update(make_poses([person]), TrackFrame(i, i / 30)).ids[0] for i in range(5)]
    assert len(set(before)) == 1 and before[0] >= 0
    after = [tracker.update(make_poses([person]), TrackFrame(5 + i, 120.0 + i / 30)).ids[0]
             for i in range(4)]
    assert after[:2] == [-1, -1] and after[2] >= 0 and after[2] != before[0]
    # the same stream without the jump keeps the id
    tracker, _ = tracker_factory()
    ids = [tracker.update(make_poses([person]), TrackFrame(i, i / 30)).ids[0] for i in range(9)]
    assert len(set(ids)) == 1


def test_dropped_frames_age_tracks_but_keep_them_within_the_buffer(tracker_factory, make_poses) -> None:
    """Live mode dropped frames: the walker moved on meanwhile; a gap shorter than lost_buffer keeps
    the id (the prediction ran over the missing frames), one longer than it does not."""
    tracker, _ = tracker_factory(lost_buffer=10)
    walk = [(100 + 8 * i, 300, 200, "down", 0.9) for i in range(60)]
    first = tracker.update(make_poses([walk[0]]), TrackFrame(0)).ids[0]
    for i in range(1, 6):
        assert tracker.update(make_poses([walk[i]]), TrackFrame(i)).ids[0] == first
    assert tracker.update(make_poses([walk[14]]), TrackFrame(14)).ids[0] == first  # 8 dropped
    assert tracker.update(make_poses([walk[40]]), TrackFrame(40)).ids[0] == -1     # 25 dropped


def _shaky_scene(make_poses, frames: int = 16) -> list[tuple[Poses, np.ndarray]]:
    """Two people standing still, seen by a camera that shakes up to 60 px sideways every frame
    (boxes are 96 px wide): the picture and the poses move together."""
    texture = _texture(720, 1280, seed=3)
    shake = np.random.default_rng(0).uniform(-60, 60, frames)
    scene = []
    for t in range(frames):
        dx = float(shake[t])
        people = [(400 + dx, 360, 240, "down", 0.9), (800 + dx, 360, 240, "up", 0.9)]
        scene.append((make_poses(people), _shifted(texture, dx, 0.0)))
    return scene


@pytest.mark.parametrize("camera_motion, stable", [("flow", True), ("off", False)])
def test_shaking_camera_keeps_ids_with_flow(tracker_factory, make_poses, camera_motion, stable) -> None:
    tracker, _ = tracker_factory(camera_motion=camera_motion, appearance_weight=0.0)  # motion alone
    ids = set()
    for index, (poses, image) in enumerate(_shaky_scene(make_poses)):
        out = tracker.update(poses, TrackFrame(index, None, image, 1.0))
        ids.update(out.ids[out.ids >= 0].tolist())
    assert (len(ids) == 2) is stable


def test_appearance_reidentifies_the_right_person(tracker_factory, make_poses) -> None:
    """A man in red walks behind a pillar (unseen 6 frames) and comes out 60 px from where he went
    in, beside a stranger in green 80 px to the other side: neither box nor pose fits his last ones
    well enough (box IoU 0.23, OKS under reid_similarity), so by motion and pose alone both are new
    people; his colours give him his id back, and the stranger, whose colours do not fit, a new one."""
    def frame(people: list[tuple[float, tuple[int, int, int]]]) -> tuple[Poses, np.ndarray]:
        image = np.full((720, 1280, 3), 90, dtype=np.uint8)
        for cx, shirt in people:
            _dressed(image, (int(cx - 48), 240, 96, 240), shirt, (40, 40, 40))
        return make_poses([(cx, 360, 240, "down", 0.9) for cx, _ in people]), image

    red, green = (0, 0, 200), (0, 200, 0)
    scene = [frame([(500, red)]) for _ in range(5)] + [frame([]) for _ in range(6)]
    scene += [frame([(440, red), (580, green)]) for _ in range(3)]
    for weight in (0.5, 0.0):
        tracker, _ = tracker_factory(appearance_weight=weight, camera_motion="off")
        outs = [tracker.update(poses, TrackFrame(i, None, image, 1.0))
                for i, (poses, image) in enumerate(scene)]
        his_id = int(outs[0].ids[0])
        if weight:
            assert [int(out.ids[0]) for out in outs[-3:]] == [his_id] * 3
            assert outs[-1].ids[1] not in (-1, his_id)
        else:
            assert his_id not in outs[-1].ids
