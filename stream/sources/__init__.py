"""Frame sources: video files, image folders and lists, webcams, network cameras, lavfi tests.

`open_source(spec, config)` picks the kind from the spec; every source is a context manager with
`.info` (a `SourceInfo`), `.stats` (a `SourceStats`) and `.frames()` (an iterator of `Frame`).
"""
from posestream.stream.sources.base import Frame, Source, SourceInfo, SourceSettings, SourceStats
from posestream.stream.sources.spec import open_source

__all__ = ["Frame", "Source", "SourceInfo", "SourceSettings", "SourceStats", "open_source"]
