"""The shipped `apache` preset: every model it runs is Apache-2.0/MIT-licensed, it sits between the
defaults and --config/--set, an unknown preset is one error, and `models list --preset apache`
shows the preset's models with their licences."""
from __future__ import annotations

import subprocess
import sys

import pytest

from posestream.engines.catalog import models_of
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError


def test_apache_preset_runs_only_permissive_models():
    config = load_config(preset="apache")
    assert config.pose.mode == "topdown"
    assert models_of(config) == [config.model.name, config.pose.model]
    assert all(name.startswith("movenet-") for name in models_of(config))  # Google MoveNet, Apache-2.0


def test_preset_sits_under_config_file_and_flags(tmp_path):
    user = tmp_path / "user.toml"
    user.write_text('[pose]\nmodel = "movenet-lightning"\n')
    config = load_config(user, {"detector.input_size": 320}, preset="apache")
    assert config.pose.model == "movenet-lightning"
    assert config.detector.input_size == 320
    assert config.detector.plugin == "movenet-multipose"


@pytest.mark.parametrize("name", ["gpl", "../config"])
def test_unknown_preset_is_one_error(name: str):
    with pytest.raises(ConfigError, match=f"unknown preset '{name}' \\(known: apache\\)"):
        load_config(preset=name)


def test_models_list_shows_the_presets_models_and_licences(tmp_path):
    result = subprocess.run([sys.executable, "-m", "posestream", "models", "list", "--preset", "apache",
                             "--set", f"paths.home={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == models_of(load_config(preset="apache"))
    assert all("not prepared" in line for line in lines)


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_prepare_and_run_the_apache_preset(prepared_home, shared, tmp_path):
    """`models prepare --preset apache` builds exactly the preset's models; `run --preset apache`
    on the 72-frame two-person clip finds someone in every frame and both people in most, COCO-17."""
    import json

    prepare = subprocess.run([sys.executable, "-m", "posestream", "models", "prepare", "--preset", "apache"],
                             capture_output=True, text=True, timeout=1800)
    assert prepare.returncode == 0, prepare.stderr
    assert sorted({line.split()[0] for line in prepare.stdout.splitlines()}) == sorted(
        models_of(load_config(preset="apache")))
    out = tmp_path / "apache.json"
    run = subprocess.run([sys.executable, "-m", "posestream", "run", "--quiet", "--preset", "apache", "--source",
                          str(shared / "data/video/two_person_interaction_72f.mp4"), "--sink", f"json:{out}"],
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr
    persons = json.loads(out.read_text())
    per_frame = {}
    for person in persons:
        per_frame[person["image_id"]] = per_frame.get(person["image_id"], 0) + 1
        assert len(person["keypoints"]) == 17 * 3
    assert len(per_frame) == 72 and sum(n >= 2 for n in per_frame.values()) >= 54  # both people in 3/4
