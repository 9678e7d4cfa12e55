"""The fleet's own CURVE keys (`stream.fleet.keys`), without Ray: what is checked where `fleet run`
starts, what a camera's node reads or makes, and the private folder its pipeline reads them from."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError
from posestream.stream.curve_keys import generate_key_pair, load_allowed_keys, load_key_pair
from posestream.stream.fleet import keys as fleet_keys


def fleet_settings(**changes: object):
    return load_config().fleet.with_values(**changes)


def test_fresh_pairs_by_default_and_none_without_curve() -> None:
    settings = fleet_settings()
    first, second = fleet_keys.aggregator_keys(settings), fleet_keys.aggregator_keys(settings)
    assert first.public != second.public and len(first.secret) == 40
    assert fleet_keys.pinned_key(settings, "door") is None
    assert fleet_keys.aggregator_keys(fleet_settings(curve=False)) is None
    fleet_keys.check_keys(settings, ["door"])  # nothing to check: no files


def test_keys_folder_is_checked_where_fleet_run_starts(tmp_path: Path) -> None:
    for name in ("fleet", "door"):
        generate_key_pair(tmp_path, name)
    settings = fleet_settings(keys=str(tmp_path))
    fleet_keys.check_keys(settings, ["door"])
    assert fleet_keys.aggregator_keys(settings) == load_key_pair(tmp_path / "fleet.key_secret")
    assert fleet_keys.pinned_key(settings, "door") == load_key_pair(tmp_path / "door.key_secret").public
    with pytest.raises(ConfigError, match=r"fleet.keys: CURVE key file not found: .*yard\.key"):
        fleet_keys.check_keys(settings, ["door", "yard"])
    with pytest.raises(ConfigError, match="fleet.keys: directory .*nowhere not found"):
        fleet_keys.check_keys(fleet_settings(keys=str(tmp_path / "nowhere")), ["door"])
    (tmp_path / "fleet.key_secret").write_text("not a key")
    with pytest.raises(ConfigError, match="fleet.keys: .*fleet.key_secret"):
        fleet_keys.check_keys(settings, ["door"])


def test_a_camera_node_reads_its_pair_and_refuses_one_that_is_not_pinned(tmp_path: Path) -> None:
    for name in ("door", "yard"):
        generate_key_pair(tmp_path, name)
    door = load_key_pair(tmp_path / "door.key_secret")
    assert fleet_keys.camera_keys(str(tmp_path), "door", door.public) == door
    with pytest.raises(ConfigError, match=r"camera key .*yard\.key_secret does not match yard\.key"):
        fleet_keys.camera_keys(str(tmp_path), "yard", door.public)
    with pytest.raises(ConfigError, match=r"camera key: CURVE key file not found: .*gate\.key_secret"):
        fleet_keys.camera_keys(str(tmp_path), "gate", None)
    assert fleet_keys.camera_keys("", "door", None) != fleet_keys.camera_keys("", "door", None)


def test_key_folder_is_private_removed_and_orphans_of_dead_actors_go() -> None:
    server = fleet_keys.camera_keys("", "door", None)
    client = fleet_keys.camera_keys("", "fleet", None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
    orphan = Path(tempfile.mkdtemp(prefix=f"{fleet_keys.FOLDER_PREFIX}{dead}-", dir=base))
    folder = fleet_keys.KeyFolder("door", server, client.public)
    try:
        assert not orphan.exists()  # its actor's process is gone
        assert stat.S_IMODE(folder.path.stat().st_mode) == 0o700
        assert stat.S_IMODE(folder.server_secret_key.stat().st_mode) == 0o600
        assert load_key_pair(folder.server_secret_key) == server
        assert load_allowed_keys(folder.allowed_clients) == {client.public}
    finally:
        folder.close()
    assert not folder.path.exists()
    folder.close()  # safe twice
