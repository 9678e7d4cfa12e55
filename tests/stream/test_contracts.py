"""Plugins implement their kind's contract; the registry refuses classes that do not."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.stream.core import registry
from posestream.stream.core.contracts import CONTRACTS, IdAllocator, Sink, Tracker
from posestream.stream.core.errors import PluginNotFoundError
from posestream.stream.core.results import Poses


@pytest.mark.parametrize("group", sorted(CONTRACTS))
def test_every_builtin_plugin_implements_its_contract(group):
    names = registry.available(group)
    assert names, group
    for name in names:
        cls = registry.load_plugin(group, name)
        assert issubclass(cls, CONTRACTS[group]) and not getattr(cls, "__abstractmethods__", None), name
        if group == "posestream.sinks":
            assert isinstance(cls.needs_pixels, bool), name


def test_a_sink_without_needs_pixels_cannot_be_defined():
    with pytest.raises(TypeError, match="must set the class attribute needs_pixels"):
        class Quiet(Sink):  # noqa: F841
            def write(self, result, frame): ...
            def end_stream(self, stream, last_frame): ...
            def close(self): ...


def test_a_sink_without_end_stream_cannot_be_made():
    class Partial(Sink):
        needs_pixels = False

        def write(self, result, frame): ...
        def close(self): ...

    with pytest.raises(TypeError, match="end_stream"):
        Partial()


def test_the_registry_refuses_a_class_outside_the_contract(monkeypatch):
    class NotATracker:
        def update(self, poses: Poses) -> Poses:
            return poses

    monkeypatch.setattr(registry, "load", lambda group, name: NotATracker)
    with pytest.raises(PluginNotFoundError, match="does not implement .*contracts.Tracker"):
        registry.load_plugin("posestream.trackers", "odd")


def test_trackers_share_one_constructor():
    from posestream.stream.core.config import load_config

    ids = IdAllocator()
    poses = Poses(np.array([[10.0, 10, 20, 40]]), np.ones(1), np.full((1, 17, 3), 0.9), np.ones(1))
    for name in registry.available("posestream.trackers"):
        tracker = registry.load_plugin("posestream.trackers", name)(load_config(), ids)
        assert isinstance(tracker, Tracker)
        assert len(tracker.update(poses)) == 1
