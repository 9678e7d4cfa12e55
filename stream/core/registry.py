"""Resolve plugins by name through entry-point groups.

Built-ins register in `setup.py` like any third-party package, so there is one mechanism. An unknown
name raises `PluginNotFoundError` listing the names that are registered; `load_plugin` also refuses a
class that does not implement its group's contract (`stream.core.contracts`).
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from posestream.stream.core.contracts import CONTRACTS
from posestream.stream.core.errors import PluginNotFoundError

GROUPS = ("posestream.detectors", "posestream.pose", "posestream.trackers", "posestream.sinks")


def available(group: str) -> list[str]:
    """Names registered in `group`, sorted."""
    return sorted({ep.name for ep in entry_points(group=group)})


def load(group: str, name: str) -> Any:
    """The object registered as `name` in `group` (usually a class or factory)."""
    matches = [ep for ep in entry_points(group=group) if ep.name == name]
    if not matches:
        valid = ", ".join(available(group)) or "none registered - is posestream installed?"
        kind = group.rsplit(".", 1)[-1]
        raise PluginNotFoundError(f"unknown {kind} plugin '{name}' (valid: {valid})")
    return matches[0].load()


def load_plugin(group: str, name: str) -> type:
    """The plugin class registered as `name` in `group`, checked against the group's contract."""
    cls = load(group, name)
    contract = CONTRACTS[group]
    if not (isinstance(cls, type) and issubclass(cls, contract)):
        kind = group.rsplit(".", 1)[-1]
        raise PluginNotFoundError(f"{kind} plugin '{name}' ({cls!r}) does not implement "
                                  f"posestream.stream.core.contracts.{contract.__name__}")
    return cls
