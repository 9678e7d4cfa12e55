"""The stage graph: one table, resolved per run (one-stage mode has no pose stage), and the sinks
stage telling every sink when each stream ended."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from posestream.stream.core.settings import Settings
from posestream.stream.core.errors import ConfigError
from posestream.stream.pipeline import Pipeline
from posestream.stream.stage_graph import GRAPH, decode_long_side, holders, links, plan

SHORT_A = "data/video/street_walk_5f.mp4"
SHORT_B = "data/video/soccer_posetrack_000001_5f.mp4"


def _names(config: Settings, sources: int = 1, pixels: bool = False) -> list[str]:
    return [stage.name for stage in plan(config, sources, pixels)]


def test_onestage_has_no_pose_stage_and_detect_feeds_nms(config: Settings) -> None:
    config = config.with_overrides({"pose.mode": "onestage"})
    stages = {stage.name: stage for stage in plan(config, 2, False)}
    assert list(stages) == ["source0", "source1", "detect", "nms", "track", "sinks"]
    assert stages["detect"].inputs == ("source0", "source1")
    assert stages["nms"].inputs == ("detect",)
    # the detector and the tracker (camera motion, on by default) read pixels
    assert holders(list(stages.values())) == stages["detect"].bit | stages["track"].bit
    zoom = config.small_people.zoom if config.small_people.enabled else 1.0
    assert decode_long_side(config, list(stages.values())) == round(config.detector.input_size * zoom)


def test_track_stage_leases_pixels_only_when_its_cues_need_them(config: Settings) -> None:
    config = config.with_overrides({"tracker.camera_motion": "off", "tracker.appearance_weight": 0.0})
    stages = {stage.name: stage for stage in plan(config, 1, False)}
    assert stages["track"].bit == 0 and holders(list(stages.values())) == stages["detect"].bit
    config = config.with_overrides({"tracker.appearance_weight": 0.5})
    stages = {stage.name: stage for stage in plan(config, 1, False)}
    assert stages["track"].bit not in (0, stages["detect"].bit, stages["sinks"].bit)
    config = config.with_overrides({"tracker.plugin": "none"})  # reads no pixels whatever the oks-byte keys say
    assert {stage.name: stage for stage in plan(config, 1, False)}["track"].bit == 0


def test_topdown_runs_the_pose_stage_with_its_own_lease(config: Settings) -> None:
    config = config.with_overrides({"pose.mode": "topdown"})
    config = config.with_overrides({"pose.batch": 7})
    stages = {stage.name: stage for stage in plan(config, 1, True)}
    assert list(stages) == ["source0", "detect", "pose", "nms", "track", "sinks"]
    assert stages["nms"].inputs == ("pose",) and stages["pose"].batch == 7
    bits = [stages[name].bit for name in ("detect", "pose", "track", "sinks")]
    assert all(bits) and len(set(bits)) == 4
    assert holders(list(stages.values())) == sum(bits)


def test_the_chain_is_the_graph_rows_with_a_link(config: Settings) -> None:
    """The pipeline's stages, `PoseChain` and the sequential benchmark all build the chain from these."""
    from posestream.stream.links import DetectLink, NmsLink, PoseLink

    assert links(config) == [("detect", DetectLink), ("nms", NmsLink)]
    topdown = config.with_overrides({"pose.mode": "topdown"})
    assert links(topdown) == [("detect", DetectLink), ("pose", PoseLink), ("nms", NmsLink)]
    claims = {stage.name: stage.claims for stage in plan(topdown, 1, True)}
    assert [name for name, claimed in claims.items() if claimed] == ["detect"]


def test_graph_rows_have_distinct_names_and_known_inputs() -> None:
    names = [spec.name for spec in GRAPH]
    assert len(names) == len(set(names))
    assert all(spec.input is None or spec.input in names for spec in GRAPH)
    assert {spec.name for spec in GRAPH if spec.restartable} == {"detect", "pose", "nms"}


def test_bad_pose_mode_fails_before_anything_starts(config: Settings) -> None:
    with pytest.raises(ConfigError, match="pose.mode"):
        Pipeline(config.with_overrides({"pose.mode": "twostage"}), ["unused.mp4"], ["json:/dev/null"])


def _install_recording_sink(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party sink, registered through a real entry point (a dist-info on sys.path); the
    stage processes find it too, since `spawn` passes them the parent's sys.path."""
    (folder / "recording_sink.py").write_text(textwrap.dedent('''
        import json

        from posestream.stream.core.contracts import Sink

        class RecordingSink(Sink):
            needs_pixels = False

            def __init__(self, settings, target, streams):
                self.path = target

            def _log(self, record):
                with open(self.path, "a") as f:
                    f.write(json.dumps(record) + "\\n")

            def write(self, result, frame):
                self._log(["write", result.stream, result.frame])

            def end_stream(self, stream, last_frame):
                self._log(["end", stream, last_frame])

            def close(self):
                self._log(["close"])
    '''))
    dist = folder / "recording_sink-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: recording-sink\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[posestream.sinks]\nrecord = recording_sink:RecordingSink\n")
    monkeypatch.syspath_prepend(str(folder))


@pytest.mark.slow
def test_sinks_hear_end_of_stream_once_per_stream_after_its_last_frame(
        config: Settings, shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_recording_sink(tmp_path, monkeypatch)
    log = tmp_path / "calls.jsonl"
    config = config.with_overrides({"detector.threads": 1})
    config = config.with_overrides({"detector.input_size": 320})
    with Pipeline(config, [str(shared / SHORT_A), str(shared / SHORT_B)], [f"record:{log}"]) as pipeline:
        report = pipeline.run()
    assert report.status == "completed" and "pose" not in report.stages  # one-stage default
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[-1] == ["close"]
    for stream in ("street_walk_5f", "soccer_posetrack_000001_5f"):
        mine = [c for c in calls if len(c) > 1 and c[1] == stream]
        ends = [c for c in mine if c[0] == "end"]
        assert ends == [["end", stream, mine[-2][2]]] and mine[-1] == ends[0]
        assert [c[2] for c in mine[:-1]] == list(range(5))
