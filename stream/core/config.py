"""Configuration: `config.toml` holds every default; a user file and flags override it.

`load_config` returns the frozen `Settings` (`stream.core.settings`, where each key's type and bound
are declared): the shipped file is parsed into it, then the user's file and `--set` overrides make
new ones (`Settings.with_overrides`). An unknown section or key, a wrong type or a value out of its
bound is one `ConfigError` that names the key, at start-up. Only `Settings` flows from here on.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from posestream.stream.core.errors import ConfigError, InputNotFoundError
from posestream.stream.core.settings import Settings

__all__ = ["ENV_CONFIG", "Settings", "add_config_args", "config_from_args", "default_config_path", "home_dir",
           "load_config", "parse_value", "preset_path", "shared_dir"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# Installed, this module is posestream/stream/core/config.py and the wheel carries the defaults as
# posestream/default_config.toml; in a source checkout it is stream/core/config.py below config.toml.
_TOP_DIR = Path(__file__).resolve().parents[2]
_DEFAULT_CANDIDATES = (_TOP_DIR / "default_config.toml", _TOP_DIR / "config.toml")


def preset_path(name: str) -> Path:
    """The shipped preset `name` (`presets/<name>.toml`, e.g. `apache`); an unknown name is one
    `ConfigError` listing the presets there are."""
    folder = _TOP_DIR / "presets"
    path = folder / f"{name}.toml"
    if not name.replace("-", "").isalnum() or not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.toml"))) or "none"
        raise ConfigError(f"unknown preset '{name}' (known: {known})")
    return path


def default_config_path() -> Path:
    """The `config.toml` that holds the shipped defaults."""
    for candidate in _DEFAULT_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise ConfigError("default config.toml not found next to the installed package")


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputNotFoundError(f"config file not found: {path}")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def parse_value(text: str) -> Any:
    """Parse a `--set key=value` right-hand side as a TOML value (bare words become strings)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


ENV_CONFIG = "POSESTREAM_CONFIG"  # a config file every command applies before its own --config


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                preset: str | None = None) -> Settings:
    """The frozen `Settings`: defaults, then a shipped preset (`--preset`), then the file named by
    `$POSESTREAM_CONFIG` (settings for every command of a machine or container, and the test suite's
    CPU variations), then the user's file, then dotted-key overrides such as
    `{"detector.input_size": 320}`; every key checked once, here."""
    settings = Settings.from_config(_read_toml(default_config_path()))
    if preset:
        settings = settings.with_overrides(_read_toml(preset_path(preset)))
    machine_file = os.environ.get(ENV_CONFIG, "")
    if machine_file:
        if not Path(machine_file).is_file():
            raise InputNotFoundError(f"config file not found: {machine_file} (named by ${ENV_CONFIG})")
        settings = settings.with_overrides(_read_toml(Path(machine_file)))
    if path is not None:
        settings = settings.with_overrides(_read_toml(Path(path)))
    return settings.with_overrides(overrides or {})


def home_dir(settings: Settings | None = None) -> Path:
    """The model/engine cache: `paths.home`, else `$POSESTREAM_HOME`, else `~/.cache/posestream`."""
    configured = settings.paths.home if settings is not None else ""
    env = os.environ.get("POSESTREAM_HOME", "")
    return Path(configured or env or Path.home() / ".cache" / "posestream").expanduser()


def shared_dir(settings: Settings | None = None) -> Path:
    """Evaluation data and golden outputs: `$POSESTREAM_SHARED`, else `paths.shared` (relative paths
    are taken from the source checkout's root)."""
    env = os.environ.get("POSESTREAM_SHARED", "")
    configured = (settings or load_config()).paths.shared
    path = Path(env or configured).expanduser()
    return path if path.is_absolute() else (_TOP_DIR / path).resolve()


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """`--preset NAME`, `--config FILE` and `--set key=value`, the flags every command and benchmark
    takes."""
    parser.add_argument("--config", metavar="FILE", help="config file overriding config.toml defaults")
    parser.add_argument("--preset", metavar="NAME", help="shipped settings applied before --config and --set: "
                        "apache = models whose every weight is Apache-2.0/MIT")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set detector.input_size=320 (repeatable)")


def config_from_args(args: argparse.Namespace, **flags: object) -> Settings:
    """Defaults, then `--preset`, then `--config`, then `--set`, then command-specific flags (dotted
    keys, None = unset)."""
    overrides: dict[str, object] = {}
    for item in getattr(args, "overrides", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        overrides[key.strip()] = parse_value(value.strip())
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return load_config(getattr(args, "config", None), overrides, getattr(args, "preset", None))
