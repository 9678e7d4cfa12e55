"""Configuration: `config.toml` holds every default; a user file and flags override it.

Values are checked where they enter: an unknown section or key, or a value whose type differs from
the default's, is a `ConfigError` that names the key and what was expected; then every table is
parsed into its frozen settings type (`stream.core.settings`, where each key's bound is declared),
so a bad value fails here, at start-up, with one line. The plain dict stays available for code that
still takes it; plugins and stages read `Settings`.
"""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from posestream.stream.core.errors import ConfigError, InputNotFoundError
from posestream.stream.core.settings import Settings, check_choice, check_range

__all__ = ["ENV_CONFIG", "Config", "Settings", "check_choice", "check_range", "default_config_path",
           "home_dir", "load_config", "parse_value", "preset_path", "shared_dir", "with_copy"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

Config = dict[str, dict[str, Any]]

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


def _type_name(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _merge(base: dict[str, Any], update: Mapping[str, Any], where: str) -> None:
    for key, value in update.items():
        name = f"{where}.{key}" if where else key
        if key not in base:
            known = ", ".join(sorted(base)) or "none"
            raise ConfigError(f"unknown config key '{name}' (known here: {known})")
        default = base[key]
        if isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{name}' must be a table, got {value!r}")
            _merge(default, value, name)
        elif not _same_kind(default, value):
            raise ConfigError(f"config key '{name}' must be {_type_name(default)}, got {value!r}")
        else:
            base[key] = float(value) if isinstance(default, float) else value


def parse_value(text: str) -> Any:
    """Parse a `--set key=value` right-hand side as a TOML value (bare words become strings)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


ENV_CONFIG = "POSESTREAM_CONFIG"  # a config file every command applies before its own --config


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                preset: str | None = None) -> Config:
    """Defaults, then a shipped preset (`--preset`), then the file named by `$POSESTREAM_CONFIG`
    (settings for every command of a machine or container, and the test suite's CPU variations),
    then the user's file, then dotted-key overrides such as `{"detector.input_size": 320}`."""
    config = _read_toml(default_config_path())
    if preset:
        _merge(config, _read_toml(preset_path(preset)), "")
    machine_file = os.environ.get(ENV_CONFIG, "")
    if machine_file:
        if not Path(machine_file).is_file():
            raise InputNotFoundError(f"config file not found: {machine_file} (named by ${ENV_CONFIG})")
        _merge(config, _read_toml(Path(machine_file)), "")
    if path is not None:
        _merge(config, _read_toml(Path(path)), "")
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        nested: dict[str, Any] = {leaf: value}
        for parent in reversed(parents):
            nested = {parent: nested}
        _merge(config, nested, "")
    Settings.from_config(config)  # every table's bounds, checked once here: a bad value stops start-up
    return config


def home_dir(config: "Config | Settings | None" = None) -> Path:
    """The model/engine cache: `paths.home`, else `$POSESTREAM_HOME`, else `~/.cache/posestream`."""
    if isinstance(config, Settings):
        configured = config.paths.home
    else:
        configured = (config or {}).get("paths", {}).get("home", "")
    env = os.environ.get("POSESTREAM_HOME", "")
    return Path(configured or env or Path.home() / ".cache" / "posestream").expanduser()


def shared_dir(config: Config | None = None) -> Path:
    """Evaluation data and golden outputs: `$POSESTREAM_SHARED`, else `paths.shared` (relative paths
    are taken from the source checkout's root)."""
    env = os.environ.get("POSESTREAM_SHARED", "")
    configured = (config or load_config())["paths"]["shared"]
    path = Path(env or configured).expanduser()
    return path if path.is_absolute() else (_TOP_DIR / path).resolve()


def with_copy(config: Config) -> Config:
    """A deep copy, for code that adjusts a config without touching the caller's."""
    return copy.deepcopy(config)
