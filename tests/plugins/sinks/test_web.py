"""Web viewer without a browser: settings, the page server's guards, the sink -> server feed (pictures
only while watched, at the capped rate) and newest-wins for a stalled viewer. Real sockets, real
COCO images and keypoints; the browser tests are in test_web_browser.py."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import time
import urllib.error
import urllib.request
from typing import Any, AsyncIterator

import aiohttp
import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from posestream.benchmarks.processes import interrupt
from posestream.plugins.sinks.web.host import WebHost
from posestream.plugins.sinks.web.settings import parse_target, warn_if_exposed, web_settings
from posestream.plugins.sinks.web.sink import WebSink
from posestream.stream.core.config import load_config
from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import ConfigError
from coco_frames import video_results


def web_config(**web: Any) -> Settings:
    return load_config().with_overrides({"web": {"port": 0, **web}})


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("target, expected", [
    ("127.0.0.1:9000", {"host": "127.0.0.1", "port": 9000}),
    ("[::1]:9000", {"host": "::1", "port": 9000}),
    ("0.0.0.0", {"host": "0.0.0.0"}),
    (":9001", {"port": 9001}),
    ("::1", {"host": "::1"}),
    ("localhost:x", ConfigError),
])
def test_parse_target(target: str, expected: Any) -> None:
    if expected is ConfigError:
        with pytest.raises(ConfigError, match="port must be a number"):
            parse_target(target)
    else:
        assert parse_target(target) == expected


@pytest.mark.parametrize("key, value", [("max_fps", 0.0), ("jpeg_quality", 0), ("port", 70000),
                                        ("max_width", 10)])
def test_settings_out_of_range_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"web.{key}"):
        web_settings(web_config(**{key: value}))


def test_exposed_without_token_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        warn_if_exposed(web_settings(web_config(), "0.0.0.0:0"))
        warn_if_exposed(web_settings(web_config(token="s3cret"), "0.0.0.0:0"))
        warn_if_exposed(web_settings(web_config(), "127.0.0.1:0"))
    warnings = [r.message for r in caplog.records if "without a token" in r.message]
    assert len(warnings) == 1 and "0.0.0.0" in warnings[0]


def test_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            WebHost(web_config(), f"127.0.0.1:{port}")


def test_other_origins_and_hosts_are_refused() -> None:
    with WebHost(web_config(), "127.0.0.1:0") as host:
        assert get(host.url)[0] == 200
        assert "posestreamStats" in get(host.url)[1]
        port = host.url.rstrip("/").rsplit(":", 1)[1]
        assert get(host.url, {"Origin": f"http://127.0.0.1:{port}"})[0] == 200
        status, text = get(host.url, {"Origin": "http://evil.example"})
        assert status == 403 and "origin" in text
        # DNS rebinding: a foreign name that resolves to 127.0.0.1 arrives with its own Host
        status, text = get(host.url, {"Host": f"evil.example:{port}"})
        assert status == 403 and "loopback" in text
        assert get(host.url + "ws", {"Origin": "http://evil.example", "Upgrade": "websocket",
                                     "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})[0] == 403
        # before the pipeline runs there is no stage to be healthy
        status, text = get(host.url + "healthz")
        assert status == 503 and "starting" in text


def test_token_by_header_or_query() -> None:
    with WebHost(web_config(token="s3cret"), "127.0.0.1:0") as host:
        for path in ("", "metrics", "ws"):
            assert get(host.url + path)[0] == 403
        assert get(host.url + "?token=wrong")[0] == 403
        assert get(host.url + "?token=s3cret")[0] == 200
        assert get(host.url + "metrics", {"Authorization": "Bearer s3cret"})[0] == 200


@contextlib.asynccontextmanager
async def _watch(url: str, stream: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A viewer of `stream`, as the page is: a WebSocket that asks for that stream."""
    async with aiohttp.ClientSession() as session, session.ws_connect(url + "ws") as ws:
        await ws.send_json({"watch": [stream]})
        yield ws


def _frame_from(data: bytes) -> tuple[dict[str, Any], np.ndarray | None]:
    length = struct.unpack(">I", data[:4])[0]
    header = json.loads(data[4:4 + length])
    jpeg = data[4 + length:]
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) if jpeg else None
    return header, image


