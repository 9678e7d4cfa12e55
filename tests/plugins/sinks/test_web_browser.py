"""The web viewer in a real browser: Debian's headless Chromium driven by playwright, against
`posestream run --live --sink web` on two looping real video streams.

Waits are generous (a loaded 2-core machine runs the detector at a few frames per second) and every
wait is bounded. Set POSESTREAM_WEB_SCREENSHOT=PATH to keep the screenshot (docs/web-viewer.png was
made this way).
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from coco_frames import video_results
from prometheus_client.parser import text_string_to_metric_families

from posestream.benchmarks.processes import interrupt
from posestream.plugins.sinks.web.host import WebHost
from posestream.plugins.sinks.web.sink import WebSink
from posestream.stream.core.config import load_config

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(url: str) -> dict[str, list]:
    """/metrics parsed with prometheus_client's text parser: family name -> samples."""
    with urllib.request.urlopen(url + "metrics", timeout=30) as response:
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def sink_frames(url: str) -> float:
    return next(s.value for s in scrape(url)["posestream_stage_frames"]
                if s.name.endswith("_total") and s.labels["stage"] == "sinks")


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def live_run(shared: Path, prepared_home: Path, tmp_path: Path):
    """`posestream run --live` on two looping clips with the web sink; yields (url, process)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} missing (scripts/setup.sh installs Debian's chromium)")
    clip = shared / "data/video/two_person_interaction_72f.mp4"
    source = f"lavfi:movie=filename={clip}:loop=0,setpts=N/(30*TB),realtime"
    port = free_port()
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "posestream", "run", "--live", "--source", source, "--source", source,
         "--set", "detector.input_size=320", "--sink", f"web:127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "POSESTREAM_HOME": str(prepared_home)})
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: urllib.request.urlopen(url + "healthz", timeout=5).status == 200, 180,
                 "/healthz to report the pipeline healthy")
        yield url, process
    finally:
        interrupt(process)
        log.close()
        sys.stderr.write((tmp_path / "run.log").read_text()[-3000:])


def canvas_digest(page, index: int) -> str:
    data = page.evaluate("i => document.querySelectorAll('canvas')[i].toDataURL('image/png')", index)
    return hashlib.sha256(data.encode()).hexdigest()


def test_browser_sees_poses_on_two_streams_and_the_pipeline_outlives_it(live_run, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url, process = live_run
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # bypass_csp: playwright's own waiting helpers evaluate strings, which our CSP forbids
            page = browser.new_page(bypass_csp=True, viewport={"width": 1280, "height": 560})
            page.goto(url)
            page.wait_for_function("() => posestreamStats.framesDrawn >= 30 && posestreamStats.persons > 0",
                                   timeout=240_000)
            page.wait_for_function("() => posestreamStats.streams.length >= 2", timeout=120_000)
            stats = page.evaluate("() => posestreamStats")
            assert stats["lastFrame"]["persons"] > 0
            assert sorted(stats["streams"]) == ["lavfi", "lavfi-2"]
            first = canvas_digest(page, 0)
            drawn = stats["framesDrawn"]
            page.wait_for_function(f"() => posestreamStats.framesDrawn >= {drawn + 10}", timeout=120_000)
            assert canvas_digest(page, 0) != first, "the canvas did not change between frames"
            shot = Path(os.environ.get("POSESTREAM_WEB_SCREENSHOT") or tmp_path / "web-viewer.png")
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            labels = page.locator(".stats").all_inner_texts()
            assert len(labels) == 2 and all("fps" in text and "dropped" in text for text in labels)
            # the picker: one stream only; the other's card hides and its frames stop coming
            page.select_option("#picker", "lavfi-2")
            drawn = page.evaluate("() => posestreamStats.framesDrawn")
            page.wait_for_function(f"() => posestreamStats.framesDrawn >= {drawn + 5}", timeout=120_000)
            page.wait_for_timeout(1000)  # frames already on their way when the choice changed
            drawn = page.evaluate("() => posestreamStats.framesDrawn")
            page.wait_for_function(f"() => posestreamStats.framesDrawn >= {drawn + 5}", timeout=120_000)
            assert page.evaluate("() => posestreamStats.lastFrame.stream") == "lavfi-2"
            assert page.locator(".card:visible").count() == 1
            before_close = sink_frames(url)
            page.close()  # mid-stream
        finally:
            browser.close()
    wait_for(lambda: sink_frames(url) >= before_close + 10, 120, "frames after the page closed")
    assert process.poll() is None, "the pipeline stopped when the page closed"
    assert urllib.request.urlopen(url + "healthz", timeout=10).status == 200
    metrics = scrape(url)
    names = [name for name in metrics if name.startswith("posestream_")]
    assert len(names) >= 3, names
    stage_fps = {s.labels["stage"]: s.value for s in metrics["posestream_stage_fps"]}
    assert {"detect", "sinks"} <= set(stage_fps) and len(stage_fps) >= 4
    assert stage_fps["sinks"] > 0
    e2e = {s.labels["stream"]: s.value for s in metrics["posestream_end_to_end_latency_seconds"]
           if s.name.endswith("_count")}
    assert e2e.get("lavfi", 0) > 0 and e2e.get("lavfi-2", 0) > 0
    assert {s.labels["stream"] for s in metrics["posestream_stream_frames_dropped"]} == {"lavfi", "lavfi-2"}
    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert process.wait(120) == 130



def test_page_with_token_in_its_address_reaches_its_socket(tmp_path: Path) -> None:
    """With `[web] token` the page is opened as /?token=T and hands the token on to /ws; without it
    the page is refused. The server and sink run here, fed with real COCO images and keypoints."""
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} missing (scripts/setup.sh installs Debian's chromium)")
    config = load_config(overrides={"web.port": 0, "web.token": "tok-123"})
    frames = video_results(24, stream="cam0")
    stop = threading.Event()
    with WebHost(config) as host:
        def feed() -> None:
            with WebSink(config, host.sink_target, streams=["cam0"]) as sink:
                index = 0
                while not stop.wait(1 / 15):
                    result, pixels = frames[index % len(frames)]
                    result.frame = index
                    sink.write(result, pixels)
                    index += 1

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(bypass_csp=True)
                    assert page.goto(host.url).status == 403
                    assert page.goto(host.url + "?token=tok-123").status == 200
                    page.wait_for_function("() => posestreamStats.framesDrawn >= 5 && posestreamStats.persons > 0",
                                           timeout=120_000)
                    assert page.evaluate("() => posestreamStats.streams") == ["cam0"]
                finally:
                    browser.close()
        finally:
            stop.set()
            feeder.join(30)
