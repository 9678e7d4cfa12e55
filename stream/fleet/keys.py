"""The fleet's own CURVE keys: every camera's stream into the aggregator is encrypted, and each end
accepts only the other.

- The aggregator is the CURVE *client* of every camera. Its key pair is made in memory by the
  controller for each run, or read from `fleet.keys`/fleet.key_secret on the controller's machine.
- Each camera pipeline is a CURVE *server* that admits only the aggregator's public key. Its pair
  is made by the camera actor on its own node, new for each actor, or read there from
  `fleet.keys`/CAMERA.key_secret; the aggregator accepts the camera only with the public key the
  actor reported, or with the pinned `fleet.keys`/CAMERA.key.

So only public keys cross Ray, whose own traffic is not encrypted unless Ray's TLS is set up: the
controller's public key goes to each actor in its job, each actor's public key comes back in its
status. No secret leaves the process (controller) or node (camera) that made or read it. A fresh
pair per actor also fences a stale incarnation out cryptographically: the aggregator only
completes a handshake with the pair of the actor it currently trusts.

The pipeline reads its pair (and the aggregator's public key, its allow-list) from a private 0700
folder the actor writes, in /dev/shm where there is one, and removes when it stops; a folder left
by a killed actor is removed by the next one on that node (the folder is named after its actor).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from posestream.stream.curve_keys import (PUBLIC_SUFFIX, SECRET_SUFFIX, KeyPair, load_key_pair,
                                          load_public_key, new_key_pair, write_key_file)
from posestream.stream.core.errors import ConfigError, InputError, InputNotFoundError
from posestream.stream.core.settings import FleetSettings

FLEET_KEY = "fleet"  # the aggregator's pair in a keys folder: fleet.key_secret
FOLDER_PREFIX = "posestream-fleet-keys-"


def _folder(settings: FleetSettings) -> Path:
    folder = Path(settings.keys).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"fleet.keys: directory {folder} not found (make keys with "
                          f"`posestream keys generate {FLEET_KEY} --dir {folder}` and one per camera)")
    return folder


def check_keys(settings: FleetSettings, cameras: Iterable[str]) -> None:
    """Where `fleet run` starts: the aggregator's pair and every camera's pinned public key exist and
    are keys. Each camera's secret half is checked on the node that runs it."""
    if not (settings.curve and settings.keys):
        return
    folder = _folder(settings)
    for path, read in ((folder / f"{FLEET_KEY}{SECRET_SUFFIX}", load_key_pair),
                       *((folder / f"{name}{PUBLIC_SUFFIX}", load_public_key) for name in cameras)):
        try:
            read(path)
        except (InputError, InputNotFoundError) as exc:
            raise ConfigError(f"fleet.keys: {exc}") from None


def aggregator_keys(settings: FleetSettings) -> KeyPair | None:
    """The aggregator's client pair (None without CURVE); made here unless `fleet.keys` names one."""
    if not settings.curve:
        return None
    if settings.keys:
        return load_key_pair(_folder(settings) / f"{FLEET_KEY}{SECRET_SUFFIX}")
    return new_key_pair()


def pinned_key(settings: FleetSettings, camera: str) -> bytes | None:
    """The public key `camera` must present (from `fleet.keys`), or None: the one its actor reports."""
    if not (settings.curve and settings.keys):
        return None
    return load_public_key(_folder(settings) / f"{camera}{PUBLIC_SUFFIX}")


def camera_keys(keys: str, camera: str, pinned: bytes | None) -> KeyPair:
    """On the camera's node: its server pair, read from `keys` (and checked against the pinned public
    key) or made fresh. A missing or wrong key is one `ConfigError` line naming file and node."""
    if not keys:
        return new_key_pair()
    path = Path(keys).expanduser() / f"{camera}{SECRET_SUFFIX}"
    try:
        pair = load_key_pair(path)
    except (InputError, InputNotFoundError) as exc:
        raise ConfigError(f"camera key: {exc}") from None
    if pinned is not None and pair.public != pinned:
        raise ConfigError(f"camera key {path} does not match {camera}{PUBLIC_SUFFIX} of fleet.keys "
                          "(the aggregator would refuse it)")
    return pair


class KeyFolder:
    """A private folder with the camera's server pair and the aggregator's public key, for the
    pipeline's zmq sink (`zmq.server_secret_key`, `zmq.allowed_clients`). Removed by `close()`."""

    def __init__(self, camera: str, server: KeyPair, client_public: bytes) -> None:
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
        _remove_orphans(base)
        self.path = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{os.getpid()}-", dir=base))  # 0700
        self.server_secret_key = write_key_file(self.path / f"{camera}{SECRET_SUFFIX}",
                                                server.public, server.secret)
        self.allowed_clients = write_key_file(self.path / f"{FLEET_KEY}{PUBLIC_SUFFIX}", client_public)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _remove_orphans(base: Path) -> None:
    """Key folders whose actor process is gone (killed before it could remove them)."""
    for folder in base.glob(f"{FOLDER_PREFIX}*"):
        pid = folder.name[len(FOLDER_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)
