"""Every config table is parsed once into a frozen settings type; each key's bound lives on its field."""
from __future__ import annotations

import dataclasses
import pickle
import re
import sys
import typing

import pytest

from posestream.stream.core.config import default_config_path, load_config
from posestream.stream.core.errors import ConfigError
from posestream.stream.core.settings import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _raw() -> dict:
    """The shipped file as parsed TOML (what `Settings.from_config` parses)."""
    return tomllib.loads(default_config_path().read_text())


def test_load_config_gives_frozen_settings_that_pickle():
    settings = load_config()
    assert isinstance(settings, Settings) and settings == Settings.from_config(_raw())
    assert pickle.loads(pickle.dumps(settings)) == settings  # it crosses to the stage processes
    assert Settings.from_json(settings.to_json()) == settings  # and, serialised, to a fleet's pipelines
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.detector.input_size = 320  # type: ignore[misc]


def test_overrides_make_new_settings_checked_like_the_file():
    settings = load_config()
    changed = settings.with_overrides({"detector.input_size": 320, "pose": {"mode": "topdown", "batch": 4}})
    assert (changed.detector.input_size, changed.pose.mode, changed.pose.batch) == (320, "topdown", 4)
    assert settings.detector.input_size == 640 and settings.pose.mode == "onestage"  # untouched
    assert changed.tracker is settings.tracker  # tables without overrides are shared, not copied
    assert dataclasses.replace(settings, pose=changed.pose).pose.batch == 4
    assert settings.detector.with_values(score_threshold=1).score_threshold == 1.0  # int for a float
    with pytest.raises(ConfigError, match=r"'detector.input_size' = 700 must be a multiple of 32"):
        settings.with_overrides({"detector.input_size": 700})
    with pytest.raises(ConfigError, match="unknown config key 'detector.extra'"):
        settings.with_overrides({"detector.extra": 1})
    with pytest.raises(ConfigError, match="min <= opt <= max"):  # the table's own rules, after all its keys
        settings.with_overrides({"tensorrt.max_batch": 2, "tensorrt.opt_batch": 4})
    assert settings.with_overrides({"tensorrt.max_batch": 8, "tensorrt.opt_batch": 4}).tensorrt.opt_batch == 4


def test_every_key_of_config_toml_has_a_typed_field_and_back():
    """Parsing the shipped file already proves it (unknown and missing keys are errors); this also
    checks the types match the defaults, so a field typed int with a float default cannot slip in."""
    settings = load_config()
    for table in dataclasses.fields(settings):
        section = getattr(settings, table.name)
        for name, kind in typing.get_type_hints(type(section)).items():
            if name != "section":
                assert type(getattr(section, name)) is kind, f"{table.name}.{name}"
    assert re.search(r"^\[bench\]", default_config_path().read_text(), re.M)


