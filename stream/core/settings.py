"""Typed, frozen, validated settings: one class per `config.toml` table, each bound declared once.

Defaults (and the one-line comment per key) live in `config.toml`; this module declares each key's
type and its allowed values next to the field (`bound(low, high, multiple_of=...)`, `choice(...)`),
and cross-key rules in the table's `check()`. `load_config` parses every table through here, so a bad
value fails at start-up with one `ConfigError` that names the key and what is allowed, e.g.

    config key 'detector.input_size' = 700 must be a multiple of 32 in [64, 4096]

`Settings` is the one configuration object that flows: plugins, engines and (pickled) every stage
process read it (`settings.detector.input_size`); `with_overrides` makes a changed copy, and
`Table.checked` checks a value taken from a flag against the field's bound. Adding a key: add it to
`config.toml` with its comment and a field here (with its bound); nothing else.
"""
from __future__ import annotations

import json
import re
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Mapping, TypeVar

from posestream.stream.core.errors import ConfigError

T = TypeVar("T", bound="Table")

POSE_MODES = ("onestage", "topdown")
REFINEMENTS = ("none", "dark")
LANDMARK_FORMATS = ("coco17", "halpe26", "halpe136", "blazepose33")
LANDMARK_MERGES = ("none", "confident", "average")
PREPROCESS_MODES = ("auto", "numpy", "torch")
PRECISIONS = ("fp16", "fp32", "int8")
RTSP_TRANSPORTS = ("tcp", "udp", "udp_multicast", "http", "https")
CAMERA_MOTION = ("off", "flow")  # tracker.camera_motion
NMS_KINDS = ("parametric", "oks", "none")
VIDEO_CODECS = ("libx264", "mpeg4")
VIDEO_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                 "veryslow")
POLICIES = ("auto", "live", "offline")
RESTART_POLICIES = ("never", "live", "always")
BENCH_SINKS = ("json", "zmq", "video", "none")
MAX_BATCH_LIMIT = 1024  # largest batch any batch setting (and a TensorRT profile) may ask for
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_range(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise a `ConfigError` naming the key and its allowed range when `value` is outside it."""
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ConfigError(f"config key '{name}' = {value!r} is outside the allowed range [{lo}, {hi}]")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise a `ConfigError` listing the valid choices when `value` is not one of them."""
    if value not in choices:
        raise ConfigError(f"config key '{name}' = {value!r} is not one of: {', '.join(choices)}")


@dataclass(frozen=True)
class _Rule:
    low: float | None = None
    high: float | None = None
    multiple_of: int | None = None
    choices: tuple[str, ...] = ()

    def check(self, name: str, value: Any) -> None:
        if self.choices:
            check_choice(name, value, self.choices)
            return
        if self.multiple_of and (value % self.multiple_of or not
                                 (self.low is None or value >= self.low) or not
                                 (self.high is None or value <= self.high)):
            raise ConfigError(f"config key '{name}' = {value!r} must be a multiple of "
                              f"{self.multiple_of} in [{self.low}, {self.high}]")
        check_range(name, value, self.low, self.high)


def bound(low: float | None = None, high: float | None = None, *, multiple_of: int | None = None) -> Any:
    """A numeric key's allowed range (inclusive; None = open)."""
    return field(metadata={"rule": _Rule(low, high, multiple_of)})


def choice(*choices: str) -> Any:
    """A string key that must be one of `choices`."""
    return field(metadata={"rule": _Rule(choices=choices)})


def _kind(kind: type) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            list: "a list"}[kind]


