"""FLEET.toml: the fleet's cameras and settings, validated where they enter.

Everything that can be checked before a camera starts is checked here, each problem as one
`ConfigError` naming the camera and key: unknown keys, duplicate or unusable names, sources that
can never work as a live camera, `[camera.set]` overrides that `config.toml` does not know, and
resource requests that no node of the cluster can satisfy (`check_resources`, once connected).
A camera that is merely unreachable is not an error here: it is retried at run time.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from posestream.stream.client import check_endpoint
from posestream.stream.core.config import load_config
from posestream.stream.core.errors import ConfigError, InputError, InputNotFoundError
from posestream.stream.core.settings import FleetSettings, Settings
from posestream.stream.curve_keys import server_keys
from posestream.stream.fleet.keys import check_keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CAMERA_KEYS = ("name", "source", "num_cpus", "num_gpus", "set")
NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
# A topic and a file-name-safe label: letters, digits, '-', '_', '.'; no prefix of another name
# matters because subscribers compare topics exactly.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class CameraSpec:
    """One `[[camera]]`: its name (the stream's topic), source, Ray resources and config overrides."""

    name: str
    source: str
    num_cpus: float
    num_gpus: float
    overrides: dict[str, Any]

    @property
    def threads(self) -> int:
        """Engine threads from the CPUs the camera was given (at least one)."""
        return max(1, int(self.num_cpus))


@dataclass(frozen=True)
class FleetSpec:
    settings: FleetSettings
    cameras: tuple[CameraSpec, ...]
    config: Settings  # the base configuration every camera starts from (before its own overrides)

    def camera_config(self, camera: CameraSpec) -> Settings:
        """The camera's full configuration: base, its `[camera.set]`, then threads from its CPUs."""
        return camera_config(self.config, camera)


def camera_config(base: Settings, camera: CameraSpec) -> Settings:
    settings = base.with_overrides(camera.overrides)
    threads = camera.threads
    changes: dict[str, Any] = {"engine.intra_op_threads": threads, "pipeline.policy": "live"}
    if settings.pose.mode == "onestage":
        changes["detector.threads"] = threads
    else:  # the detector and the SPPE share what the camera was given
        changes.update({"detector.threads": max(1, (threads + 1) // 2), "pose.threads": max(1, threads // 2)})
    if camera.num_gpus > 0 and "engine.device" not in camera.overrides:
        changes["engine.device"] = "cuda"  # Ray's CUDA_VISIBLE_DEVICES names the GPU it gave
    # [zmq]'s CURVE keys are the aggregated stream's; a camera's stream gets its own on its node.
    changes["zmq"] = {"curve": False, "server_secret_key": "", "allowed_clients": "", "epoch": 0}
    return settings.with_overrides(changes)


def _check_source(where: str, source: Any) -> str:
    """A source that can run as a live camera: lavfi graph, network URL or webcam. Files and
    folders end, so they are refused (loop a clip with `lavfi:movie=PATH:loop=0,...`)."""
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"{where}.source must be a non-empty string (lavfi:GRAPH, rtsp://..., "
                          "http(s)://... or a webcam index / /dev/videoN)")
    text = source.strip()
    if text.startswith("lavfi:"):
        graph = text[len("lavfi:"):]
        if not graph:
            raise ConfigError(f"{where}.source 'lavfi:' needs a filter graph, e.g. "
                              "lavfi:testsrc=size=640x360:rate=15")
        for match in re.finditer(r"movie=(?:filename=)?([^:,]+)", graph):
            if not Path(match.group(1)).is_file():
                raise ConfigError(f"{where}.source: clip {match.group(1)!r} of the lavfi movie "
                                  "filter does not exist (it must exist at this path on every node)")
        return text
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() not in NETWORK_SCHEMES:
            raise ConfigError(f"{where}.source: unsupported URL scheme '{scheme}' in {text!r} "
                              f"(supported: {', '.join(NETWORK_SCHEMES)})")
        if not rest.split("/", 1)[0].rpartition("@")[2]:
            raise ConfigError(f"{where}.source: URL {text!r} names no host")
        return text
    if re.fullmatch(r"\d+|/dev/video\d+", text):
        return text
    raise ConfigError(f"{where}.source = {text!r} is not a live camera: use lavfi:GRAPH, "
                      "rtsp://..., http(s)://... or a webcam (N or /dev/videoN); loop a clip with "
                      "lavfi:movie=PATH:loop=0,setpts=N/FRAME_RATE/TB")


def _number(where: str, value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return float(value)


def _camera(index: int, table: Any, settings: FleetSettings, base: Settings) -> CameraSpec:
    where = f"camera[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table ([[camera]]), got {table!r}")
    unknown = sorted(set(table) - set(CAMERA_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(CAMERA_KEYS)})")
    name = table.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{where}.name must be 1-64 letters, digits, '-', '_' or '.' (starting "
                          f"with a letter or digit), got {name!r}")
    where = f"camera '{name}'"
    source = _check_source(where, table.get("source"))
    num_cpus = _number(f"{where}.num_cpus", table.get("num_cpus"), settings.num_cpus)
    num_gpus = _number(f"{where}.num_gpus", table.get("num_gpus"), settings.num_gpus)
    settings.checked("num_cpus", num_cpus, f"{where}.num_cpus")  # the bounds of [fleet]'s defaults
    settings.checked("num_gpus", num_gpus, f"{where}.num_gpus")
    overrides = table.get("set", {})
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}.set must be a table of config keys, got {overrides!r}")
    for key in overrides:
        if key.split(".", 1)[0] == "fleet":
            raise ConfigError(f"{where}.set: '{key}' is a fleet setting; put it in [fleet]")
    try:  # unknown keys and wrong types, named by config.toml's own checks
        base.with_overrides(overrides)
    except ConfigError as exc:
        raise ConfigError(f"{where}.set: {exc}") from None
    spec = CameraSpec(name, source, num_cpus, num_gpus, dict(overrides))
    try:  # the camera's whole configuration, threads from its CPUs included, within every bound
        camera_config(base, spec)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return spec


def parse_fleet(document: Mapping[str, Any], base: Settings) -> FleetSpec:
    """A `FleetSpec` from a parsed FLEET.toml and the base configuration."""
    unknown = sorted(set(document) - {"fleet", "camera"})
    if unknown:
        raise ConfigError(f"FLEET.toml: unknown table '{unknown[0]}' (known: fleet, camera)")
    own = document.get("fleet", {})
    if not isinstance(own, dict):
        raise ConfigError("FLEET.toml: [fleet] must be a table")
    try:  # unknown keys, types and bounds, as config.toml's own
        settings = base.fleet.with_values(**own)
    except ConfigError as exc:
        raise ConfigError(f"FLEET.toml: {exc}") from None
    check_endpoint(settings.publish, "fleet.publish")
    try:  # the aggregated stream's key files, read where `fleet run` starts (as the controller does)
        server_keys(base.zmq)
    except (InputError, InputNotFoundError) as exc:
        raise ConfigError(f"fleet.publish: {exc}") from None
    cameras_raw = document.get("camera", [])
    if not isinstance(cameras_raw, list) or not cameras_raw:
        raise ConfigError("FLEET.toml: no cameras; add at least one [[camera]] with name and source")
    cameras: list[CameraSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(cameras_raw):
        camera = _camera(index, raw, settings, base)
        if camera.name in seen:
            raise ConfigError(f"FLEET.toml: duplicate camera name '{camera.name}' (camera[{seen[camera.name]}] "
                              f"and camera[{index}]); names are the stream topics and must be unique")
        seen[camera.name] = index
        cameras.append(camera)
    check_keys(settings, seen)
    first, last = settings.camera_port_first, settings.camera_port_last
    if last - first + 1 < len(cameras):
        raise ConfigError(f"fleet.camera_port_first..camera_port_last ({first}..{last}) holds "
                          f"{last - first + 1} ports for {len(cameras)} cameras; widen the range")
    return FleetSpec(settings, tuple(cameras), base)


def load_fleet(path: str | Path, base: Settings | None = None) -> FleetSpec:
    """Read and validate FLEET.toml (`base` = the configuration cameras start from)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"fleet file not found: {path}")
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"fleet file {path} is not valid TOML: {exc}") from None
    return parse_fleet(document, base if base is not None else load_config())


def check_resources(spec: FleetSpec, nodes: list[dict[str, float]]) -> None:
    """`nodes`: the total resources of each alive node. A camera that no single node could ever
    hold is an error; cameras that fit a node but not all at once only wait (and are reported)."""
    if not nodes:
        raise ConfigError("the Ray cluster has no alive node")
    max_cpus = max(n.get("CPU", 0.0) for n in nodes)
    max_gpus = max(n.get("GPU", 0.0) for n in nodes)
    for camera in spec.cameras:
        if camera.num_cpus > max_cpus:
            raise ConfigError(f"camera '{camera.name}' asks for num_cpus = {camera.num_cpus:g} but the "
                              f"largest node of the cluster has {max_cpus:g} CPUs")
        if camera.num_gpus > max_gpus:
            raise ConfigError(f"camera '{camera.name}' asks for num_gpus = {camera.num_gpus:g} but the "
                              f"largest node of the cluster has {max_gpus:g} GPUs")
