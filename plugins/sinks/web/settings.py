"""The `[web]` settings (declared in `core.settings.WebSettings`) with a `web[:HOST:PORT]` target
applied, and what the viewer derives from them (loopback or not, its URL)."""
from __future__ import annotations

import ipaddress
import logging

from posestream.stream.core.errors import ConfigError
from posestream.stream.core.settings import Settings, WebSettings

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def web_settings(settings: Settings, target: str = "") -> WebSettings:
    """The `[web]` table of `settings`, host/port replaced by `target` (checked as the table's)."""
    return settings.web.with_values(**(parse_target(target) if target else {}))


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


def is_loopback_host(host: str) -> bool:
    """True for names and addresses only this machine reaches (a DNS name other than localhost is not)."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(web: WebSettings) -> None:
    """Binding beyond loopback without a token lets anyone who reaches the port watch."""
    if not is_loopback_host(web.host) and not web.token:
        log.warning("web viewer binds %s, reachable from other machines, without a token: anyone "
                    "there can watch the cameras (set [web] token)", web.host)


def url_of(web: WebSettings, port: int | None = None) -> str:
    host = f"[{web.host}]" if ":" in web.host else web.host
    return f"http://{host}:{web.port if port is None else port}/"