@dataclass(frozen=True)
class Table:
    """Base of the per-table settings: parses a raw table once and checks every key."""

    section: ClassVar[str] = ""

    @classmethod
    def parse(cls: type[T], raw: Mapping[str, Any]) -> T:
        """The table from a raw `config.toml` table; unknown, missing or mistyped keys are errors."""
        _check_known(raw, sorted(f.name for f in fields(cls)), f"{cls.section}.")
        for f in fields(cls):
            if f.name not in raw:
                raise ConfigError(f"config key '{cls.section}.{f.name}' is missing "
                                  "(is config.toml from this version?)")
        return cls._build(raw)

    @classmethod
    def _build(cls: type[T], raw: Mapping[str, Any]) -> T:
        _check_known(raw, sorted(f.name for f in fields(cls)), f"{cls.section}.")
        table = cls(**{key: cls.checked(key, value) for key, value in raw.items()})
        table.check()
        return table

    @classmethod
    def checked(cls, key: str, value: Any, name: str = "") -> Any:
        """`value` for `key` once its type and declared bound are checked (an int becomes a float
        where the field is a float): for the file, `--set`, and code that takes a value from a flag
        or an API argument, so the bound still lives only on the field. `name`: what the message
        calls the value (default `table.key`)."""
        f = next(f for f in fields(cls) if f.name == key)
        name, kind = name or f"{cls.section}.{key}", typing.get_type_hints(cls)[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise ConfigError(f"config key '{name}' must be {_kind(kind)}, got {value!r}")
        rule = f.metadata.get("rule")
        if rule is not None:
            rule.check(name, value)
        return value

    def with_values(self: T, **values: Any) -> T:
        """A new table with `values` replaced, each checked as the file's are, then the table's rules."""
        return self._build({**{f.name: getattr(self, f.name) for f in fields(self)}, **values})

    def check(self) -> None:
        """Rules between keys of the table (a single key's bound sits on its field)."""


@dataclass(frozen=True)
class PathsSettings(Table):
    section: ClassVar[str] = "paths"
    home: str
    shared: str


@dataclass(frozen=True)
class ModelSettings(Table):
    section: ClassVar[str] = "model"
    name: str
    wheel: str
    checkpoint: str
    opset: int = bound(7, 21)

    def check(self) -> None:
        if not self.name:
            raise ConfigError("config key 'model.name' must not be empty")


@dataclass(frozen=True)
class EngineSettings(Table):
    """`backend` is checked against the engine factory's table when an engine is made (the core
    does not know which backends exist); `device` is cpu, cuda or cuda:N."""

    section: ClassVar[str] = "engine"
    backend: str
    device: str
    precision: str = choice("int8", "fp32")  # CPU precision with OpenVINO (engines.quantize)
    openvino_hint: str = choice("throughput", "latency")
    openvino_requests: int = bound(1, 16)
    intra_op_threads: int = bound(0, 256)
    preprocess: str = choice(*PREPROCESS_MODES)

    def check(self) -> None:
        if not _DEVICE.match(self.device):
            raise ConfigError(f"config key 'engine.device' = {self.device!r} is not cpu, cuda or cuda:N")


@dataclass(frozen=True)
class QuantizeSettings(Table):
    """How `posestream models prepare|quantize` builds the INT8 model (engines.quantize)."""

    section: ClassVar[str] = "quantize"
    assets_wheel: str
    assets: list
    demo_frames: int = bound(0, 1000)
    mosaics: int = bound(0, 100)
    lighting: bool
    images: int = bound(1, 10_000)
    preset: str = choice("mixed", "performance")
    head_in_float: bool
    outputs_in_float: int = bound(0, 2)
    attention_in_float: bool
    fast_bias_correction: bool
    activation_ranges: str = choice("minmax", "histogram")
    overflow_fix: str = choice("auto", "first_layer", "disable")


@dataclass(frozen=True)
class DetectorSettings(Table):
    section: ClassVar[str] = "detector"
    plugin: str
    input_size: int = bound(64, 4096, multiple_of=32)
    rectangular: bool
    score_threshold: float = bound(0.0, 1.0)
    iou_threshold: float = bound(0.0, 1.0)
    max_persons: int = bound(1, 10_000)
    batch: int = bound(1, 256)
    threads: int = bound(0, 256)


@dataclass(frozen=True)
class SmallPeopleSettings(Table):
    """Zoom windows where a stream's people are small (`stream.small_people`)."""

    section: ClassVar[str] = "small_people"
    enabled: bool
    zoom: float = bound(1.25, 8.0)
    small_height: float = bound(1.0, 4096.0)
    hint_score: float = bound(0.0, 1.0)
    memory: int = bound(1, 100_000)
    scan_every: int = bound(1, 100_000)
    mosaic_columns: int = bound(1, 8)
    mosaic_rows: int = bound(1, 8)
    max_mosaics: int = bound(1, 64)


@dataclass(frozen=True)
class ZmqSettings(Table):
    """The endpoint's syntax and the CURVE key files are checked by the zmq sink when it binds."""

    section: ClassVar[str] = "zmq"
    endpoint: str
    hwm: int = bound(1, 1_000_000)
    sndbuf: int = bound(0, 1 << 30)
    linger_ms: int = bound(0, 60_000)
    wait_for_subscriber_s: float = bound(0.0, 60.0)
    heartbeat_s: float = bound(0.01, 3600)
    curve: bool
    server_secret_key: str
    allowed_clients: str
    client_secret_key: str
    server_public_key: str
    epoch: int = bound(0, 2**62)


@dataclass(frozen=True)
class WebSettings(Table):
    """The web viewer sink; a `web:HOST:PORT` target overrides host and port."""

    section: ClassVar[str] = "web"
    host: str
    port: int = bound(0, 65535)
    token: str
    max_fps: float = bound(0.1, 60.0)
    jpeg_quality: int = bound(1, 100)
    max_width: int = bound(64, 7680)
    health_stale_s: float = bound(0.5, 3600.0)

    def check(self) -> None:
        if not self.host:
            raise ConfigError("config key 'web.host' is empty (127.0.0.1 serves this machine only)")


@dataclass(frozen=True)
class TensorRTSettings(Table):
    """The `[tensorrt]` table of the TensorRT backend (`engines.backends.engine_cache` makes the
    batch profile and cache paths of it)."""

    section: ClassVar[str] = "tensorrt"
    precision: str = choice(*PRECISIONS)
    workspace_mib: int = bound(16, 1 << 20)
    min_batch: int = bound(1, MAX_BATCH_LIMIT)
    opt_batch: int = bound(1, MAX_BATCH_LIMIT)
    max_batch: int = bound(1, MAX_BATCH_LIMIT)
    max_input_size: int = bound(32, 16384)
    calibration_images: str
    calibration_max_images: int = bound(1, 100_000)
    calibration_batch: int = bound(1, MAX_BATCH_LIMIT)
    cache_dir: str

    def check(self) -> None:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"config keys tensorrt.min_batch, opt_batch, max_batch = {self.min_batch}, "
                              f"{self.opt_batch}, {self.max_batch}: the batch profile needs min <= opt <= max")

    @property
    def workspace_bytes(self) -> int:
        return self.workspace_mib << 20

    @property
    def max_hw(self) -> tuple[int, int]:
        return self.max_input_size, self.max_input_size


