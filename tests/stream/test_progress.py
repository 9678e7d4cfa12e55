"""The progress bar (percentage and ETA when the frame count is known) and the live status line,
drawn into an in-memory terminal."""
from __future__ import annotations

import io

import pytest

from posestream.stream.progress import ProgressBar, Snapshot, StatusLine, make_display


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _snap(elapsed_s: float, done: int) -> Snapshot:
    return Snapshot(elapsed_s, done, {"detect": 10.0}, 0, 80.0)


def _last_draw(out: io.StringIO) -> str:
    return out.getvalue().rsplit("\r", 1)[-1].removesuffix("\x1b[K")


# Model loading takes 10 s; the first frame is done at 12 s, then 10 frames/s.
@pytest.mark.parametrize("total, updates, expected, absent", [
    (72, [(10, 0)], ["0/72   0%", "0.0 fps", "00:10", "ETA --:--"], ["#"]),
    (72, [(10, 0), (12, 6), (15, 36)],
     ["[" + "#" * 15 + "-" * 15 + "]", "36/72  50%", "10.0 fps", "00:15", "ETA 00:04"], []),
    (72, [(12, 6), (18.6, 72)], ["[" + "#" * 30 + "]", "72/72 100%", "ETA 00:00"], []),
    # an estimated total (duration x rate) that the run passes: the bar stays full, not 103%
    (70, [(12, 6), (18.6, 72)], ["72/70 100%", "ETA 00:00"], ["103%"]),
    (None, [(12, 6), (15, 36)], ["36 frames", "10.0 fps", "00:15"], ["ETA", "%", "["]),
    (2000, [(12, 6), (15, 36)], ["36/2000   1%", "ETA 03:17"], []),
], ids=["before-first-frame", "halfway", "done", "estimate-passed", "unknown-total", "long-run"])
def test_progress_bar_shows_percentage_and_eta(total: int | None, updates: list[tuple[float, int]],
                                               expected: list[str], absent: list[str]) -> None:
    out = Terminal()
    bar = ProgressBar(total, out)
    for elapsed, done in updates:
        bar.update(_snap(elapsed, done))
    line = _last_draw(out)
    for text in expected:
        assert text in line, line
    for text in absent:
        assert text not in line, line


def test_progress_bar_is_silent_off_a_terminal_and_close_is_safe_twice() -> None:
    quiet = io.StringIO()
    bar = ProgressBar(10, quiet)
    bar.update(_snap(1, 5))
    bar.close()
    assert quiet.getvalue() == ""
    out = Terminal()
    bar = ProgressBar(10, out)
    bar.update(_snap(1, 5))
    bar.close()
    bar.close()
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1


def test_status_line_prints_lines_off_a_terminal() -> None:
    out = io.StringIO()
    line = StatusLine(out)
    line.update(Snapshot(61, 100, {"detect": 14.8, "pose": 14.5}, 3, 92.4))
    assert out.getvalue() == "01:01 detect 14.8 fps | pose 14.5 fps | dropped 3 | e2e 92 ms\n"


@pytest.mark.parametrize("live, total, kind", [(False, 72, ProgressBar), (False, None, ProgressBar),
                                               (True, None, StatusLine)])
def test_make_display_chooses_by_policy(live: bool, total: int | None, kind: type) -> None:
    display = make_display(live, total, io.StringIO())
    assert isinstance(display, kind) and display.live is live
    if kind is ProgressBar:
        assert display.total == total