def test_pictures_only_while_watched_at_the_capped_rate() -> None:
    config = web_config(max_fps=5.0)
    frames = video_results(400)
    with WebHost(config, "127.0.0.1:0") as host, WebSink(config, host.sink_target, streams=["cam0"]) as sink:
        for result, pixels in frames[:40]:  # nobody watches: keypoints flow, nothing is encoded
            sink.write(result, pixels)
            time.sleep(0.005)
        assert sink.encoded == 0 and sink.sent == 40

        async def watch() -> list[tuple[dict[str, Any], np.ndarray | None]]:
            got = []
            async with _watch(host.url, "cam0") as ws:
                index = 40
                deadline = time.monotonic() + 60
                while sink.encoded == 0 and time.monotonic() < deadline:  # subscription on its way
                    sink.write(*frames[index % len(frames)])
                    index += 1
                    await asyncio.sleep(0.01)
                assert sink.encoded > 0, "the viewer's subscription never reached the sink"
                before, start = sink.encoded, time.monotonic()
                while time.monotonic() - start < 2.0:  # ~100 frames/s offered for 2 s
                    sink.write(*frames[index % len(frames)])
                    index += 1
                    await asyncio.sleep(0.01)
                elapsed = time.monotonic() - start
                assert sink.encoded - before <= 5.0 * elapsed + 2
                while len(got) < 3:  # keypoint-only items may come first, then pictures
                    msg = await asyncio.wait_for(ws.receive(), 30)
                    if msg.type == aiohttp.WSMsgType.BINARY and _frame_from(msg.data)[1] is not None:
                        got.append(_frame_from(msg.data))
            return got

        got = asyncio.run(watch())
        for header, image in got:
            assert header["stream"] == "cam0" and header["message"]["persons"]
            assert image is not None and image.shape == (480, 640, 3)
        metrics = {m.name: m for m in text_string_to_metric_families(get(host.url + "metrics")[1])}
        out = [s.value for s in metrics["posestream_stream_frames_out"].samples
               if s.name.endswith("_total") and s.labels == {"stream": "cam0"}]
        assert out and out[0] >= 40
        assert any(s.value >= 40 for s in metrics["posestream_end_to_end_latency_seconds"].samples
                   if s.name.endswith("_count"))