@pytest.mark.parametrize("overrides, match", [
    ({"detector.input_size": 700}, r"'detector.input_size' = 700 must be a multiple of 32 in \[64, 4096\]"),
    ({"detector.input_size": 32}, r"detector.input_size' = 32 must be a multiple of 32 in \[64, 4096\]"),
    ({"detector.score_threshold": 1.5}, r"'detector.score_threshold' = 1.5 is outside the allowed range \[0.0, 1.0\]"),
    ({"detector.threads": -1}, r"detector.threads"),
    ({"engine.device": "gpu"}, r"'engine.device' = 'gpu' is not cpu, cuda or cuda:N"),
    ({"engine.preprocess": "gpu"}, r"'engine.preprocess' = 'gpu' is not one of: auto, numpy, torch"),
    ({"engine.intra_op_threads": 300}, r"engine.intra_op_threads.*\[0, 256\]"),
    ({"model.name": ""}, r"model.name' must not be empty"),
    ({"model.opset": 3}, r"model.opset.*\[7, 21\]"),
    ({"pipeline.ring_slots": 1}, r"'pipeline.ring_slots' = 1 is outside the allowed range \[2, 256\]"),
    ({"pipeline.ring_slots": 257}, r"pipeline.ring_slots.*\[2, 256\]"),
    ({"pipeline.policy": "fast"}, r"pipeline.policy.*not one of: auto, live, offline"),
    ({"pipeline.heartbeat_timeout_s": 0.5}, r"pipeline.heartbeat_timeout_s' = 0.5 .*\[1.0, 3600\]"),
    ({"pose.mode": "bottomup"}, r"pose.mode.*onestage, topdown"),
    ({"pose.box_expand": 0.5}, r"pose.box_expand.*\[1.0, 3.0\]"),
    ({"pose.refine": "magic"}, r"pose.refine.*none, dark"),
    ({"pose_nms.kind": "soft"}, r"pose_nms.kind.*not one of"),
    ({"pose_nms.delta2": 0.0}, r"pose_nms.delta2"),
    ({"tracker.low_score": 0.9}, r"tracker.low_score' \(0.9\) must not exceed tracker.high_score"),
    ({"tracker.oks_weight": 0.0, "tracker.iou_weight": 0.0}, r"oks_weight \+ tracker.iou_weight must be > 0"),
    ({"tensorrt.opt_batch": 99}, r"min <= opt <= max"),
    ({"tensorrt.precision": "int4"}, r"tensorrt.precision.*fp16, fp32, int8"),
    ({"source.webcam_fourcc": "MJPEG"}, r"source.webcam_fourcc' must be 4 characters"),
    ({"source.reconnect_initial_s": 2.0, "source.reconnect_max_s": 1.0}, r"source.reconnect_max_s.*\[2.0, 3600\]"),
    ({"sinks.video_crf": 60}, r"sinks.video_crf.*\[0, 51\]"),
    ({"sinks.images_quality": 0}, r"sinks.images_quality.*\[1, 100\]"),
    ({"zmq.hwm": 0}, r"zmq.hwm.*\[1, 1000000\]"),
    ({"zmq.heartbeat_s": 0.0}, r"zmq.heartbeat_s.*\[0.01, 3600\]"),
    ({"bench.sink": "window"}, r"bench.sink.*json, zmq, video, none"),
    ({"bench.repeat": 0}, r"bench.repeat"),
    ({"pipeline.live_newest_only": 1}, r"'pipeline.live_newest_only' must be true/false"),
])
def test_a_bad_value_fails_at_load_with_one_line_naming_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(overrides=overrides)
    assert "\n" not in str(info.value)


def test_a_raw_document_is_checked_when_parsed():
    config = _raw()
    config["detector"]["batch"] = 0
    with pytest.raises(ConfigError, match=r"detector.batch.*\[1, 256\]"):
        Settings.from_config(config)
    del config["detector"]["batch"]
    with pytest.raises(ConfigError, match="'detector.batch' is missing"):
        Settings.from_config(config)
    config["detector"]["extra"] = 1
    with pytest.raises(ConfigError, match="unknown config key 'detector.extra'"):
        Settings.from_config(config)


def test_ints_are_accepted_for_floats_but_not_bools_for_ints():
    assert load_config(overrides={"detector.score_threshold": 1}).detector.score_threshold == 1.0
    with pytest.raises(ConfigError, match="'detector.batch' must be an integer, got True"):
        load_config(overrides={"detector.batch": True})


def test_one_bound_serves_other_entry_points_too():
    """The ring and the TensorRT profile take these values from code, not only from config.toml:
    they check them against the same declared bound."""
    from posestream.engines.backends.engine_cache import BatchProfile
    from posestream.stream.core.settings import PipelineSettings

    with pytest.raises(ConfigError, match=r"'pipeline.ring_slots' = 300 is outside the allowed range \[2, 256\]"):
        PipelineSettings.checked("ring_slots", 300)
    with pytest.raises(ConfigError, match=r"'tensorrt.max_batch' = 2000 .*\[1, 1024\]"):
        BatchProfile(1, 1, 2000)
