"""Test hosts made of Linux network namespaces: a private network the fleet tests and the fault
benchmark (`benchmarks/fleet_faults.py`) cut, slow and heal.

`TestNet(hosts)` makes one namespace per host plus a "switch" namespace holding a bridge; each
host has one veth pair to the bridge and an address in a private /24 (10.231.X.0/24, X from this
process's id) that exists only inside these namespaces. The machine's own namespace is never
touched: no address, route or firewall rule is added there, so no test packet can leave for an
address the test did not create. Faults act on the host's port at the switch (`cut`, `restore`,
`slow`), as a pulled cable or a congested uplink would.

`close()` is safe twice and always runs from the fixtures' finalizers: every process inside the
namespaces is killed (`ip netns pids`, so nothing outside is touched — never `ray stop`, which stops
every Ray process of the machine) and the namespaces are deleted, which removes their veths and the
bridge with them.

Creating namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); `unavailable()` says in one line
why it cannot be done here.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Sequence

IP = shutil.which("ip") or "/usr/sbin/ip"
TC = shutil.which("tc") or "/usr/sbin/tc"
NFT = shutil.which("nft")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (one line), or None when they can."""
    if not os.path.exists(IP):
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the fleet network tests as root)"
    probe = f"psprobe{os.getpid()}"
    done = _run(IP, "netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    _run(IP, "netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str
    port: str  # the host's veth end at the switch (in the switch namespace)


class TestNet:
    """Namespaces `ps<pid>-<host>` on one bridge; `hosts[i]` gets 10.231.X.(i + 1)."""

    __test__ = False  # not a pytest test class

    def __init__(self, hosts: Sequence[str]) -> None:
        tag = f"ps{os.getpid()}"
        self.subnet = f"10.231.{os.getpid() % 250 + 1}"
        self.switch = f"{tag}-switch"
        self.hosts = {name: Host(name, f"{tag}-{name}", f"{self.subnet}.{i + 1}", f"p{i}{tag}"[:15])
                      for i, name in enumerate(hosts)}
        self._closed = False
        self._made: list[str] = []
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def _make(self) -> None:
        for namespace in (self.switch, *(h.namespace for h in self.hosts.values())):
            _run(IP, "netns", "add", namespace)
            self._made.append(namespace)
            _run(IP, "-n", namespace, "link", "set", "lo", "up")
        _run(IP, "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run(IP, "-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts.values():
            _run(IP, "-n", self.switch, "link", "add", host.port, "type", "veth", "peer", "name",
                 "eth0", "netns", host.namespace)
            _run(IP, "-n", self.switch, "link", "set", host.port, "master", "br0", "up")
            _run(IP, "-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _run(IP, "-n", host.namespace, "link", "set", "eth0", "up")

    # -- processes ------------------------------------------------------------------------------
    def argv(self, host: str, *argv: str) -> list[str]:
        """`argv` run inside `host`'s namespace."""
        return [IP, "netns", "exec", self.hosts[host].namespace, *argv]

    def pids(self, host: str) -> list[int]:
        done = _run(IP, "netns", "pids", self.hosts[host].namespace, check=False)
        return [int(p) for p in done.stdout.split()]

    def kill_all(self, host: str, grace_s: float = 3.0) -> None:
        """SIGTERM every process in `host`'s namespace, SIGKILL what is left after `grace_s`
        (at once when `grace_s` is 0: a crash)."""
        signals = ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)) if grace_s > 0 else ((signal.SIGKILL, 5.0),)
        for signum, wait in signals:
            pids = self.pids(host)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                time.sleep(0.1)
                pids = self.pids(host)
            if not pids:
                return

    # -- faults at the switch port ------------------------------------------------------------------
    def cut(self, host: str) -> None:
        """Partition: `host`'s port at the switch goes down (carrier lost on both ends)."""
        _run(IP, "-n", self.switch, "link", "set", self.hosts[host].port, "down")

    def restore(self, host: str) -> None:
        _run(IP, "-n", self.switch, "link", "set", self.hosts[host].port, "up")

    def slow(self, host: str, delay_ms: int, loss_pct: float, rate_kbit: int) -> str:
        """Slow `host`'s link both ways. With the kernel's netem: delay and random loss. Without it
        (this kernel may lack sch_netem): a token-bucket rate limit (queueing delay) and random loss
        through nftables. Returns what was applied, for the report."""
        ends = ((self.switch, self.hosts[host].port), (self.hosts[host].namespace, "eth0"))
        applied = []
        netem = all(_run(IP, "netns", "exec", ns, TC, "qdisc", "add", "dev", dev, "root", "netem",
                         "delay", f"{delay_ms}ms", "loss", f"{loss_pct}%", check=False).returncode == 0
                    for ns, dev in ends)
        if netem:
            return f"netem delay {delay_ms} ms, loss {loss_pct} % each way"
        for ns, dev in ends:
            _run(IP, "netns", "exec", ns, TC, "qdisc", "del", "dev", dev, "root", check=False)
            _run(IP, "netns", "exec", ns, TC, "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                 f"{rate_kbit}kbit", "burst", "4kb", "latency", f"{max(delay_ms, 50)}ms")
        applied.append(f"tbf rate {rate_kbit} kbit/s, queue up to {max(delay_ms, 50)} ms each way")
        if NFT and loss_pct > 0:  # one table in the host: drop a share of what enters and leaves eth0
            ns, share = self.hosts[host].namespace, int(loss_pct)
            _run(IP, "netns", "exec", ns, NFT, "add table inet pstest")
            for chain, match in (("input", "iifname"), ("output", "oifname")):
                _run(IP, "netns", "exec", ns, NFT, f"add chain inet pstest {chain} "
                     f"{{ type filter hook {chain} priority 0 ; }}")
                _run(IP, "netns", "exec", ns, NFT, f'add rule inet pstest {chain} {match} "eth0" '
                     f"numgen random mod 100 < {share} drop")
            applied.append(f"random loss {share} % each way (nftables)")
        return "; ".join(applied)

    def heal(self, host: str) -> None:
        """Undo `slow`."""
        for ns, dev in ((self.switch, self.hosts[host].port), (self.hosts[host].namespace, "eth0")):
            _run(IP, "netns", "exec", ns, TC, "qdisc", "del", "dev", dev, "root", check=False)
        if NFT:
            _run(IP, "netns", "exec", self.hosts[host].namespace, NFT, "delete table inet pstest",
                 check=False)

    # -- clean-up -------------------------------------------------------------------------------
    def close(self) -> None:
        """Kill every process in the namespaces, then delete them (veths and bridge go with them)."""
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            if host.namespace in self._made:
                self.kill_all(host.name)
        for namespace in reversed(self._made):
            _run(IP, "netns", "del", namespace, check=False)

    def __enter__(self) -> "TestNet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