def _stalled_viewer(url: str, stream: str) -> socket.socket:
    """A WebSocket client that subscribes and then never reads: its TCP window closes."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert b" 101 " in sock.recv(1024)
    payload = json.dumps({"watch": [stream]}).encode()
    mask = os.urandom(4)
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
                 bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


def test_stalled_viewer_loses_frames_and_blocks_nobody() -> None:
    config = web_config(max_fps=30.0, max_width=1920, jpeg_quality=95)
    results = video_results(12, size=(1920, 1080))
    with WebHost(config, "127.0.0.1:0") as host, WebSink(config, host.sink_target, streams=["cam0"]) as sink:
        stalled = _stalled_viewer(host.url, "cam0")

        async def run() -> tuple[list[int], int, float, int]:
            seen: list[int] = []
            received, slowest = 0, 0.0
            async with _watch(host.url, "cam0") as ws:
                for i in range(150):  # 5 s of 1080p at 30 fps; each picture some 100s of kB
                    result, pixels = results[i % len(results)]
                    result.frame = i
                    start = time.monotonic()
                    sink.write(result, pixels)
                    slowest = max(slowest, time.monotonic() - start)
                    while True:  # read what has arrived, without waiting
                        try:
                            msg = await asyncio.wait_for(ws.receive(), 0.001)
                        except asyncio.TimeoutError:
                            break
                        if msg.type == aiohttp.WSMsgType.BINARY:
                            seen.append(_frame_from(msg.data)[0]["message"]["frame"])
                            received += len(msg.data)
                    await asyncio.sleep(1 / 30)
                deadline = time.monotonic() + 30
                while (not seen or seen[-1] < 140) and time.monotonic() < deadline:
                    msg = await asyncio.wait_for(ws.receive(), 30)
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        seen.append(_frame_from(msg.data)[0]["message"]["frame"])
                        received += len(msg.data)
            return seen, received, slowest, sink.encoded

        seen, healthy_bytes, slowest, encoded = asyncio.run(run())
        stalled_bytes = 0
        stalled.settimeout(2.0)
        with contextlib.suppress(OSError):  # now read what the stalled viewer was left with
            while chunk := stalled.recv(1 << 20):
                stalled_bytes += len(chunk)
        stalled.close()
        assert encoded > 30
        assert seen and seen[-1] >= 140, f"the healthy viewer fell behind: last frame {seen[-1:]}"
        # a write that waited for the stalled viewer would wait until it is closed, after this loop;
        # the bound only allows for JPEG encoding on a loaded machine
        assert slowest < 5.0, f"a sink write took {slowest:.3f} s"
        # nothing queued up for the stalled viewer: it got a few buffered frames, not the run's
        assert stalled_bytes < healthy_bytes / 2, (stalled_bytes, healthy_bytes)


def test_viewer_of_a_zmq_stream_draws_keypoints_without_pictures(tmp_path) -> None:
    """The reusable part: the same page fed by a ZMQ subscription (as a fleet would serve it)."""
    import threading

    from posestream.plugins.sinks.web.server import serve
    from posestream.plugins.sinks.web.subscription import zmq_items
    from posestream.plugins.sinks.zmq_sink import ZmqSink

    config = web_config()
    endpoint = f"ipc://{tmp_path}/poses.sock"
    urls: list[str] = []
    loop = asyncio.new_event_loop()
    server = loop.create_task(serve(zmq_items(endpoint), web_settings(config, "127.0.0.1:0"),
                                    started=urls.append))

    def run_server() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(server)
        loop.close()

    thread = threading.Thread(target=run_server, daemon=True)
    thread.start()
    try:
        with ZmqSink(config, endpoint) as publisher:
            deadline = time.monotonic() + 30
            while not urls and time.monotonic() < deadline:
                time.sleep(0.05)

            async def watch() -> dict[str, Any]:
                async with _watch(urls[0], "cam7") as ws:
                    for i in range(3000):
                        result, _ = video_results(1, stream="cam7")[0]
                        result.frame = i
                        publisher.write(result)
                        try:
                            msg = await asyncio.wait_for(ws.receive(), 0.02)
                        except asyncio.TimeoutError:
                            continue
                        if msg.type == aiohttp.WSMsgType.BINARY:
                            return _frame_from(msg.data)[0]
                raise AssertionError("no frame reached the viewer")

            header = asyncio.run(watch())
        assert header["stream"] == "cam7" and header["message"]["persons"]
        assert header["stats"]["frames"] >= 1
    finally:
        loop.call_soon_threadsafe(server.cancel)
        thread.join(30)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_healthz_names_a_live_source_that_stopped_delivering(prepared_home, tmp_path) -> None:
    """A real live source that delivers a frame only every 20 s: /healthz turns 503 and says so."""
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "posestream", "run", "--live", "--source",
         # realtime's default limit (2 s) treats longer gaps as discontinuities and does not wait
         "lavfi:testsrc=size=320x240:rate=0.05,realtime=limit=60", "--set", "web.health_stale_s=2.0",
         "--sink", f"web:127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "POSESTREAM_HOME": str(prepared_home)})
    try:
        reasons = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, text = get(url + "healthz")
            except OSError:  # not listening yet
                status, text = 0, ""
            reasons.append((status, text.strip()))
            if status == 503 and "no frame for" in text:
                break
            time.sleep(0.5)
        assert status == 503 and text.startswith("stream lavfi: no frame for"), reasons[-5:]
    finally:
        interrupt(process, 120)
        log.close()


def test_dropped_counts_missing_frame_numbers_even_out_of_order() -> None:
    """A picture is encoded off the stage's thread, so it may arrive after the next frame's
    keypoints: only numbers that never arrive count as dropped."""
    from prometheus_client import CollectorRegistry

    from posestream.plugins.sinks.web.server import Hub

    hub = Hub(10.0, CollectorRegistry())
    for frame in (0, 1, 3, 2, 5, 7, 6):
        hub.publish("cam0", None, {"frame": frame, "persons": [], "capture_ts": 1.0, "publish_ts": 1.1})
    stats = hub.status()["streams"]["cam0"]
    assert stats["dropped"] == 1 and stats["frames"] == 7 and stats["latency_ms"] == 100.0
