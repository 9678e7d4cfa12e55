"""Configuration is validated where it enters, with messages that name the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from posestream.stream.core.config import ENV_CONFIG, default_config_path, load_config
from posestream.stream.core.errors import ConfigError, InputNotFoundError
from posestream.stream.core.settings import check_range


def test_defaults_load_and_every_key_has_a_comment() -> None:
    config = load_config()
    assert config.detector.input_size == 640
    for line in default_config_path().read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"config.toml line without a comment: {line}"


@pytest.mark.parametrize("text, overrides, error, match", [
    ("[detector]\ninput_size = 320\n", {}, None, None),
    ("[detector]\nnot_a_key = 1\n", {}, ConfigError, "unknown config key 'detector.not_a_key'"),
    ("[nosuchsection]\nx = 1\n", {}, ConfigError, "unknown config key 'nosuchsection'"),
    ("detector = 5\n", {}, ConfigError, "config key 'detector' must be a table"),
    ("", {"detector.bogus": 1}, ConfigError, "unknown config key 'detector.bogus'"),
    ("", {"nosuch.key": 1}, ConfigError, "unknown config key 'nosuch'"),
    ("[detector]\ninput_size = 'big'\n", {}, ConfigError, "must be an integer"),
    ("[detector\ninput_size = 1\n", {}, ConfigError, "not valid TOML"),
    ("", {"detector.score_threshold": "high"}, ConfigError, "must be a number"),
    ("", {"detector.score_threshold": 1}, None, None),
    ("[detector]\ninput_size = 700\n", {}, ConfigError,
     r"'detector.input_size' = 700 must be a multiple of 32 in \[64, 4096\]"),
    ("[pipeline]\nring_slots = 1000\n", {}, ConfigError, r"'pipeline.ring_slots' = 1000 .*\[2, 256\]"),
    ("", {"sinks.video_preset": "quick"}, ConfigError, "sinks.video_preset"),
])
def test_user_config_validation(tmp_path: Path, text: str, overrides: dict, error: type | None,
                                match: str | None) -> None:
    path = tmp_path / "user.toml"
    path.write_text(text)
    if error is None:
        load_config(path, overrides)
    else:
        with pytest.raises(error, match=match):
            load_config(path, overrides)


def test_missing_config_file() -> None:
    with pytest.raises(InputNotFoundError, match="config file not found"):
        load_config("/nonexistent/config.toml")


def test_check_range_message() -> None:
    with pytest.raises(ConfigError, match=r"'a.b' = 5 is outside the allowed range \[0, 1\]"):
        check_range("a.b", 5, 0, 1)


def test_machine_config_file_comes_between_defaults_and_the_users(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    machine = tmp_path / "machine.toml"
    machine.write_text("[detector]\ninput_size = 320\nthreads = 1\n")
    user = tmp_path / "user.toml"
    user.write_text("[detector]\ninput_size = 480\n")
    monkeypatch.setenv(ENV_CONFIG, str(machine))
    assert load_config().detector.input_size == 320
    config = load_config(user, {"detector.score_threshold": 0.5})
    assert (config.detector.input_size, config.detector.threads) == (480, 1)
    monkeypatch.setenv(ENV_CONFIG, str(tmp_path / "gone.toml"))
    with pytest.raises(InputNotFoundError, match=r"gone.toml \(named by \$POSESTREAM_CONFIG\)"):
        load_config()
    machine.write_text("[detector]\nno_such_key = 1\n")
    monkeypatch.setenv(ENV_CONFIG, str(machine))
    with pytest.raises(ConfigError, match="unknown config key 'detector.no_such_key'"):
        load_config()
