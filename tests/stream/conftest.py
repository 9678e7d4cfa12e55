"""Fixtures for source tests: a real GStreamer RTSP server serving a shared video, looping, and
an HTTP MJPEG camera (multipart/x-mixed-replace, what most IP cameras serve over HTTP).

`rtsp_server` is meant for reuse by pipeline-level tests: it yields an `RtspServer` with `url`,
`kill()`, `restart()`, `freeze()` and `thaw()`; the server process is always stopped afterwards.
"""
from __future__ import annotations

import http.server
import os
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Iterator

import cv2
import numpy as np
import pytest

from posestream.stream.core.config import shared_dir

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "rtsp_server.py"
SERVED_VIDEO = "data/video/two_person_interaction_72f.mp4"
READY_TIMEOUT_S = 20.0


def _rtsp_server_unavailable() -> str | None:
    """Why the RTSP server cannot run here, or None when it can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (the RTSP test server needs the system Python)"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
        capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        return (f"gst-rtsp-server is not importable from {SYSTEM_PYTHON} ({last}); install "
                "gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi (scripts/setup.sh)")
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RtspServer:
    """One `tests/rtsp_server.py` process on a fixed loopback port; `restart()` reuses the port so
    clients see the same URL come back."""

    def __init__(self, video: Path, port: int, path: str = "/live", fps: int = 10) -> None:
        self.video = video
        self.port = port
        self.path = path
        self.fps = fps
        self.url = f"rtsp://127.0.0.1:{port}{path}"
        self.process: subprocess.Popen[str] | None = None
        self.frozen = False
        self._stderr: IO[str] | None = None

    def start(self) -> None:
        """Start the server and wait for its READY line."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("RTSP test server already running")
        # stderr goes to a file: a pipe nobody reads could fill up and stall the server.
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(self.video), "--port", str(self.port),
             "--path", self.path, "--fps", str(self.fps)],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                if line.startswith("READY"):
                    return
            if self.process.poll() is not None:
                break
        error = self._stop_process()
        raise RuntimeError(f"RTSP test server did not start within {READY_TIMEOUT_S} s: {error}")

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-stream, as a crashed camera does."""
        self._stop_process()

    def restart(self) -> None:
        self._stop_process()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: sockets stay open but nothing is sent or answered, as a hung camera does."""
        if self.process is None:
            raise RuntimeError("RTSP test server is not running")
        os.kill(self.process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.process is not None and self.frozen:
            os.kill(self.process.pid, signal.SIGCONT)
        self.frozen = False

    def close(self) -> None:
        self._stop_process()

    def _stop_process(self) -> str:
        """Kill the process if alive and return what it wrote on stderr (for error messages)."""
        process, self.process = self.process, None
        stderr_file, self._stderr = self._stderr, None
        if process is None:
            return ""
        if process.poll() is None:
            process.kill()  # SIGKILL also ends a SIGSTOPped process
        self.frozen = False
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "server did not exit after SIGKILL"
        finally:
            process.stdout.close()
        stderr_file.seek(0)
        text = stderr_file.read().strip()[-2000:]
        stderr_file.close()
        return text


@pytest.fixture(scope="session")
def rtsp_available() -> None:
    reason = _rtsp_server_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def rtsp_server(rtsp_available: None) -> Iterator[RtspServer]:
    """A running RTSP server at `rtsp_server.url`, serving a shared video at 320x180, 10 fps."""
    video = shared_dir() / SERVED_VIDEO
    if not video.is_file():
        pytest.fail(f"shared video missing: {video}")
    server = RtspServer(video, free_port())
    try:
        server.start()
        yield server
    finally:
        server.close()


class MjpegServer:
    """An HTTP MJPEG camera on a loopback port, in a thread of the test process. Each connection
    gets `frames_per_connection` JPEGs of `images` in turn at `fps`, then the server ends the
    response, as cameras that drop clients do (0 = never)."""

    def __init__(self, images: list[np.ndarray], fps: float = 10.0,
                 frames_per_connection: int = 0) -> None:
        jpegs = [cv2.imencode(".jpg", image)[1].tobytes() for image in images]
        stopping = threading.Event()
        self.connections = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                """Quiet: the test output is for the tests."""

            def do_GET(self) -> None:  # noqa: N802 - http.server's method name
                server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                sent = 0
                try:
                    while not stopping.is_set():
                        jpeg = jpegs[sent % len(jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: %d\r\n\r\n%b\r\n" % (len(jpeg), jpeg))
                        self.wfile.flush()
                        sent += 1
                        if sent == frames_per_connection:
                            return
                        stopping.wait(1.0 / fps)
                except (BrokenPipeError, ConnectionResetError):
                    return

        self.jpegs = jpegs
        self._stopping = stopping
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/video.mjpg"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


@pytest.fixture
def mjpeg_server(request: pytest.FixtureRequest) -> Iterator[MjpegServer]:
    """An MJPEG camera alternating two COCO images at 320x240, 10 fps; parametrize indirectly with
    a dict of `MjpegServer` keyword arguments to change that."""
    images_dir = shared_dir() / "data" / "coco" / "images"
    names = ("000000000785.jpg", "000000000036.jpg")
    images = [cv2.imread(str(images_dir / name)) for name in names]
    if any(image is None for image in images):
        pytest.fail(f"shared images missing in {images_dir}")
    images = [cv2.resize(image, (320, 240)) for image in images]
    server = MjpegServer(images, **getattr(request, "param", {}))
    try:
        yield server
    finally:
        server.close()
