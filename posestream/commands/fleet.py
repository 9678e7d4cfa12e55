"""`posestream fleet run|status|stop`: cameras spread over a Ray cluster, one aggregated stream."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from posestream.commands.common import add_config_args, config_from_args

ADDRESS_HELP = ("Ray cluster address as `ray.init` takes it (e.g. auto, 10.0.0.5:6379); "
                "`fleet run` starts a local loopback cluster when it is not given")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fleet", help="run many cameras over a Ray cluster (docs/fleet.md)")
    commands = parser.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    run_parser = commands.add_parser("run", help="start every camera of FLEET.toml and supervise them")
    run_parser.add_argument("fleet_file", metavar="FLEET.toml")
    run_parser.add_argument("--address", help=ADDRESS_HELP)
    run_parser.add_argument("--quiet", action="store_true", help="no periodic status table")
    add_config_args(run_parser)
    run_parser.set_defaults(func=run)
    for name, func, text in (("status", status, "print one row per camera of the running fleet"),
                             ("stop", stop, "stop every camera cleanly (sinks flushed, rings unlinked)")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
        add_config_args(sub)
        sub.set_defaults(func=func)


def run(args: argparse.Namespace) -> int:
    from posestream.stream.fleet.cluster import connect, start_controller
    from posestream.stream.core.errors import StageError
    from posestream.stream.fleet.spec import load_fleet
    from posestream.stream.fleet.status import format_table

    spec = load_fleet(args.fleet_file, config_from_args(args))  # every file error before Ray starts
    ray = connect(args.address, spec.settings.namespace)
    try:
        controller, publish = start_controller(ray, spec)
        address = ray.get_runtime_context().gcs_address
        # The local cluster is loopback-only and, like any Ray 2.60 cluster, token-authenticated.
        env = "" if args.address else "RAY_AUTH_MODE=token RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "
        sys.stderr.write(f"fleet: {len(spec.cameras)} cameras on Ray cluster {address}; aggregated "
                         f"stream {publish}; stop with Ctrl-C or `{env}posestream fleet stop "
                         f"--address {address}`\n")
        wake = threading.Event()
        previous = {s: signal.signal(s, lambda *_: wake.set()) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not wake.wait(spec.settings.status_interval_s * 2.5):
                if ray.get(controller.stopped.remote()):
                    break
                if not args.quiet:
                    sys.stderr.write(format_table(ray.get(controller.status.remote())))
            rows = ray.get(controller.stop.remote())
        except ray.exceptions.RayActorError as exc:
            raise StageError(f"the fleet controller was lost ({type(exc).__name__}); its cameras "
                             "stop with it") from None
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        sys.stderr.write(format_table(rows))
        ray.kill(controller)
    finally:
        ray.shutdown()
    return 0


def _reach(args: argparse.Namespace) -> tuple[Any, Any]:
    from posestream.stream.fleet.cluster import connect, find_controller

    namespace = config_from_args(args).fleet.namespace
    ray = connect(args.address, namespace)
    return ray, find_controller(ray, namespace)


def status(args: argparse.Namespace) -> int:
    from posestream.stream.fleet.status import format_table

    ray, controller = _reach(args)
    try:
        sys.stdout.write(format_table(ray.get(controller.status.remote(), timeout=60)))
    finally:
        ray.shutdown()
    return 0


def stop(args: argparse.Namespace) -> int:
    from posestream.stream.fleet.status import format_table

    ray, controller = _reach(args)
    try:
        rows = ray.get(controller.stop.remote())
        sys.stdout.write(format_table(rows))
    finally:
        ray.shutdown()
    return 0
