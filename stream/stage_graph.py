"""The stage graph, declared once: which stages exist, what runs in each, who feeds whom.

`GRAPH` is the only description of the pipeline's layout. The pipeline turns it into processes and
pipes with `plan()`; the supervisor's restart rules, the frame rings' holder bits, the queue-depth
map and the stage bodies' batch limits all come from here. A stage that is off for a run (the
pose stage in one-stage mode) is skipped: its consumer is fed by its producer directly.

To add a stage, add a row: a body from `stage_bodies` (signature `body(rt, io, **extra)`), the
stage it reads from, and the columns below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from posestream.stream.chain import POSE_MODES
from posestream.stream.core.config import Config, check_choice
from posestream.stream.stage_bodies import (run_detect, run_nms, run_pose, run_sinks, run_source,
                                            run_track)


def _always(config: Config) -> bool:
    del config
    return True


def _topdown(config: Config) -> bool:
    """The pose stage runs only with a crop-based estimator; one-stage keypoints need no stage."""
    check_choice("pose.mode", config["pose"]["mode"], POSE_MODES)
    return config["pose"]["mode"] == "topdown"


def _tracker_reads_pixels(config: Config) -> bool:
    """The track stage leases pixels only when the configured tracker's settings want them
    (camera-motion compensation, appearance)."""
    from posestream.stream.core.registry import load_plugin
    from posestream.stream.core.settings import Settings

    settings = Settings.from_config(config)
    return bool(load_plugin("posestream.trackers", settings.tracker.plugin).reads_pixels(settings))


@dataclass(frozen=True)
class StageSpec:
    """One row of the graph."""

    name: str                         # stage name; per-source stages are named name0, name1, ...
    body: Callable[..., None]         # module-level function run in the stage's process
    input: str | None                 # the stage this one reads from (None: reads no pipe)
    batch: int | str                  # most messages taken at once, or the "table.key" that says
    restartable: bool = False         # stateless: may be restarted after a crash (restart policy allowing)
    holder_bit: int = 0               # lease bit on the frame rings; 0: reads no pixels
    pixels_when_sinks_need: bool = False  # takes its lease only when a sink of the run needs pixels
    pixels_when: Callable[[Config], bool] = _always  # takes its lease only when this says so
    small_pixels: bool = False        # fine with frames decoded at the detector's size (scale_in_decoder)
    model: bool = False               # runs inference: not niced (light stages yield to it)
    per_source: bool = False          # one process per source
    enabled: Callable[[Config], bool] = _always


GRAPH: tuple[StageSpec, ...] = (
    StageSpec("source", run_source, None, 1, per_source=True),
    StageSpec("detect", run_detect, "source", "detector.batch", restartable=True, holder_bit=1,
              model=True, small_pixels=True),
    StageSpec("pose", run_pose, "detect", "pose.batch", restartable=True, holder_bit=2, model=True,
              enabled=_topdown),
    StageSpec("nms", run_nms, "pose", 16, restartable=True),
    StageSpec("track", run_track, "nms", 16, holder_bit=8, pixels_when=_tracker_reads_pixels,
              small_pixels=True),
    StageSpec("sinks", run_sinks, "track", 16, holder_bit=4, pixels_when_sinks_need=True),
)


@dataclass(frozen=True)
class PlannedStage:
    """One stage process of one run, resolved from its row."""

    name: str
    spec: StageSpec
    inputs: tuple[str, ...]   # names of the planned stages whose output this one reads
    batch: int
    bit: int                  # holder bit this run gives the stage (0: it reads no pixels)
    stream_id: int | None     # per-source stages: which source


def plan(config: Config, sources: int, sinks_need_pixels: bool,
         graph: tuple[StageSpec, ...] = GRAPH) -> list[PlannedStage]:
    """The stages of one run in graph order: disabled rows left out (their consumers read from
    their producers), per-source rows expanded, batch keys read from `config`."""
    rows = {spec.name: spec for spec in graph}
    enabled = {spec.name for spec in graph if spec.enabled(config)}

    def feeders(name: str | None) -> tuple[str, ...]:
        if name is None:
            return ()
        spec = rows[name]
        if name not in enabled:
            return feeders(spec.input)
        return tuple(f"{name}{i}" for i in range(sources)) if spec.per_source else (name,)

    planned = []
    for spec in graph:
        if spec.name not in enabled:
            continue
        batch = spec.batch
        if isinstance(batch, str):
            table, key = batch.split(".")
            batch = int(config[table][key])
        wanted = (sinks_need_pixels or not spec.pixels_when_sinks_need) and spec.pixels_when(config)
        bit = spec.holder_bit if spec.holder_bit and wanted else 0
        ids: list[int | None] = list(range(sources)) if spec.per_source else [None]
        for i in ids:
            name = spec.name if i is None else f"{spec.name}{i}"
            planned.append(PlannedStage(name, spec, feeders(spec.input), batch, bit, i))
    consumers: dict[str, str] = {}
    for stage in planned:
        for feeder in stage.inputs:
            if consumers.setdefault(feeder, stage.name) != stage.name:  # a pipe has one reader
                raise ValueError(f"stage graph: {feeder} feeds both {consumers[feeder]} and {stage.name}")
    return planned


def decode_long_side(config: Config, stages: list[PlannedStage]) -> int | None:
    """The longest side sources decode frames at: the detector's input size (times the small-people
    zoom when its windows are on: they look closer) when every stage that reads pixels is fine with
    frames that small (the detect stage, the track stage's cues; `source.scale_in_decoder`), else
    None (full size)."""
    readers = [stage.spec for stage in stages if stage.bit]
    if config["source"]["scale_in_decoder"] and readers and all(spec.small_pixels for spec in readers):
        small = config["small_people"]
        zoom = float(small["zoom"]) if small["enabled"] else 1.0
        return int(round(int(config["detector"]["input_size"]) * zoom))
    return None


def holders(stages: list[PlannedStage]) -> int:
    """The holder mask a source publishes each frame with: every stage that will read its pixels."""
    mask = 0
    for stage in stages:
        mask |= stage.bit
    return mask
