"""A real RTSP server for tests: serves a video file, looping, as H.264 over RTSP on loopback.

Run with the system Python that has python3-gi and gst-rtsp-server (not the project venv):

    /usr/bin/python3 tests/rtsp_server.py VIDEO --port 8554 --path /live

The file is decoded once, scaled down (CPU is scarce on test machines) and kept in memory; an
`appsrc` then pushes those frames round and round at a fixed rate into `x264enc ! rtph264pay`, so
the stream never ends (kill/restart tests need minutes, the shared clips last seconds). Prints
`READY <port>` on stdout once the socket listens; with `--port 0` the kernel picks the port.
"""
from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402


def decode_frames(path: str, width: int, height: int) -> tuple[list[bytes], str]:
    """Decode the whole file to I420 frames of the given size; returns (frames, caps string)."""
    caps = f"video/x-raw,format=I420,width={width},height={height},pixel-aspect-ratio=1/1"
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! decodebin ! videoconvert ! videoscale ! {caps} '
        "! appsink name=sink sync=false emit-signals=false max-buffers=0"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    frames: list[bytes] = []
    while True:
        sample = sink.try_pull_sample(10 * Gst.SECOND)
        if sample is None:
            break
        buffer = sample.get_buffer()
        ok, info = buffer.map(Gst.MapFlags.READ)
        if ok:
            frames.append(bytes(info.data))
            buffer.unmap(info)
    bus_error = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if bus_error is not None:
        err, _ = bus_error.parse_error()
        raise SystemExit(f"rtsp_server: cannot decode {path}: {err.message}")
    if not frames:
        raise SystemExit(f"rtsp_server: no video frames in {path}")
    return frames, caps


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """One shared media whose appsrc replays the decoded frames forever."""

    def __init__(self, frames: list[bytes], caps: str, fps: int, key_interval: int) -> None:
        super().__init__()
        self.frames = frames
        self.fps = fps
        self.duration = Gst.SECOND // fps
        self.count = 0
        self.launch = (
            f"( appsrc name=src is-live=true format=time block=false caps={caps},framerate={fps}/1 "
            f"! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast threads=1 "
            f"key-int-max={key_interval} bitrate=500 "
            "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
        self.set_shared(True)

    def do_create_element(self, url):  # noqa: N802 - GObject virtual method name
        return Gst.parse_launch(self.launch)

    def do_configure(self, media):  # noqa: N802 - GObject virtual method name
        source = media.get_element().get_child_by_name("src")
        source.connect("need-data", self.push_frame)

    def push_frame(self, source: GstApp.AppSrc, _length: int) -> None:
        data = self.frames[self.count % len(self.frames)]
        buffer = Gst.Buffer.new_wrapped(data)
        buffer.pts = self.count * self.duration
        buffer.duration = self.duration
        self.count += 1
        source.emit("push-buffer", buffer)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="video file to serve")
    parser.add_argument("--port", type=int, default=8554, help="TCP port; 0 = pick a free one")
    parser.add_argument("--path", default="/live", help="mount path, e.g. /live")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--width", type=int, default=320, help="served width (pixels, even)")
    parser.add_argument("--height", type=int, default=180, help="served height (pixels, even)")
    parser.add_argument("--fps", type=int, default=10, help="served frame rate")
    parser.add_argument("--key-interval", type=int, default=10, help="frames between key frames")
    args = parser.parse_args()

    Gst.init(None)
    frames, caps = decode_frames(args.video, args.width, args.height)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    factory = LoopingFactory(frames, caps, args.fps, args.key_interval)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {args.address}:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