@dataclass(frozen=True)
class TorchSettings(Table):
    """The `[torch]` table of the torch backend (`engines.backends.torch_engine`)."""

    section: ClassVar[str] = "torch"
    precision: str = choice("auto", "fp32", "fp16")
    cuda_graphs: bool
    compile: bool
    max_graphs: int = bound(0, 256)
    checkpoint: str


@dataclass(frozen=True)
class TrackerSettings(Table):
    section: ClassVar[str] = "tracker"
    plugin: str
    high_score: float = bound(0.0, 1.0)
    low_score: float = bound(0.0, 1.0)
    new_track_score: float = bound(0.0, 1.0)
    first_frame_score: float = bound(0.0, 1.0)
    match_similarity: float = bound(0.0, 1.0)
    low_match_similarity: float = bound(0.0, 1.0)
    reid_similarity: float = bound(0.0, 1.0)
    oks_weight: float = bound(0.0)
    iou_weight: float = bound(0.0)
    keypoint_score: float = bound(0.0, 1.0)
    min_hits: int = bound(1, 1000)
    lost_buffer: int = bound(0, 100_000)
    kalman_position_std: float = bound(1e-6, 10.0)
    kalman_velocity_std: float = bound(1e-6, 10.0)
    camera_motion: str = choice(*CAMERA_MOTION)
    appearance_weight: float = bound(0.0, 1.0)
    appearance_sigma: float = bound(0.1, 200.0)
    appearance_momentum: float = bound(0.0, 1.0)

    def check(self) -> None:
        for low, high in (("low_score", "high_score"), ("high_score", "new_track_score"),
                          ("new_track_score", "first_frame_score")):
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(f"config key 'tracker.{low}' ({getattr(self, low)}) must not exceed "
                                  f"tracker.{high} ({getattr(self, high)})")
        if self.oks_weight + self.iou_weight <= 0:
            raise ConfigError("config keys tracker.oks_weight + tracker.iou_weight must be > 0")


