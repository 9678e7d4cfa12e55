"""Fixtures of the fleet tests: test hosts made of network namespaces with a Ray cluster on them
(`benchmarks.fleet_hosts`); where namespaces cannot be made, the tests that need them say why in
one line and skip."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from posestream.benchmarks.fleet_faults import WORKERS
from posestream.benchmarks.fleet_hosts import FleetHosts
from posestream.benchmarks.netns import unavailable


@pytest.fixture(scope="module")
def fleet_hosts(prepared_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetHosts]:
    """Hosts head (Ray head), w1 and w2 (Ray workers, one CPU each) and client on a private
    bridge; every process and namespace removed afterwards, also when a test failed."""
    reason = unavailable()
    if reason:
        print(f"fleet network tests skipped: {reason}")
        pytest.skip(reason)
    with FleetHosts(WORKERS, tmp_path_factory.mktemp("fleet-hosts")) as hosts:
        yield hosts
