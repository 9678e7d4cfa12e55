"""The project's exception tree.

One root (`PosestreamError`) so callers can catch everything posestream raises; each subclass also
inherits the matching builtin so code that expects `FileNotFoundError` or `TimeoutError` still works.
The CLI turns any `PosestreamError` into one line on stderr and a non-zero exit.
"""
from __future__ import annotations


class PosestreamError(Exception):
    """Root of every error posestream raises on purpose."""


class ConfigError(PosestreamError, ValueError):
    """A configuration value, file or command-line flag is invalid."""


class InputNotFoundError(PosestreamError, FileNotFoundError):
    """A path or source the user named does not exist."""


class InputError(PosestreamError, ValueError):
    """An input exists but cannot be used (not an image, corrupt video, unsupported URL)."""


class ModelError(PosestreamError, ValueError):
    """A model file is unreadable, inconsistent or does not match its declared kind."""


class UnsafeCheckpointError(ModelError):
    """A checkpoint's pickle asks for something outside the allow-list."""


class SourceTimeoutError(PosestreamError, TimeoutError):
    """A live source stopped delivering within its timeout."""


class StageError(PosestreamError, RuntimeError):
    """A pipeline stage failed; the message names the stage."""


class PluginNotFoundError(PosestreamError, LookupError):
    """No plugin of that name is registered in the group."""


class BackendUnavailableError(PosestreamError, RuntimeError):
    """The requested inference backend or device is not available on this machine."""
