"""The stage graph, declared once: which stages exist, what runs in each, who feeds whom.

`GRAPH` is the only description of the pipeline's layout. The pipeline turns it into processes and
pipes with `plan()`; the supervisor's restart rules, the frame rings' holder bits, the queue-depth
map, the stage bodies' batch limits and parameters, which stage claims frames from the sources and
which one the sources may decode for all come from here, by the rows' columns, never by a stage's
name. The detect -> pose -> NMS chain is the rows with a `link`: the pipeline runs each in its own
stage, and `chain.PoseChain` (single images, evaluation, the sequential benchmark) runs the same
links in one loop. A stage that is off for a run (the pose stage in one-stage mode) is skipped: its
consumer is fed by its producer directly.

To add a stage, add a row: a body from `stage_bodies` (signature `body(rt, io, **takes)`; `run_link`
for a link of the chain), the stage it reads from, and the columns below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from posestream.stream.core.settings import Settings
from posestream.stream.links import DetectLink, Link, NmsLink, PoseLink
from posestream.stream.stage_bodies import run_link, run_sinks, run_source, run_track


def _always(settings: Settings) -> bool:
    del settings
    return True


def _topdown(settings: Settings) -> bool:
    """The pose stage runs only with a crop-based estimator; one-stage keypoints need no stage."""
    return settings.pose.mode == "topdown"


def setting(settings: Settings, dotted: str) -> Any:
    """The value of a "table.key" column."""
    table, key = dotted.split(".")
    return getattr(getattr(settings, table), key)


def _tracker_reads_pixels(settings: Settings) -> bool:
    """The track stage leases pixels only when the configured tracker's settings want them
    (camera-motion compensation, appearance)."""
    from posestream.stream.core.registry import load_plugin

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
    pixels_when: Callable[[Settings], bool] = _always  # takes its lease only when this says so
    small_pixels: bool = False        # fine with frames decoded at the detector's size (scale_in_decoder)
    link: Callable[[Settings], Link] | None = None  # the chain link it runs (in this order), if any
    threads: str | None = None        # "table.key" of its inference threads (runs a model: not niced)
    takes: tuple[str, ...] = ()       # run-level parameters its body takes besides `io` (Pipeline._params)
    per_source: bool = False          # one process per source
    flush_on_parent_death: bool = False  # when the supervisor dies, finish writing instead of stopping at once
    enabled: Callable[[Settings], bool] = _always


GRAPH: tuple[StageSpec, ...] = (
    StageSpec("source", run_source, None, 1, per_source=True,
              takes=("spec", "stream_id", "policy", "scale_to")),
    StageSpec("detect", run_link, "source", "detector.batch", restartable=True, holder_bit=1,
              small_pixels=True, link=DetectLink, takes=("link",), threads="detector.threads"),
    StageSpec("pose", run_link, "detect", "pose.batch", restartable=True, holder_bit=2, link=PoseLink,
              takes=("link",), threads="pose.threads", enabled=_topdown),
    StageSpec("nms", run_link, "pose", 16, restartable=True, link=NmsLink, takes=("link",)),
    StageSpec("track", run_track, "nms", 16, holder_bit=8, pixels_when=_tracker_reads_pixels,
              small_pixels=True),
    StageSpec("sinks", run_sinks, "track", 16, holder_bit=4, pixels_when_sinks_need=True,
              takes=("sink_specs", "latency_window"), flush_on_parent_death=True),
)


def links(settings: Settings, graph: tuple[StageSpec, ...] = GRAPH) -> list[tuple[str, Callable[[Settings], Link]]]:
    """(stage name, link) of every row that runs a link of the chain for `settings`, in chain order."""
    return [(spec.name, spec.link) for spec in graph if spec.link is not None and spec.enabled(settings)]


@dataclass(frozen=True)
class PlannedStage:
    """One stage process of one run, resolved from its row."""

    name: str
    spec: StageSpec
    inputs: tuple[str, ...]   # names of the planned stages whose output this one reads
    batch: int
    bit: int                  # holder bit this run gives the stage (0: it reads no pixels)
    stream_id: int | None     # per-source stages: which source
    claims: bool = False      # reads pixels straight from the sources: claims each frame first


def plan(settings: Settings, sources: int, sinks_need_pixels: bool,
         graph: tuple[StageSpec, ...] = GRAPH) -> list[PlannedStage]:
    """The stages of one run in graph order: disabled rows left out (their consumers read from
    their producers), per-source rows expanded, batch keys read from `settings`."""
    rows = {spec.name: spec for spec in graph}
    enabled = {spec.name for spec in graph if spec.enabled(settings)}

    def feeding_row(name: str | None) -> StageSpec | None:
        """The enabled row that feeds a stage reading from `name`."""
        while name is not None and name not in enabled:
            name = rows[name].input
        return None if name is None else rows[name]

    def feeders(name: str | None) -> tuple[str, ...]:
        row = feeding_row(name)
        if row is None:
            return ()
        return tuple(f"{row.name}{i}" for i in range(sources)) if row.per_source else (row.name,)

    planned = []
    for spec in graph:
        if spec.name not in enabled:
            continue
        batch = spec.batch if isinstance(spec.batch, int) else int(setting(settings, spec.batch))
        wanted = (sinks_need_pixels or not spec.pixels_when_sinks_need) and spec.pixels_when(settings)
        bit = spec.holder_bit if spec.holder_bit and wanted else 0
        ids: list[int | None] = list(range(sources)) if spec.per_source else [None]
        for i in ids:
            name = spec.name if i is None else f"{spec.name}{i}"
            row = feeding_row(spec.input)
            claims = bool(bit) and row is not None and row.per_source
            planned.append(PlannedStage(name, spec, feeders(spec.input), batch, bit, i, claims))
    consumers: dict[str, str] = {}
    for stage in planned:
        for feeder in stage.inputs:
            if consumers.setdefault(feeder, stage.name) != stage.name:  # a pipe has one reader
                raise ValueError(f"stage graph: {feeder} feeds both {consumers[feeder]} and {stage.name}")
    return planned


def decode_long_side(settings: Settings, stages: list[PlannedStage]) -> int | None:
    """The longest side sources decode frames at: the detector's input size (times the small-people
    zoom when its windows are on: they look closer) when every stage that reads pixels is fine with
    frames that small (`small_pixels`: the detect stage, the track stage's cues;
    `source.scale_in_decoder`), else None (full size)."""
    readers = [stage.spec for stage in stages if stage.bit]
    if settings.source.scale_in_decoder and readers and all(spec.small_pixels for spec in readers):
        small = settings.small_people
        zoom = small.zoom if small.enabled else 1.0
        return int(round(settings.detector.input_size * zoom))
    return None


def inference_threads(settings: Settings, stages: list[PlannedStage]) -> int:
    """The threads the run's model stages ask for together."""
    return sum(int(setting(settings, stage.spec.threads)) for stage in stages if stage.spec.threads)


def holders(stages: list[PlannedStage]) -> int:
    """The holder mask a source publishes each frame with: every stage that will read its pixels."""
    mask = 0
    for stage in stages:
        mask |= stage.bit
    return mask
