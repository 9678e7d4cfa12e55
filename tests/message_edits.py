"""One field of a wire message changed or removed, for the validation tests of the wire format
(`test_wire.py`) and of the client that reads it (`test_client.py`)."""
from __future__ import annotations


def edited(message: dict, path: tuple, value: object) -> dict:
    """`message` with the field at `path` (keys into nested dicts and lists) set to `value`, or
    removed where `value` is `KeyError`; changed in place and returned."""
    target = message
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return message
