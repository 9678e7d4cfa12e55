"""Connecting to Ray and reaching the fleet's controller; the one place that calls `ray.init`.

Ray is asked for as little as possible: no dashboard, no usage statistics, and a local cluster
(when no address is given) bound to loopback only.
"""
from __future__ import annotations

import os
from typing import Any

from posestream.stream.client import is_loopback, warn_if_exposed
from posestream.stream.core.errors import ConfigError, PosestreamError, StageError
from posestream.stream.fleet.controller import CONTROLLER_NAME, FleetController
from posestream.stream.fleet.spec import FleetSpec, check_resources


def _ray(loopback: bool = False) -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if loopback:
        # Ray replaces 127.0.0.1 by the machine's routable address unless this is off; off, a
        # local cluster binds and advertises loopback only.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ModuleNotFoundError:
        raise ConfigError("the fleet needs Ray: pip install 'posestream[fleet]'") from None
    return ray


def connect(address: str | None, namespace: str) -> Any:
    """Join the cluster at `address` (as `ray.init` accepts it, e.g. `auto` or `HOST:6379`), or start
    a local one on loopback when `address` is None. Returns the `ray` module."""
    ray = _ray(loopback=address is None)
    try:
        if address is None:
            ray.init(address="local", namespace=namespace, include_dashboard=False,
                     _node_ip_address="127.0.0.1", configure_logging=False)
        else:
            ray.init(address=address, namespace=namespace, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        hint = ("" if os.environ.get("RAY_AUTH_MODE") else "; a cluster from `ray start` uses token "
                "authentication: set RAY_AUTH_MODE=token, with its token in ~/.ray/auth_token or "
                "RAY_AUTH_TOKEN")
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {exc}{hint}") from None
    return ray


def alive_node_resources(ray: Any) -> list[dict[str, float]]:
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def warn_if_plain(ray: Any, spec: FleetSpec) -> None:
    """`fleet.curve = false` is the user's explicit choice; say once where plain streams go."""
    if spec.settings.curve:
        return
    hosts = {spec.settings.camera_host} if spec.settings.camera_host else {
        node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")}
    endpoints = [f"tcp://{f'[{h}]' if ':' in h else h}:{spec.settings.camera_port_first}"
                 for h in sorted(hosts)]
    for endpoint in [e for e in endpoints if not is_loopback(e)][:1]:  # once is enough
        warn_if_exposed(endpoint, False, "fleet camera streams (fleet.curve = false)",
                        "fleet.curve = true")


def unwrap(ray: Any, exc: BaseException) -> BaseException:
    """A posestream error raised inside an actor, as itself (Ray wraps it in `RayTaskError`)."""
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, PosestreamError):
        return cause
    return exc


def start_controller(ray: Any, spec: FleetSpec) -> tuple[Any, str]:
    """Check the cameras' resource requests against the cluster, then create the named controller
    on this node and start it. Returns (controller handle, aggregated stream address)."""
    check_resources(spec, alive_node_resources(ray))
    warn_if_plain(ray, spec)
    namespace = spec.settings.namespace
    try:
        ray.get_actor(CONTROLLER_NAME, namespace=namespace)
    except ValueError:
        pass
    else:
        raise ConfigError(f"a fleet is already running in Ray namespace '{namespace}'; stop it with "
                          "`posestream fleet stop` first")
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    controller = ray.remote(FleetController).options(
        name=CONTROLLER_NAME, namespace=namespace, num_cpus=0, max_concurrency=8, max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(spec)
    try:
        publish = ray.get(controller.start.remote())
    except ray.exceptions.RayError as exc:
        ray.kill(controller)
        raise unwrap(ray, exc) from None
    return controller, publish


def find_controller(ray: Any, namespace: str) -> Any:
    try:
        return ray.get_actor(CONTROLLER_NAME, namespace=namespace)
    except ValueError:
        raise StageError(f"no fleet is running in Ray namespace '{namespace}' on this cluster") from None
