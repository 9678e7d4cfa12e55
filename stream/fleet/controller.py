"""The fleet controller: a named Ray actor on the node where `posestream fleet run` was started.

It creates one camera actor per camera (Ray places each by its `num_cpus`/`num_gpus`, spread over
the nodes), runs the aggregator, and watches every camera actor with one outstanding `status()`
call each. A camera actor that dies (its node left the cluster) or stays silent longer than
`fleet.actor_timeout_s` is killed and created again; Ray places the new one on the nodes that
remain, or it waits, reported as "waiting for resources", until some node can hold it. The
controller is named, so `posestream fleet status` and `fleet stop` reach it from any process
connected to the cluster. Ray carries only these small control calls and public keys; frames stay
on their node, and the camera streams into the aggregator are CURVE-authenticated (`fleet.keys`).

A replaced actor's node is avoided for new cameras until a probe task there finishes: after a
partition Ray still lists the node as alive, and only a node that runs the probe is reachable again.
A camera is replaced only after its lease (`fleet.lease_s`) has run out, so it has stopped itself;
an actor whose lease ran out never starts its pipeline again, so one that answers "fenced" (the
controller was slow, not cut off) is replaced too.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from posestream.stream.fleet.actor import CameraActor
from posestream.stream.fleet.aggregator import Aggregator
from posestream.stream.fleet.keys import aggregator_keys, pinned_key
from posestream.stream.fleet.spec import CameraSpec, FleetSpec
from posestream.stream.fleet.status import CameraStatus

log = logging.getLogger(__name__)

CONTROLLER_NAME = "posestream-fleet"
TICK_S = 0.5
WAITING_AFTER_S = 5.0  # an actor not created by then, with too few free resources, is "waiting"
REFUSED_AFTER = 2      # failed CURVE handshakes, with no frame, after which a camera is "refused"
NODE_LABEL = "ray.io/node-id"


def _reachable() -> bool:
    """The probe task: it finishes only on a node the cluster can reach again."""
    return True


@dataclass
class Slot:
    """What the controller knows about one camera."""

    camera: CameraSpec
    index: int
    actor: Any = None
    pending: Any = None              # the outstanding status() call
    asked_at: float = 0.0
    created_at: float = 0.0
    answered: bool = False           # this actor answered at least once
    unavailable_since: float | None = None  # Ray has reported the actor unreachable since then
    last: dict[str, Any] = field(default_factory=dict)
    restarts_before: int = 0         # pipeline restarts and actor replacements of earlier actors
    generation: int = 0              # controller ms at the current actor's creation (epoch base)
    pinned: bytes | None = None      # the camera's public key from fleet.keys (None: as reported)
    state: str = "starting"
    note: str = ""


class FleetController:
    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        settings = spec.settings
        # The aggregator's secret is made (or read) here and never leaves this process.
        self.client = aggregator_keys(settings)
        self.aggregator = Aggregator(settings.publish, spec.config.zmq, settings.stats_window_s, self.client)
        self.slots = [Slot(camera, i, pinned=pinned_key(settings, camera.name))
                      for i, camera in enumerate(spec.cameras)]
        # Nodes that lost a camera, with a probe task each: Ray may list a cut-off node as alive
        # for minutes, and place the replacement right back on it.
        self._suspects: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fleet-watch", daemon=True)

    def start(self) -> str:
        """Bind the aggregated stream and start every camera; the address it publishes on."""
        self.aggregator.start()
        self._thread.start()
        return self.spec.settings.publish

    # -- camera actors ----------------------------------------------------------------------------
    def _job(self, slot: Slot) -> dict[str, Any]:
        """What the camera's actor gets through Ray: no secret (see `fleet.keys`)."""
        s = self.spec.settings
        return {"name": slot.camera.name, "source": slot.camera.source, "index": slot.index,
                "config": self.spec.camera_config(slot.camera), "camera_host": s.camera_host,
                "camera_port_first": s.camera_port_first, "restart_initial_s": s.restart_initial_s,
                "restart_max_s": s.restart_max_s, "stable_s": s.stable_s,
                "stop_timeout_s": s.stop_timeout_s, "lease_s": s.lease_s,
                "generation": slot.generation, "curve": self.client is not None, "keys": s.keys,
                "client_public": self.client.public.decode("ascii") if self.client else "",
                "pinned": slot.pinned.decode("ascii") if slot.pinned else ""}

    def _probe_suspects(self) -> None:
        """Forget a suspect node once its probe finished: reachable again, or known dead to Ray."""
        import ray

        for node, probe in list(self._suspects.items()):
            if ray.wait([probe], timeout=0)[0]:
                del self._suspects[node]
                log.info("fleet: node %s may take cameras again", node[:12])

    def _suspect(self, node: str) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if node and node not in self._suspects:
            self._suspects[node] = ray.remote(num_cpus=0, max_retries=0)(_reachable).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()

    def _create(self, slot: Slot, now: float) -> None:
        import ray

        slot.generation = max(slot.generation + 1, int(now * 1000))
        avoid = {NODE_LABEL: f"!in({','.join(sorted(self._suspects))})"} if self._suspects else None
        remote = ray.remote(CameraActor).options(
            num_cpus=slot.camera.num_cpus, num_gpus=slot.camera.num_gpus, max_restarts=0,
            max_concurrency=2, scheduling_strategy="SPREAD", label_selector=avoid)
        slot.actor = remote.remote(self._job(slot))
        slot.pending = slot.actor.status.remote()
        slot.asked_at = slot.created_at = now
        slot.answered = False
        slot.unavailable_since = None
        slot.last = {}

    def _replace(self, slot: Slot, why: str, suspect: bool = True) -> None:
        """Kill the camera's actor and let the next tick create another; `suspect`: its node may
        be cut off, so avoid it until a probe runs there."""
        import ray

        log.warning("fleet: camera %s: %s; starting it again where resources allow",
                    slot.camera.name, why)
        slot.restarts_before += int(slot.last.get("restarts", 0)) + 1
        if suspect:
            self._suspect(slot.last.get("node_id", ""))
        if slot.actor is not None:
            ray.kill(slot.actor, no_restart=True)
        slot.actor = slot.pending = None
        slot.state, slot.note = "restarting", why
        self.aggregator.set_endpoint(slot.camera.name, "")

    def _check(self, slot: Slot, now: float) -> None:
        import ray

        if slot.actor is None:
            self._create(slot, now)
            return
        done, _ = ray.wait([slot.pending], timeout=0)
        if done:
            try:
                answer = ray.get(done[0])
            except ray.exceptions.ActorUnavailableError:
                # Its node may be gone: ask again, and replace it if this lasts fleet.unavailable_s.
                if slot.unavailable_since is None:
                    slot.unavailable_since = now
                if now - slot.unavailable_since > self.spec.settings.unavailable_s:
                    self._replace(slot, f"its actor was unreachable for {self.spec.settings.unavailable_s:g} s")
                    return
                if now - slot.unavailable_since > self.spec.settings.lease_s:
                    slot.state = "lost"
                    slot.note = (f"Ray reports its actor unreachable (node down or cut off); "
                                 f"replaced after {self.spec.settings.unavailable_s:g} s")
                slot.pending = slot.actor.status.remote()
                return
            except ray.exceptions.RayActorError as exc:
                self._replace(slot, f"its actor was lost ({type(exc).__name__})")
                return
            slot.answered, slot.last, slot.unavailable_since = True, answer, None
            if answer["state"] == "fenced":  # it answered: its node is reachable
                self._replace(slot, answer["error"], suspect=False)
                return
            slot.state, slot.note = answer["state"], answer["error"]
            self._read_from(slot, answer)
            slot.pending, slot.asked_at = slot.actor.status.remote(), now
            return
        silent = now - slot.asked_at
        if slot.answered and silent > self.spec.settings.actor_timeout_s:
            self._replace(slot, f"its actor did not answer for {silent:.0f} s (node lost?)")
        elif slot.answered and silent > self.spec.settings.lease_s:
            slot.state = "lost"
            slot.note = (f"its actor has not answered for {silent:.0f} s (node down or cut off); "
                         f"replaced after {self.spec.settings.actor_timeout_s:g} s")
        elif not slot.answered and now - slot.created_at > WAITING_AFTER_S:
            free = self._free_per_node(ray)
            camera = slot.camera
            if not any(r.get("CPU", 0.0) >= camera.num_cpus and r.get("GPU", 0.0) >= camera.num_gpus
                       for r in free.values()):
                most = max(free.values(), key=lambda r: r.get("CPU", 0.0), default={})
                slot.state = "waiting for resources"
                slot.note = (f"needs {camera.num_cpus:g} CPU / {camera.num_gpus:g} GPU on one node; "
                             f"most free on a node: {most.get('CPU', 0.0):g} CPU / "
                             f"{most.get('GPU', 0.0):g} GPU")

    def _read_from(self, slot: Slot, answer: dict[str, Any]) -> None:
        """Point the aggregator at the camera's endpoint, trusting only its key: the pinned one, or
        the one its current actor reported (a camera without a key yet is not read)."""
        key = None
        if self.client is not None:
            key = slot.pinned or (answer["public_key"].encode("ascii") if answer["public_key"] else None)
        endpoint = answer["endpoint"] if key is not None or self.client is None else ""
        self.aggregator.set_endpoint(slot.camera.name, endpoint, key)

    def _free_per_node(self, ray: Any) -> dict[str, dict[str, float]]:
        """Free resources of each node that may take a camera (suspect nodes left out). Ray has no
        public per-node call without its dashboard; the cluster-wide sum is the fallback."""
        try:
            from ray._private.state import available_resources_per_node

            free = available_resources_per_node()
        except (ImportError, AttributeError):
            return {"cluster": ray.available_resources()}
        return {node: r for node, r in free.items() if node not in self._suspects}

    def _watch(self) -> None:
        last_status = 0.0
        while not self._stopping.is_set():
            now = time.time()
            with self._lock:
                self._probe_suspects()
                for slot in self.slots:
                    try:
                        self._check(slot, now)
                    except Exception:  # noqa: BLE001 - one camera's surprise must not stop the rest
                        log.exception("fleet: camera %s: check failed", slot.camera.name)
            if now - last_status >= self.spec.settings.status_interval_s:
                try:
                    self.aggregator.publish_status(self.status())
                except Exception:  # noqa: BLE001 - a bad status row must not end the watch over every camera
                    log.exception("fleet: status message not published")
                last_status = now
            self._stopping.wait(TICK_S)

    # -- answers to `fleet status` / `fleet stop` -------------------------------------------------
    def status(self) -> list[CameraStatus]:
        now = time.time()
        rows = []
        for slot in self.slots:
            fps, p99, age = self.aggregator.figures(slot.camera.name, now)
            state, note = slot.state, slot.note
            if state == "running" and (age is None or age > slot.last.get("uptime_s", 0.0)):
                # Up, but no frame from this incarnation yet: a retry keeps its failure's name.
                state = slot.last.get("failure") or "starting"
                failures = self.aggregator.handshake_failures(slot.camera.name)
                if failures >= REFUSED_AFTER:
                    state = "refused"
                    note = (f"{failures} CURVE handshakes with its stream {slot.last.get('endpoint')} "
                            "failed: the camera's key is not the one the aggregator trusts")
            rows.append(CameraStatus(slot.camera.name, slot.last.get("node_ip", ""), state, fps, p99,
                                     age, slot.restarts_before + int(slot.last.get("restarts", 0)),
                                     "" if state == "running" else note,
                                     slot.last.get("node_id", "")))
        return rows

    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> list[CameraStatus]:
        """Stop every camera cleanly (drain, flush, unlink), then the aggregated stream. Safe twice."""
        import ray

        if self._stopping.is_set():
            self._stopped.wait()
            return self.status()
        self._stopping.set()
        self._thread.join()
        self.aggregator.forward_ends = True  # the cameras' last frames now end their streams
        timeout = self.spec.settings.stop_timeout_s
        # Actors that never answered (waiting for resources, or still starting) have no pipeline
        # to drain yet: they are only killed.
        calls = {slot.camera.name: slot.actor.stop.remote(timeout) for slot in self.slots
                 if slot.actor is not None and slot.answered}
        for slot in self.slots:
            call = calls.get(slot.camera.name)
            if call is None:
                if slot.actor is not None:
                    ray.kill(slot.actor, no_restart=True)
                slot.state = "stopped"
                continue
            try:
                slot.last = ray.get(call, timeout=timeout + 10)
                code = slot.last.get("exit_code")
                slot.state = "stopped"
                slot.note = "" if code in (0, None) else f"pipeline exit code {code}"
            except (ray.exceptions.RayError, TimeoutError) as exc:
                slot.state, slot.note = "stopped", f"stop failed: {type(exc).__name__}"
            ray.kill(slot.actor, no_restart=True)
        self.aggregator.close()
        self._stopped.set()
        log.info("fleet: stopped %d cameras; %d messages forwarded", len(self.slots),
                 self.aggregator.forwarded)
        return self.status()
