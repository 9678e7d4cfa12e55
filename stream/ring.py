"""Per-source frame ring in shared memory: pixels are written once and read in place by every stage.

Layout of one segment: a small int64 header (slot count, slot capacity, counters), a slot table
(state, frame id, holder mask, shape per slot) and then `slots` pixel areas of equal capacity.
Between processes only a `FrameRef` travels; it names the segment, the slot and the frame id, so a
reader can tell a stale reference (its slot was reclaimed for a newer frame) from a live one.

Slot life cycle (all transitions under the ring's lock, a `multiprocessing.Condition` from the
pipeline's explicit context):
    FREE --acquire--> WRITING --publish--> READY --take (detector)--> TAKEN --release by every holder--> FREE
A `live` producer that finds no FREE slot reclaims the oldest READY one (a frame nobody picked up
yet) and counts a drop; an `offline` producer waits instead. Each consumer stage owns one bit in
the holder mask; releasing frame F also clears that bit on older frames of the same stream, because
stages see a stream in order: an older frame still holding the bit was lost with a crashed process.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import IntEnum
from multiprocessing import shared_memory
from typing import Any, Callable

import numpy as np

from posestream.stream.core.errors import InputError, StageError
from posestream.stream.orphans import segment_name, sweep

log = logging.getLogger(__name__)

MAGIC = 0x504F5345_52494E47  # "POSERING"
_HEADER_WORDS = 10           # magic, slots, capacity, published, dropped, lost, max height, max width, newest-only, reserved
_SLOT_WORDS = 8              # state, frame_id, mask, height, width, channels, reserved x2
_ALIGN = 4096
LOCK_TIMEOUT_S = 5.0         # a lock held this long means its holder died inside the critical section

# Header word indices.
_H_MAGIC, _H_SLOTS, _H_CAPACITY, _H_PUBLISHED, _H_DROPPED, _H_LOST, _H_HEIGHT, _H_WIDTH, _H_NEWEST = range(9)
# Slot table column indices.
_S_STATE, _S_FRAME, _S_MASK, _S_H, _S_W, _S_C = range(6)


class SlotState(IntEnum):
    FREE = 0
    WRITING = 1
    READY = 2
    TAKEN = 3


# Plain ints for the hot paths (enum attribute look-ups cost more than the work they guard).
_FREE, _WRITING, _READY, _TAKEN = (int(s) for s in SlotState)


@dataclass(frozen=True)
class FrameRef:
    """The only thing sent between processes for pixels."""

    stream_id: int
    stream: str
    frame_id: int
    slot: int
    shape: tuple[int, int, int]
    pts: float | None
    capture_ts: float
    ring: str                    # shared-memory segment name
    image_id: str | None = None
    source_hw: tuple[int, int] | None = None  # (H, W) the source decoded, when the ring holds it smaller
    live: bool = False           # from a live source (capture_ts is its clock) rather than a file (pts)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the source's frame: what results are measured in."""
        height, width = self.source_hw or self.shape[:2]
        return width, height


def _round_up(value: int, step: int) -> int:
    return (value + step - 1) // step * step


