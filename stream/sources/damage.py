"""Damaged input, accounted: what interrupted decoding, and how many frames never came out.

Sources skip what does not decode and go on; these helpers make that loss visible. `note()` counts
an error by its message in `SourceStats.errors` (logging each kind once, so a damaged file makes one
warning per kind of damage, not one per packet), and `summary()` turns a finished source's counters
into the line the log and the run summary show: frames read against what the container (or the
folder) announced, and the errors behind the difference. `--strict` fails a run when `damaged()`.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from posestream.stream.sources.base import SourceStats

MAX_KINDS = 20  # distinct error messages kept per source; more are counted under one key
OTHER = "other errors"


def note(stats: SourceStats, message: str, log: logging.Logger, what: str) -> None:
    """Count one error of `stats`'s source; the first of each kind is logged as a warning."""
    key = message if message in stats.errors or len(stats.errors) < MAX_KINDS else OTHER
    stats.errors[key] = stats.errors.get(key, 0) + 1
    level = logging.WARNING if stats.errors[key] == 1 else logging.DEBUG
    log.log(level, "%s: %s (skipped; later ones of this kind are counted, not logged)", what, message)


def frames_lost(stats: Mapping[str, Any]) -> int:
    """Frames announced but not read. An estimated count (duration x rate) can be several frames
    high on a healthy file (a remuxed 72-frame clip says 77), so a shortfall within 10% (at least
    2 frames) of an estimate is not a loss;
    without any count, each undecodable packet is taken as one lost frame."""
    expected = stats.get("frames_expected")
    if expected is None:
        return int(stats.get("decode_errors", 0))
    short = max(0, int(expected) - int(stats.get("frames_read", 0)))
    if stats.get("expected_is_estimate") and short <= max(2, round(0.1 * int(expected))):
        return 0
    return short


def damaged(stats: Mapping[str, Any]) -> bool:
    """True when the input lost frames or reported errors (what `--strict` refuses)."""
    return bool(frames_lost(stats) or stats.get("decode_errors") or stats.get("errors")
                or stats.get("ended_by"))


def summary(what: str, stats: Mapping[str, Any]) -> str | None:
    """One line on a damaged input, e.g. `video file x.mp4: read 66 of 72 frames (6 lost);
    errors: Invalid data found when processing input (6x)`; None when nothing was lost."""
    if not damaged(stats):
        return None
    expected = stats.get("frames_expected")
    read = int(stats.get("frames_read", 0))
    lost = frames_lost(stats)
    if expected is None:
        counted = f"read {read} frames, {lost} lost"
    else:
        about = "about " if stats.get("expected_is_estimate") else ""
        counted = f"read {read} of {about}{expected} frames ({lost} lost)"
    parts = [f"{what}: {counted}"]
    errors = stats.get("errors") or {}
    if errors:
        parts.append("errors: " + "; ".join(f"{message} ({n}x)" for message, n in errors.items()))
    if stats.get("ended_by"):
        parts.append(f"reading ended early: {stats['ended_by']}")
    return "; ".join(parts)