@dataclass(frozen=True)
class SourceSettings(Table):
    section: ClassVar[str] = "source"
    rtsp_transport: str = choice(*RTSP_TRANSPORTS)
    connect_timeout_s: float = bound(0.1, 600)
    read_timeout_s: float = bound(0.1, 600)
    probe_s: float = bound(0.0, 60)
    reconnect_initial_s: float = bound(0.01, 600)
    reconnect_max_s: float = bound(0.01, 3600)
    decode_threads: int = bound(0, 64)
    webcam_width: int = bound(0, 16384)
    webcam_height: int = bound(0, 16384)
    webcam_fps: float = bound(0, 1000)
    webcam_fourcc: str
    lavfi_realtime: bool
    scale_in_decoder: bool

    def check(self) -> None:
        check_range("source.reconnect_max_s", self.reconnect_max_s, self.reconnect_initial_s, 3600)
        if self.webcam_fourcc and len(self.webcam_fourcc) != 4:
            raise ConfigError("config key 'source.webcam_fourcc' must be 4 characters (e.g. MJPG) "
                              f"or empty, got {self.webcam_fourcc!r}")


@dataclass(frozen=True)
class PoseSettings(Table):
    section: ClassVar[str] = "pose"
    mode: str = choice(*POSE_MODES)
    plugin: str
    model: str
    box_expand: float = bound(1.0, 3.0)
    batch: int = bound(1, 256)
    threads: int = bound(0, 256)
    flip_test: bool
    refine: str = choice(*REFINEMENTS)
    min_box_score: float = bound(0.0, 1.0)
    landmark_format: str = choice(*LANDMARK_FORMATS)
    landmark_merge: str = choice(*LANDMARK_MERGES)
    landmark_min_presence: float = bound(0.0, 1.0)
    wholebody_min_size: float = bound(0.0, 100000.0)
    wholebody_min_flag: float = bound(0.0, 1.0)


@dataclass(frozen=True)
class PoseNmsSettings(Table):
    section: ClassVar[str] = "pose_nms"
    kind: str = choice(*NMS_KINDS)
    delta1: float = bound(1e-9)
    mu: float = bound(0.0)
    delta2: float = bound(1e-9)
    gamma: float = bound(0.0)
    score_threshold: float = bound(0.0)
    match_threshold: int = bound(1)
    alpha: float = bound(1e-9)
    area_threshold: float = bound(0.0)
    oks_threshold: float = bound(0.0, 1.0)
    keypoint_score: float = bound(0.0, 1.0)


@dataclass(frozen=True)
class SinkSettings(Table):
    section: ClassVar[str] = "sinks"
    json_flush_every: int = bound(1, 1000)
    video_codec: str = choice(*VIDEO_CODECS)
    video_crf: int = bound(0, 51)
    video_preset: str = choice(*VIDEO_PRESETS)
    video_fps: float = bound(0.0, 1000.0)
    video_threads: int = bound(0, 64)
    images_quality: int = bound(1, 100)
    window_name: str
    render_kpt_threshold: float = bound(0.0, 1.0)
    render_boxes: bool
    render_ids: bool
    video_fragmented: bool  # fragmented MP4: playable when writing stops early
    on_error: str = choice("stop", "continue")  # a sink that cannot write: stop the run | go on without it


@dataclass(frozen=True)
class PipelineSettings(Table):
    """The `[pipeline]` table; `ring_slots` bounds the frames in flight per source."""

    section: ClassVar[str] = "pipeline"
    policy: str = choice(*POLICIES)
    ring_slots: int = bound(2, 256)
    pipe_bytes: int = bound(0, 1 << 20)
    heartbeat_interval_s: float = bound(0.01, 10)
    heartbeat_timeout_s: float = bound(0.02, 3600)
    startup_timeout_s: float = bound(1, 3600)
    restart: str = choice(*RESTART_POLICIES)
    max_restarts: int = bound(0, 100)
    drain_timeout_s: float = bound(0, 3600)
    abort_timeout_s: float = bound(0, 600)
    kill_timeout_s: float = bound(0.1, 600)
    status_interval_s: float = bound(0.1, 3600)
    latency_window: int = bound(10, 10_000_000)
    light_stage_nice: int = bound(0, 19)
    live_newest_only: bool
    strict: bool  # `posestream run`: an input that lost frames makes the run exit 3

    def check(self) -> None:
        check_range("pipeline.heartbeat_timeout_s", self.heartbeat_timeout_s,
                    2 * self.heartbeat_interval_s, 3600)


@dataclass(frozen=True)
class BenchSettings(Table):
    section: ClassVar[str] = "bench"
    frames: int = bound(1, 10_000_000)
    live_seconds: float = bound(0, 86_400)
    live_fps: float = bound(0, 1000)
    trend_window_s: float = bound(0.1, 86_400)
    sink: str = choice(*BENCH_SINKS)
    repeat: int = bound(1, 100)