class FrameRing:
    """One source's slots. `create()` in the owning process (which alone unlinks), `attach()` in the
    others; every instance is a context manager and `close()` is safe twice."""

    def __init__(self, shm: shared_memory.SharedMemory, cond: Any, owner: bool) -> None:
        self._shm = shm
        self._cond = cond
        self._owner = owner
        self._closed = False
        header = np.ndarray((_HEADER_WORDS,), dtype=np.int64, buffer=shm.buf)
        if int(header[_H_MAGIC]) != MAGIC:
            shm.close()
            raise StageError(f"shared memory segment {shm.name} is not a posestream frame ring")
        self.slots = int(header[_H_SLOTS])
        self.capacity = int(header[_H_CAPACITY])
        self.max_height = int(header[_H_HEIGHT])
        self.max_width = int(header[_H_WIDTH])
        self._header = header
        self._table = np.ndarray((self.slots, _SLOT_WORDS), dtype=np.int64, buffer=shm.buf,
                                 offset=_HEADER_WORDS * 8)
        self._data_offset = _round_up((_HEADER_WORDS + self.slots * _SLOT_WORDS) * 8, _ALIGN)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def create(cls, slots: int, height: int, width: int, cond: Any, channels: int = 3,
               newest_only: bool = False) -> "FrameRing":
        """A new segment with `slots` slots, each large enough for a `height`x`width`x`channels`
        uint8 frame. `cond` is a `multiprocessing.Condition` shared with every attached process.
        `newest_only` (live streams): `take` refuses a frame when a newer one is already waiting,
        so the detector always works on the latest picture instead of a queue of old ones."""
        if slots < 1:  # the layout needs a slot; the useful range is the config's (pipeline.ring_slots)
            raise StageError(f"a frame ring needs at least one slot, got {slots}")
        if height <= 0 or width <= 0:
            raise InputError(f"cannot size a frame ring for a {width}x{height} source")
        capacity = _round_up(height * width * channels, _ALIGN)
        data_offset = _round_up((_HEADER_WORDS + slots * _SLOT_WORDS) * 8, _ALIGN)
        size = data_offset + slots * capacity
        sweep()  # segments left by SIGKILLed runs
        shm = shared_memory.SharedMemory(create=True, size=size, name=segment_name())
        try:
            # Reserve the pages now: a full /dev/shm is then one clear error here instead of a
            # SIGBUS in whichever process first touches an unbacked page.
            os.posix_fallocate(shm._fd, 0, size)
        except OSError as exc:
            shm.close()
            shm.unlink()
            raise StageError(f"cannot reserve {size / 1e6:.0f} MB of shared memory for {slots} frames of "
                             f"{width}x{height} ({exc.strerror}); free space in /dev/shm or lower "
                             "pipeline.ring_slots") from None
        header = np.ndarray((_HEADER_WORDS,), dtype=np.int64, buffer=shm.buf)
        header[:] = 0
        header[_H_SLOTS] = slots
        header[_H_CAPACITY] = capacity
        header[_H_HEIGHT] = height
        header[_H_WIDTH] = width
        header[_H_NEWEST] = int(newest_only)
        np.ndarray((slots, _SLOT_WORDS), dtype=np.int64, buffer=shm.buf, offset=_HEADER_WORDS * 8)[:] = 0
        header[_H_MAGIC] = MAGIC
        del header
        log.debug("created frame ring %s: %d slots of %d bytes", shm.name, slots, capacity)
        return cls(shm, cond, owner=True)

    @classmethod
    def attach(cls, name: str, cond: Any) -> "FrameRing":
        """Open an existing segment by name (in a stage process)."""
        try:
            shm = shared_memory.SharedMemory(name=name)
        except FileNotFoundError:
            raise StageError(f"frame ring {name} is gone (the pipeline is shutting down)") from None
        return cls(shm, cond, owner=False)

    @property
    def name(self) -> str:
        return self._shm.name

    # -- locking --------------------------------------------------------------------------------
    def _lock(self) -> None:
        if not self._cond.acquire(timeout=LOCK_TIMEOUT_S):
            raise StageError(f"frame ring {self.name}: lock not released within {LOCK_TIMEOUT_S} s "
                             "(a process died while holding it)")

    # -- producer side --------------------------------------------------------------------------
    def acquire(self, live: bool, should_stop: Callable[[], bool], wait_s: float = 0.2) -> int | None:
        """A slot to write the next frame into, now in state WRITING.

        live: a FREE slot, else the oldest READY slot (its frame is dropped and counted), else None
        (every slot is held downstream: the caller drops the new frame). offline: waits for a FREE
        slot, returning None only when `should_stop()` says so."""
        while True:
            self._lock()
            try:
                slot = self._find(_FREE)
                if slot is None and live:
                    slot = self._oldest(_READY)
                    if slot is not None:
                        self._header[_H_DROPPED] += 1
                if slot is not None:
                    self._table[slot, _S_STATE] = _WRITING
                    return slot
                if live:
                    self._header[_H_DROPPED] += 1
                    return None
                self._cond.wait(wait_s)
            finally:
                self._cond.release()
            if should_stop():
                return None

    def write(self, slot: int, image: np.ndarray) -> tuple[int, int, int]:
        """Copy `image` (HxWxC uint8) into `slot`; returns its shape."""
        if image.dtype != np.uint8 or image.ndim != 3:
            raise InputError(f"frame must be HxWxC uint8, got {image.dtype} with shape {image.shape}")
        self.slot_array(slot, image.shape)[...] = image  # type: ignore[arg-type]
        return image.shape  # type: ignore[return-value]

    def slot_array(self, slot: int, shape: tuple[int, int, int]) -> np.ndarray:
        """A writable view of `slot` with `shape`, for producers that decode straight into it."""
        height, width, channels = shape
        if height > self.max_height or width > self.max_width or height * width * channels > self.capacity:
            raise InputError(f"a {width}x{height} frame is larger than the source's announced "
                             f"{self.max_width}x{self.max_height}")
        return self._pixels(slot, shape)

    def publish(self, slot: int, frame_id: int, shape: tuple[int, int, int], holders: int) -> None:
        """Make the frame in `slot` visible; `holders` is the mask of consumer bits that will release it."""
        self._lock()
        try:
            row = self._table[slot]
            row[_S_FRAME] = frame_id
            row[_S_MASK] = holders
            row[_S_H], row[_S_W], row[_S_C] = shape
            row[_S_STATE] = _READY
            self._header[_H_PUBLISHED] += 1
        finally:
            self._cond.release()

    def abandon(self, slot: int) -> None:
        """Give back a slot from `acquire` without publishing it."""
        self._lock()
        try:
            self._table[slot, _S_STATE] = _FREE
            self._cond.notify_all()
        finally:
            self._cond.release()

    # -- consumer side --------------------------------------------------------------------------
    def take(self, ref: FrameRef) -> bool:
        """Claim a READY frame for processing (the first consumer, the detector, calls this). False
        when the reference is stale (a live producer reclaimed the slot for a newer frame) or, in a
        `newest_only` ring, when a newer frame is waiting: this one is then dropped and counted."""
        self._lock()
        try:
            table = self._table
            if table[ref.slot, _S_STATE] != _READY or table[ref.slot, _S_FRAME] != ref.frame_id:
                return False
            if self._header[_H_NEWEST] and ((table[:, _S_STATE] == _READY)
                                            & (table[:, _S_FRAME] > ref.frame_id)).any():
                table[ref.slot, _S_STATE] = _FREE
                self._header[_H_DROPPED] += 1
                self._cond.notify_all()
                return False
            table[ref.slot, _S_STATE] = _TAKEN
            # Older READY frames of this stream whose references never arrived were lost in flight.
            orphans = (table[:, _S_STATE] == _READY) & (table[:, _S_FRAME] < ref.frame_id)
            if orphans.any():
                table[orphans, _S_STATE] = _FREE
                self._header[_H_LOST] += int(orphans.sum())
                self._cond.notify_all()
            return True
        finally:
            self._cond.release()

    def view(self, ref: FrameRef) -> np.ndarray:
        """The frame's pixels, read-only and in place (valid until this consumer releases it)."""
        array = self._pixels(ref.slot, ref.shape)
        array.flags.writeable = False
        return array

    def release(self, ref: FrameRef, bit: int) -> None:
        """This consumer (`bit`) is done with `ref` and with any older frame it still held."""
        self._lock()
        try:
            table = self._table
            held = ((table[:, _S_STATE] == _TAKEN) & (table[:, _S_MASK] & bit != 0)
                    & (table[:, _S_FRAME] <= ref.frame_id))
            table[held, _S_MASK] &= ~bit
            freed = held & (table[:, _S_MASK] == 0)
            if freed.any():
                table[freed, _S_STATE] = _FREE
                self._cond.notify_all()
        finally:
            self._cond.release()

    # -- state ------------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Frames published, dropped by the live policy, and lost in flight (crashed stage)."""
        return {"published": int(self._header[_H_PUBLISHED]), "dropped": int(self._header[_H_DROPPED]),
                "lost": int(self._header[_H_LOST])}

    def states(self) -> list[SlotState]:
        return [SlotState(int(s)) for s in self._table[:, _S_STATE]]

    def _find(self, state: int) -> int | None:
        hits = np.flatnonzero(self._table[:, _S_STATE] == state)
        return int(hits[0]) if len(hits) else None

    def _oldest(self, state: int) -> int | None:
        hits = np.flatnonzero(self._table[:, _S_STATE] == state)
        if not len(hits):
            return None
        return int(hits[np.argmin(self._table[hits, _S_FRAME])])

    def _pixels(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        if not 0 <= slot < self.slots:
            raise StageError(f"frame ring {self.name}: slot {slot} out of range 0..{self.slots - 1}")
        offset = self._data_offset + slot * self.capacity
        return np.ndarray(shape, dtype=np.uint8, buffer=self._shm.buf, offset=offset)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Detach; the owner also unlinks the segment. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        # numpy views keep the buffer exported; drop ours so SharedMemory.close() can unmap.
        del self._header, self._table
        try:
            self._shm.close()
        except BufferError:
            log.debug("frame ring %s still has views open; unmapped at exit", self.name)
        if self._owner:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "FrameRing":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:  # backstop only
        if not getattr(self, "_closed", True):
            self.close()

