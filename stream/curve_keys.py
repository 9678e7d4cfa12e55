"""CURVE keys for the ZMQ stream: generating and loading key files, and the client allow-list.

Key files are the czmq/pyzmq certificate format (`NAME.key` holds the public key, `NAME.key_secret`
both), so keys made with other ZMQ tools work here too. The allow-list is checked by pyzmq's ZAP
authenticator thread; we load the keys ourselves first, because `configure_curve` only logs a bad
directory and then silently denies everyone.
"""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from posestream.stream.core.errors import ConfigError, InputError, InputNotFoundError
from posestream.stream.core.settings import ZmqSettings

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, both keys Z85-encoded (40 bytes each)."""

    public: bytes
    secret: bytes


@dataclass(frozen=True)
class ClientCurve:
    """What a subscriber needs for CURVE: its own key pair and the server's public key."""

    client: KeyPair
    server_public: bytes

    @classmethod
    def from_files(cls, client_secret_file: str | Path,
                   server_public_file: str | Path) -> "ClientCurve":
        return cls(load_key_pair(client_secret_file), load_public_key(server_public_file))


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CURVE support; set zmq.curve = false")


def generate_key_pair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write `NAME.key` and `NAME.key_secret` (mode 0600) into `directory`; returns both paths.
    Never overwrites: replacing a key silently would lock out every peer that trusts the old one."""
    _require_curve()
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"key name {name!r} must be a plain file name (no '/', not hidden)")
    directory = Path(directory).expanduser()
    public, secret = directory / f"{name}{PUBLIC_SUFFIX}", directory / f"{name}{SECRET_SUFFIX}"
    for path in (public, secret):
        if path.exists():
            raise InputError(f"key file {path} already exists; remove it or choose another name")
    directory.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the secret file must never exist world-readable, not even briefly
    try:
        zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(old_umask)
    public.chmod(0o644)
    return public, secret


def write_key_file(path: str | Path, public: bytes, secret: bytes | None = None) -> Path:
    """Write a key (pair) made in memory as a certificate file `load_key_pair` and the allow-list
    read (mode 0600, created that way: a secret is never readable by others, not even briefly)."""
    lines = ["metadata", "curve", f'    public-key = "{public.decode("ascii")}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as fh:
        fh.write("\n".join(lines) + "\n")
    return Path(path)


def new_key_pair() -> KeyPair:
    """A fresh pair, in memory only."""
    _require_curve()
    return KeyPair(*zmq.curve_keypair())


def _read(path: str | Path) -> tuple[bytes, bytes | None]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputNotFoundError(f"CURVE key file not found: {path}")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path} is not a CURVE key file: {exc}") from None
    for key in (public, secret):
        if key is not None and len(key) != 40:
            raise InputError(f"{path}: a Z85 CURVE key has 40 characters, found {len(key)}")
    return public, secret


def load_public_key(path: str | Path) -> bytes:
    """The public key in a `.key` (or `.key_secret`) file."""
    return _read(path)[0]


def load_key_pair(path: str | Path) -> KeyPair:
    """Both keys from a `.key_secret` file; warns when others may read it."""
    public, secret = _read(path)
    if secret is None:
        raise InputError(f"{path} holds only a public key; give the {SECRET_SUFFIX} file instead")
    if Path(path).expanduser().stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secret key file %s is readable by other users (chmod 600 it)", path)
    return KeyPair(public, secret)


def load_allowed_keys(path: str | Path) -> frozenset[bytes]:
    """Client public keys from one `.key` file or every `*.key` file in a directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(path.glob(f"*{PUBLIC_SUFFIX}"))
        if not files:
            raise InputError(f"no *{PUBLIC_SUFFIX} files in the allowed-clients directory {path}")
    elif path.is_file():
        files = [path]
    else:
        raise InputNotFoundError(f"allowed-clients path not found: {path}")
    return frozenset(load_public_key(file) for file in files)


def server_keys(zmq_settings: ZmqSettings) -> tuple[KeyPair | None, frozenset[bytes]]:
    """The server key pair and allowed client keys a publisher binds with (`[zmq]` curve,
    server_secret_key, allowed_clients); (None, empty) without CURVE. Key-file problems are one
    error naming the file."""
    if not zmq_settings.curve:
        return None, frozenset()
    for key in ("server_secret_key", "allowed_clients"):
        if not getattr(zmq_settings, key):
            raise ConfigError(f"zmq.curve = true needs zmq.{key} (make keys with "
                              "`posestream keys generate`)")
    return (load_key_pair(zmq_settings.server_secret_key),
            load_allowed_keys(zmq_settings.allowed_clients))


class _AllowList:
    """ZAP credentials provider: a fixed set of Z85 public keys. A refused client retries every
    few seconds, so each unknown key is reported once at warning level, then at debug level."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self._keys = keys
        self._refused: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self._keys:
            return True
        level = logging.DEBUG if key in self._refused else logging.WARNING
        self._refused.add(key)
        log.log(level, "CURVE: refused a client with unknown public key %s", key.decode("ascii"))
        return False


def start_authenticator(context: zmq.Context, allowed: frozenset[bytes]) -> ThreadAuthenticator:
    """Start the ZAP handler for `context`: CURVE clients are admitted only when their public key
    is in `allowed`. Stop it (`.stop()`) before terminating the context."""
    _require_curve()
    auth = ThreadAuthenticator(context, log=logging.getLogger(f"{__name__}.zap"))
    auth.start()
    auth.configure_curve_callback("*", credentials_provider=_AllowList(allowed))
    return auth


def configure_server(socket: zmq.Socket, server: KeyPair) -> None:
    """Make `socket` a CURVE server (call before bind)."""
    socket.curve_secretkey = server.secret
    socket.curve_publickey = server.public
    socket.curve_server = True


def configure_client(socket: zmq.Socket, curve: ClientCurve) -> None:
    """Make `socket` a CURVE client of the server whose public key `curve` carries (before connect)."""
    _require_curve()
    socket.curve_secretkey = curve.client.secret
    socket.curve_publickey = curve.client.public
    socket.curve_serverkey = curve.server_public