@dataclass(frozen=True)
class FleetSettings(Table):
    """The `[fleet]` table (`posestream fleet`, docs/fleet.md); FLEET.toml's `[fleet]` overrides it."""

    section: ClassVar[str] = "fleet"
    publish: str
    camera_host: str
    camera_port_first: int = bound(1024, 65535)
    camera_port_last: int = bound(1024, 65535)
    num_cpus: float = bound(0.01, 1024)
    num_gpus: float = bound(0, 64)
    status_interval_s: float = bound(0.1, 3600)
    stats_window_s: float = bound(1, 3600)
    restart_initial_s: float = bound(0.1, 600)
    restart_max_s: float = bound(0.1, 3600)
    stable_s: float = bound(1, 86_400)
    actor_timeout_s: float = bound(2, 3600)
    unavailable_s: float = bound(0.5, 3600)
    lease_s: float = bound(0.5, 3600)
    stop_timeout_s: float = bound(1, 3600)
    namespace: str
    curve: bool
    keys: str

    def check(self) -> None:
        check_range("fleet.camera_port_last", self.camera_port_last, self.camera_port_first, 65535)
        check_range("fleet.restart_max_s", self.restart_max_s, self.restart_initial_s, 3600)
        # The controller replaces a silent camera only after the camera has fenced itself.
        for key in ("unavailable_s", "actor_timeout_s"):
            if getattr(self, key) <= self.lease_s:
                raise ConfigError(f"fleet.{key} = {getattr(self, key):g} must be greater than "
                                  f"fleet.lease_s = {self.lease_s:g} (a replaced camera must have "
                                  "stopped first)")
        if not self.namespace:
            raise ConfigError("config key 'fleet.namespace' must not be empty")


@dataclass(frozen=True)
class Settings:
    """Every table of a config, parsed and checked once: the one configuration object that flows
    (to plugins, engines and, pickled, to every stage process). Frozen: `with_overrides` makes a
    changed copy, checked as the file is."""

    paths: PathsSettings
    model: ModelSettings
    engine: EngineSettings
    quantize: QuantizeSettings
    detector: DetectorSettings
    small_people: SmallPeopleSettings
    zmq: ZmqSettings
    web: WebSettings
    tensorrt: TensorRTSettings
    torch: TorchSettings
    tracker: TrackerSettings
    source: SourceSettings
    pose: PoseSettings
    pose_nms: PoseNmsSettings
    sinks: SinkSettings
    pipeline: PipelineSettings
    bench: BenchSettings
    fleet: FleetSettings

    @classmethod
    def from_config(cls, config: Mapping[str, Mapping[str, Any]]) -> "Settings":
        """Parse every table of a whole `config.toml` document; the first bad key raises one
        `ConfigError`."""
        hints = typing.get_type_hints(cls)
        _check_known(config, [f.name for f in fields(cls)], "")
        for name, table in config.items():
            if not isinstance(table, Mapping):
                raise ConfigError(f"config key '{name}' must be a table, got {table!r}")
        return cls(**{f.name: hints[f.name].parse(config.get(f.name, {})) for f in fields(cls)})

    def to_json(self) -> str:
        """Its own serialisation, for a process that is not a `spawn` child (the fleet's camera
        pipelines get theirs over a pipe); `from_json` parses and checks it again."""
        return json.dumps({f.name: asdict(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> "Settings":
        return cls.from_config(json.loads(text))

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Settings":
        """A new `Settings` with dotted keys replaced (`{"detector.input_size": 320}`) or whole
        tables merged (`{"detector": {"input_size": 320}}`, as a user's config file has them)."""
        by_table: dict[str, dict[str, Any]] = {}
        names = [f.name for f in fields(self)]
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            _check_known({section: None}, names, "")
            if key:
                if "." in key:
                    raise ConfigError(f"unknown config key '{dotted}' (tables are one level deep)")
                by_table.setdefault(section, {})[key] = value
            elif isinstance(value, Mapping):
                by_table.setdefault(section, {}).update(value)
            else:
                raise ConfigError(f"config key '{section}' must be a table, got {value!r}")
        return replace(self, **{section: getattr(self, section).with_values(**values)
                                for section, values in by_table.items()})


def _check_known(given: Mapping[str, Any], names: list[str], where: str) -> None:
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key '{where}{unknown[0]}' (known here: {', '.join(names)})")
