"""The `[web]` config table and the `web[:HOST:PORT]` sink target, checked where they enter."""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
from dataclasses import dataclass

from posestream.stream.core.config import Config, check_range
from posestream.stream.core.errors import ConfigError

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def is_loopback_host(host: str) -> bool:
    """True for names and addresses only this machine reaches (a DNS name other than localhost is not)."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebSettings:
    """What the viewer needs; `host`/`port` may come from the sink target instead of the table."""

    host: str
    port: int
    token: str
    max_fps: float
    jpeg_quality: int
    max_width: int
    health_stale_s: float

    @classmethod
    def from_config(cls, config: Config, target: str = "") -> "WebSettings":
        try:
            settings = cls(**config["web"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"config table [web] does not match this version: {exc}") from None
        if target:
            settings = dataclasses.replace(settings, **parse_target(target))
        check_range("web.port", settings.port, 0, 65535)
        check_range("web.max_fps", settings.max_fps, 0.1, 60)
        check_range("web.jpeg_quality", settings.jpeg_quality, 1, 100)
        check_range("web.max_width", settings.max_width, 64, 7680)
        check_range("web.health_stale_s", settings.health_stale_s, 0.5, 3600)
        if not settings.host:
            raise ConfigError("web.host is empty (use 127.0.0.1 for this machine only)")
        return settings

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)

    def warn_if_exposed(self) -> None:
        """Binding beyond loopback without a token lets anyone who reaches the port watch."""
        if not self.loopback and not self.token:
            log.warning("web viewer binds %s, reachable from other machines, without a token: anyone "
                        "there can watch the cameras (set [web] token)", self.host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def parse_target(target: str) -> dict[str, object]:
    """`HOST:PORT`, `[V6]:PORT`, `HOST` or `:PORT` -> the fields it sets."""
    host, sep, port = target.rpartition(":")
    if not sep or (host and host.count(":") and not host.startswith("[")):
        host, port = target, ""  # no port, or a bare IPv6 address
    fields: dict[str, object] = {}
    if host:
        fields["host"] = host.strip("[]")
    if port:
        if not port.isdigit():
            raise ConfigError(f"web sink target '{target}': port must be a number (web:HOST:PORT)")
        fields["port"] = int(port)
    return fields
