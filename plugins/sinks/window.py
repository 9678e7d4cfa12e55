"""Window sink: shows annotated frames on screen, one window per stream, via OpenCV's HighGUI.

posestream depends on opencv-python-headless (servers and containers have no display, and the GUI
build drags in Qt/X11 libraries), so this sink is only usable after swapping in the GUI build. It
says so when created, instead of failing on the first frame deep inside the pipeline.
"""
from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from types import TracebackType
from typing import Sequence

import cv2
import numpy as np

from posestream.plugins.sinks.render_settings import Renderer
from posestream.stream.core.contracts import Sink
from posestream.stream.core.settings import Settings
from posestream.plugins.sinks.output_paths import check_render_write
from posestream.stream.core.errors import BackendUnavailableError
from posestream.stream.core.results import FrameResult


def _gui_install_command() -> str:
    """The pip command that swaps the headless wheel for the GUI one of the same release (the wheel's
    version, e.g. 5.0.0.93, not cv2.__version__, which drops the build number)."""
    try:
        pin = "==" + metadata.version("opencv-python-headless")
    except metadata.PackageNotFoundError:
        pin = ""
    return f"pip uninstall -y opencv-python-headless && pip install opencv-python{pin}"


def gui_backend() -> str:
    """The HighGUI backend OpenCV was built with, as its build information names it (e.g. GTK3, QT5,
    WIN32UI, COCOA); "NONE" for the headless wheels."""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return match.group(1) if match else "NONE"


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowSink(Sink):
    """`WindowSink(settings, target, streams)`: `target` is the window title ("" = sinks.window_name)."""

    needs_pixels = True

    def __init__(self, settings: Settings, target: str = "", streams: Sequence[str] = ()) -> None:
        backend = gui_backend()
        if backend.upper() == "NONE":
            raise BackendUnavailableError(
                f"window sink: this OpenCV ({cv2.__version__}) has no GUI support (it is the headless "
                f"build posestream installs); to show windows run: {_gui_install_command()} - or "
                "write a video instead with --sink video:out.mp4")
        if not _has_display():
            raise BackendUnavailableError(
                "window sink: no display (neither DISPLAY nor WAYLAND_DISPLAY is set); run on a "
                "desktop session or with ssh -X, or write a video instead with --sink video:out.mp4")
        self.title = target or settings.sinks.window_name
        self._render = Renderer(settings.sinks)
        self._windows: dict[str, str] = {}
        self._closed = False

    def write(self, result: FrameResult, frame: np.ndarray | None) -> None:
        check_render_write(f"window sink '{self.title}'", self._closed, result, frame)
        name = self._windows.get(result.stream)
        if name is None:
            name = f"{self.title} - {result.stream}"
            try:
                # resizable (frames may exceed the screen), without the Qt build's toolbar
                cv2.namedWindow(name, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
                cv2.resizeWindow(name, frame.shape[1], frame.shape[0])
            except cv2.error as exc:
                raise BackendUnavailableError(f"window sink: OpenCV's {gui_backend()} GUI cannot open a "
                                              f"window: {exc}") from None
            self._windows[result.stream] = name
        cv2.imshow(name, self._render(result, frame))
        cv2.waitKey(1)  # lets HighGUI paint; without it the window stays blank

    def end_stream(self, stream: str, last_frame: int | None) -> None:
        """Nothing to do: the stream's window keeps showing its last frame until `close`."""

    def close(self) -> None:
        """Close this sink's windows; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for name in self._windows.values():
            cv2.destroyWindow(name)
        if self._windows:
            cv2.waitKey(1)

    def __enter__(self) -> "WindowSink":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

