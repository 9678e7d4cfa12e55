"""FLEET.toml validation, per-camera configuration and the status figures: no Ray, no pipeline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError, InputNotFoundError
from posestream.stream.fleet.spec import check_resources, load_fleet, parse_fleet
from posestream.stream.core import wire
from posestream.stream.fleet.status import STATES, CameraStatus, FrameStats, format_table, status_message

CLIP = "data/video/two_person_interaction_72f.mp4"


def doc(*cameras: dict[str, Any], fleet: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"fleet": fleet or {}, "camera": list(cameras), **extra}


GOOD = {"name": "door", "source": "lavfi:testsrc=size=320x240:rate=5"}


def test_minimal_fleet_takes_defaults_from_config_toml() -> None:
    spec = parse_fleet(doc(GOOD), load_config())
    assert spec.settings.publish == "tcp://127.0.0.1:5570"
    (camera,) = spec.cameras
    assert (camera.name, camera.num_cpus, camera.num_gpus, camera.overrides) == ("door", 1.0, 0.0, {})


def test_camera_config_applies_overrides_threads_and_live_policy() -> None:
    spec = parse_fleet(doc({**GOOD, "num_cpus": 3, "set": {"detector.input_size": 320}}), load_config())
    config = spec.camera_config(spec.cameras[0])
    assert config.detector.input_size == 320
    assert config.detector.threads == 3 and config.engine.intra_op_threads == 3
    assert config.pipeline.policy == "live"
    topdown = parse_fleet(doc({**GOOD, "num_cpus": 3, "set": {"pose.mode": "topdown"}}), load_config())
    config = topdown.camera_config(topdown.cameras[0])
    assert (config.detector.threads, config.pose.threads) == (2, 1)
    small = parse_fleet(doc({**GOOD, "num_cpus": 0.25}), load_config())
    assert small.camera_config(small.cameras[0]).detector.threads == 1
    gpu = parse_fleet(doc({**GOOD, "num_gpus": 0.5}), load_config())
    assert gpu.camera_config(gpu.cameras[0]).engine.device == "cuda"


@pytest.mark.parametrize("document, message", [
    (doc(GOOD, dict(GOOD)), "duplicate camera name 'door'"),
    (doc({**GOOD, "fps": 5}), "camera[0]: unknown key 'fps'"),
    (doc(GOOD, fleet={"publsh": "tcp://127.0.0.1:1"}), "unknown config key 'fleet.publsh'"),
    (doc(GOOD, cameras=[]), "unknown table 'cameras'"),
    (doc(), "no cameras"),
    (doc({"name": "a b", "source": "0"}), "camera[0].name must be"),
    (doc({"name": "door"}), "camera 'door'.source must be a non-empty string"),
    (doc({**GOOD, "source": "ftp://host/x"}), "unsupported URL scheme 'ftp'"),
    (doc({**GOOD, "source": "rtsp:///stream"}), "names no host"),
    (doc({**GOOD, "source": "lavfi:"}), "needs a filter graph"),
    (doc({**GOOD, "source": "lavfi:movie=/no/such/clip.mp4:loop=0"}), "does not exist"),
    (doc({**GOOD, "source": "/etc/hostname"}), "is not a live camera"),
    (doc({**GOOD, "num_cpus": 0}), "camera 'door'.num_cpus' = 0.0 is outside"),
    (doc({**GOOD, "num_cpus": "two"}), "num_cpus must be a number"),
    (doc({**GOOD, "set": {"detector.inpt_size": 320}}), "unknown config key 'detector.inpt_size'"),
    (doc({**GOOD, "set": {"detector.input_size": "big"}}), "must be an integer"),
    (doc({**GOOD, "set": {"fleet.publish": "tcp://127.0.0.1:1"}}), "is a fleet setting"),
    (doc(GOOD, fleet={"publish": "udp://x"}), "fleet.publish"),
    (doc(GOOD, {**GOOD, "name": "b"}, fleet={"camera_port_first": 6000, "camera_port_last": 6000}), "widen the range"),
    (doc(GOOD, fleet={"restart_max_s": 0.5}), "fleet.restart_max_s"),
    (doc(GOOD, fleet={"lease_s": 9.0}), "fleet.unavailable_s = 8 must be greater than fleet.lease_s = 9"),
    (doc(GOOD, fleet={"keys": "/no/such/keys"}), "fleet.keys: directory /no/such/keys not found"),
])
def test_bad_fleet_files_are_one_clear_error(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_fleet(document, load_config())
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_load_fleet_reads_toml_and_reports_missing_and_broken_files(tmp_path: Path, shared: Path) -> None:
    clip = shared / CLIP
    path = tmp_path / "FLEET.toml"
    path.write_text(f'[fleet]\npublish = "tcp://127.0.0.1:5571"\n\n[[camera]]\nname = "clip"\n'
                    f'source = "lavfi:movie={clip}:loop=0,setpts=N/FRAME_RATE/TB"\nnum_cpus = 0.5\n'
                    '[camera.set]\n"detector.input_size" = 320\n')
    spec = load_fleet(path)
    assert spec.settings.publish == "tcp://127.0.0.1:5571"
    assert spec.cameras[0].overrides == {"detector.input_size": 320}
    with pytest.raises(InputNotFoundError, match="fleet file not found"):
        load_fleet(tmp_path / "missing.toml")
    path.write_text("[[camera]\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_fleet(path)


@pytest.mark.parametrize("camera, nodes, message", [
    ({"num_cpus": 4}, [{"CPU": 2.0}, {"CPU": 1.0}], "num_cpus = 4 but the largest node of the cluster has 2 CPUs"),
    ({"num_gpus": 1}, [{"CPU": 8.0}], "num_gpus = 1 but the largest node of the cluster has 0 GPUs"),
    ({"num_cpus": 1}, [], "no alive node"),
    ({"num_cpus": 2, "num_gpus": 0.5}, [{"CPU": 1.0}, {"CPU": 2.0, "GPU": 1.0}], None),
])
def test_impossible_resource_requests(camera: dict[str, Any], nodes: list[dict[str, float]],
                                      message: str | None) -> None:
    spec = parse_fleet(doc({**GOOD, **camera}), load_config())
    if message is None:
        check_resources(spec, nodes)
        return
    with pytest.raises(ConfigError, match=message):
        check_resources(spec, nodes)


def test_frame_stats_fps_p99_and_age_over_the_window() -> None:
    stats = FrameStats(window_s=10.0)
    assert stats.figures(100.0) == (0.0, None, None)
    for i in range(50):  # 5 fps for 10 s, latency 100 ms except one slow frame
        stats.add(100.0 + i * 0.2, 0.5 if i == 25 else 0.1)
    fps, p99, age = stats.figures(110.0)
    assert fps == pytest.approx(5.0, rel=0.01)
    assert 100.0 < p99 <= 500.0
    assert age == pytest.approx(0.2)
    fps, p99, age = stats.figures(200.0)  # long silence: the window is empty, the age grows
    assert (fps, p99) == (0.0, None) and age == pytest.approx(90.2)


def test_frame_arriving_after_the_status_clock_is_age_zero() -> None:
    """The controller reads its clock, then the aggregator records a frame: the status row (and the
    wire's `last_frame_age_s >= 0`) must not see it as arriving from the future (a CI run once
    killed the controller's watch thread with an age of -0.06 s)."""
    stats = FrameStats(window_s=10.0)
    stats.add(100.06, 0.1)
    assert stats.figures(100.0)[2] == 0.0
    row = CameraStatus("door", "10.0.0.5", "running", 5.0, 100.0, stats.figures(100.0)[2], 0)
    status_message([row])  # validated against the wire schema: raised InputError before


def test_status_message_follows_the_wire_schema_and_table() -> None:
    rows = [CameraStatus("door", "10.0.0.5", "running", 14.96, 83.25, 0.04, 1, "", "ab12cd34"),
            CameraStatus("yard", "", "waiting for resources", 0.0, None, None, 0, "needs 2 CPU")]
    message = status_message(rows, now=5.0)
    assert wire.validate(message) is message and wire.topic_of(message) == wire.STATUS_TOPIC
    assert message["publish_ts"] == 5.0
    assert message["cameras"][0] == {
        "name": "door", "node": "10.0.0.5", "state": "running", "fps": 14.96, "p99_ms": 83.2,
        "last_frame_age_s": 0.04, "restarts": 1, "detail": "running", "node_id": "ab12cd34", "note": ""}
    assert (message["cameras"][1]["state"], message["cameras"][1]["detail"]) == (
        "waiting", "waiting for resources")
    table = format_table(rows).splitlines()
    assert table[0].split() == ["camera", "node", "state", "fps", "p99", "ms", "age", "s", "restarts", "note"]
    assert table[1].split() == ["door", "10.0.0.5", "(ab12cd)", "running", "15.0", "83", "0.0", "1"]
    assert table[2].split()[:8] == ["yard", "-", "waiting", "for", "resources", "0.0", "-", "-"]


def test_every_fleet_state_maps_to_a_wire_state() -> None:
    for state in STATES:
        row = CameraStatus("cam", "n", state, 0.0, None, None, 0)
        wire.validate(status_message([row], now=1.0))


def test_camera_configs_never_carry_the_aggregated_streams_keys(tmp_path: Path) -> None:
    """`[zmq]` CURVE options protect the aggregated stream (and its key files must exist where
    `fleet run` starts); a camera's own stream gets its keys on its node, never these."""
    from posestream.stream.curve_keys import generate_key_pair

    generate_key_pair(tmp_path, "server")
    base = load_config(overrides={"zmq.curve": True, "zmq.server_secret_key": str(tmp_path / "server.key_secret"),
                                  "zmq.allowed_clients": str(tmp_path / "server.key")})
    spec = parse_fleet(doc(GOOD), base)
    zmq = spec.camera_config(spec.cameras[0]).zmq
    assert (zmq.curve, zmq.server_secret_key, zmq.allowed_clients) == (False, "", "")
    base = base.with_overrides({"zmq.server_secret_key": str(tmp_path / "gone.key_secret")})
    with pytest.raises(ConfigError, match="fleet.publish: CURVE key file not found: .*gone.key_secret"):
        parse_fleet(doc(GOOD), base)
