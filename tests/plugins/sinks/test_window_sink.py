"""WindowSink refuses clearly where it cannot show anything: the headless OpenCV posestream installs,
or a GUI build without a display."""
from __future__ import annotations

from importlib import metadata

import cv2
import pytest

import posestream.plugins.sinks.window as window
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import BackendUnavailableError, PosestreamError


def test_backend_is_read_from_opencv_build_information() -> None:
    line = next(l for l in cv2.getBuildInformation().splitlines() if l.strip().startswith("GUI:"))
    assert window.gui_backend() == line.split(":", 1)[1].strip()


@pytest.mark.skipif(window.gui_backend() != "NONE", reason="needs the headless OpenCV build")
def test_headless_opencv_is_one_clear_error() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        window.WindowSink(load_config(), "")
    message = str(info.value)
    assert "no GUI support" in message
    # the wheel's own version (5.0.0.93), which pip can install; cv2.__version__ (5.0.0) it cannot
    assert f"pip install opencv-python=={metadata.version('opencv-python-headless')}" in message
    assert "--sink video:out.mp4" in message
    assert isinstance(info.value, (PosestreamError, RuntimeError))


def test_gui_build_without_display_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(window, "gui_backend", lambda: "GTK3")  # as if the GUI wheel were installed
    monkeypatch.setattr(window.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(BackendUnavailableError, match="no display .neither DISPLAY nor WAYLAND_DISPLAY"):
        window.WindowSink(load_config(), "")
