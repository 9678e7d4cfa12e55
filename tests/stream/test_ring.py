"""The shared-memory frame ring: slot life cycle, live/offline policies, leases, cross-process reads."""
from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from posestream.stream.core.errors import InputError, StageError
from posestream.stream.ring import FrameRef, FrameRing, SlotState

CTX = multiprocessing.get_context("spawn")
A, B = 1, 2  # two consumer bits


def _frame(value: int, h: int = 6, w: int = 8) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


@pytest.fixture
def ring():
    with FrameRing.create(3, 6, 8, CTX.Condition()) as r:
        yield r


def _put(ring: FrameRing, frame_id: int, holders: int = A, live: bool = True) -> FrameRef:
    slot = ring.acquire(live, lambda: True)
    assert slot is not None
    shape = ring.write(slot, _frame(frame_id))
    ring.publish(slot, frame_id, shape, holders)
    return FrameRef(0, "s", frame_id, slot, shape, None, time.time(), ring.name)


def test_round_trip_in_place(ring: FrameRing) -> None:
    ref = _put(ring, 7)
    assert ring.take(ref)
    view = ring.view(ref)
    assert view.shape == (6, 8, 3) and (view == 7).all()
    assert not view.flags.writeable
    ring.release(ref, A)
    assert ring.states() == [SlotState.FREE] * 3
    assert ring.counters() == {"published": 1, "dropped": 0, "lost": 0}


def test_smaller_frame_fits_and_larger_is_refused(ring: FrameRing) -> None:
    slot = ring.acquire(False, lambda: True)
    assert ring.write(slot, _frame(1, 4, 5)) == (4, 5, 3)
    with pytest.raises(InputError, match="larger than the source.s announced 8x6"):
        ring.write(slot, _frame(1, 7, 8))


@pytest.mark.parametrize("slots, size, error", [
    (0, (6, 8), StageError), (-1, (6, 8), StageError), (2, (0, 8), InputError), (2, (6, -1), InputError),
])
def test_bad_geometry(slots: int, size: tuple[int, int], error: type) -> None:
    with pytest.raises(error):
        FrameRing.create(slots, size[0], size[1], CTX.Condition())


def test_live_reclaims_oldest_unpicked_frame(ring: FrameRing) -> None:
    refs = [_put(ring, i) for i in range(3)]
    newest = _put(ring, 3)           # no free slot: frame 0 (oldest READY) is dropped
    assert newest.slot == refs[0].slot
    assert ring.counters()["dropped"] == 1
    assert not ring.take(refs[0])    # stale reference: the detector skips it
    assert ring.take(refs[1]) and ring.take(refs[2]) and ring.take(newest)
    assert (ring.view(newest) == 3).all()


def test_newest_only_ring_hands_the_detector_the_latest_frame() -> None:
    with FrameRing.create(4, 6, 8, CTX.Condition(), newest_only=True) as ring:
        refs = [_put(ring, i) for i in range(3)]
        assert [ring.take(ref) for ref in refs] == [False, False, True]
        assert ring.counters()["dropped"] == 2
        assert ring.states().count(SlotState.FREE) == 3   # the skipped slots are free again


def test_live_never_blocks_when_everything_is_taken(ring: FrameRing) -> None:
    for i in range(3):
        assert ring.take(_put(ring, i))
    started = time.monotonic()
    assert ring.acquire(True, lambda: False) is None   # would wait forever if it blocked
    assert time.monotonic() - started < 1.0
    assert ring.counters()["dropped"] == 1


def test_offline_blocks_until_a_consumer_releases(ring: FrameRing) -> None:
    refs = [_put(ring, i, live=False) for i in range(3)]
    for ref in refs:
        assert ring.take(ref)
    releaser = threading.Timer(0.3, ring.release, args=(refs[0], A))
    releaser.start()
    started = time.monotonic()
    slot = ring.acquire(False, lambda: time.monotonic() - started > 5)
    waited = time.monotonic() - started
    releaser.join()
    assert slot == refs[0].slot
    assert 0.25 < waited < 2.0
    assert ring.counters()["dropped"] == 0


def test_offline_gives_up_only_when_told_to_stop(ring: FrameRing) -> None:
    for i in range(3):
        _put(ring, i, live=False)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert ring.acquire(False, stop.is_set, wait_s=0.05) is None


def test_slot_is_reused_only_after_every_holder_released(ring: FrameRing) -> None:
    ref = _put(ring, 0, holders=A | B)
    assert ring.take(ref)
    ring.release(ref, A)
    assert ring.states()[ref.slot] == SlotState.TAKEN
    ring.release(ref, B)
    assert ring.states()[ref.slot] == SlotState.FREE


def test_release_sweeps_older_frames_lost_by_a_crashed_stage(ring: FrameRing) -> None:
    lost, later = _put(ring, 3), _put(ring, 5)
    assert ring.take(lost) and ring.take(later)
    ring.release(later, A)   # frame 3 never arrives at this consumer: it went down with a crash
    assert ring.states()[lost.slot] == SlotState.FREE


def test_take_frees_older_ready_frames_whose_reference_was_lost(ring: FrameRing) -> None:
    orphan, ref = _put(ring, 1), _put(ring, 2)
    assert ring.take(ref)
    assert ring.states()[orphan.slot] == SlotState.FREE
    assert ring.counters()["lost"] == 1


def test_close_twice_and_unlink(ring: FrameRing) -> None:
    name = ring.name
    assert Path("/dev/shm", name.lstrip("/")).exists()
    ring.close()
    ring.close()
    assert not Path("/dev/shm", name.lstrip("/")).exists()
    with pytest.raises(StageError, match="is gone"):
        FrameRing.attach(name, CTX.Condition())


def _child_reads(name: str, cond, ref: FrameRef, out) -> None:
    with FrameRing.attach(name, cond) as ring:
        ok = ring.take(ref)
        view = ring.view(ref)
        out.send((ok, int(view.sum()), view.shape))
        del view
        ring.release(ref, A)


def test_another_process_reads_in_place_and_releases() -> None:
    cond = CTX.Condition()
    with FrameRing.create(2, 720, 1280, cond) as ring:
        image = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
        slot = ring.acquire(False, lambda: True)
        ring.publish(slot, 0, ring.write(slot, image), A)
        ref = FrameRef(0, "s", 0, slot, image.shape, 0.0, time.time(), ring.name)
        reader, writer = CTX.Pipe(duplex=False)
        child = CTX.Process(target=_child_reads, args=(ring.name, cond, ref, writer))
        child.start()
        assert reader.poll(60), "child did not answer"
        ok, total, shape = reader.recv()
        child.join(10)
        assert child.exitcode == 0
        assert ok and shape == (720, 1280, 3) and total == int(image.sum())
        assert ring.states()[slot] == SlotState.FREE
