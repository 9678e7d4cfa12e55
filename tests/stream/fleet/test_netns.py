"""The test hosts themselves (`benchmarks.netns`): two namespaces reach each other over the bridge
and nothing else, a cut link stops traffic and a restored one carries it again, and `close()`
leaves no namespace and no process behind."""
from __future__ import annotations

import subprocess
import sys

import pytest

from posestream.benchmarks.netns import IP, TestNet, unavailable

LISTEN = ("import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 7000)); s.listen(); "
          "print('up', flush=True)\nwhile True: s.accept()[0].close()")
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], 7000), timeout=2).close()"


@pytest.fixture(scope="module", autouse=True)
def namespaces_possible() -> None:
    reason = unavailable()
    if reason:
        print(f"network namespace tests skipped: {reason}")
        pytest.skip(reason)


def test_hosts_reach_each_other_until_cut_and_leave_nothing_behind() -> None:
    net = TestNet(["a", "b"])
    try:
        b = net.hosts["b"].address
        server = subprocess.Popen(net.argv("b", sys.executable, "-c", LISTEN, b),
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "up"

        def connects() -> bool:
            return subprocess.run(net.argv("a", sys.executable, "-c", CONNECT, b),
                                  capture_output=True, timeout=30).returncode == 0

        assert connects()
        net.cut("b")
        assert not connects()
        net.restore("b")
        assert connects()
        assert net.pids("b") == [server.pid]
        namespaces = [host.namespace for host in net.hosts.values()] + [net.switch]
    finally:
        net.close()
    assert server.wait(10) != 0  # killed by close()
    listed = subprocess.run([IP, "netns", "list"], capture_output=True, text=True).stdout
    assert not any(namespace in listed for namespace in namespaces)
    net.close()  # safe twice
