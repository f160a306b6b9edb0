"""Checked access to decoded JSON for the media codecs; every failure is a ProtocolError."""

from __future__ import annotations

from typing import Any

import orjson

from callbridge.errors import ProtocolError


def load_object(message: str | bytes, protocol: str) -> dict[str, Any]:
    """Parse a text frame into a JSON object.

    Args:
        message: the frame; ``bytes`` must be UTF-8 JSON text.
        protocol: named in the error message.

    Raises:
        ProtocolError: if the frame is not a UTF-8 JSON object.
    """
    if not isinstance(message, str | bytes | bytearray | memoryview):
        raise ProtocolError(f"{protocol}: a frame must be str or bytes")
    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError as exc:  # also raised for invalid UTF-8 and lone surrogates
        raise ProtocolError(f"{protocol}: frame is not JSON ({exc.msg})") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"{protocol}: frame is not a JSON object")
    return value


def obj(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """Return ``parent[key]`` if it is an object."""
    value = parent.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: {key!r} must be an object")
    return value


def text(parent: dict[str, Any], key: str, where: str) -> str:
    """Return ``parent[key]`` if it is a string."""
    value = parent.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: {key!r} must be a string")
    return value


def opt_text(
    parent: dict[str, Any], key: str, where: str, default: str | None = None
) -> str | None:
    """Return ``parent[key]`` if it is a string, ``default`` if absent or null."""
    value = parent.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: {key!r} must be a string")
    return value


def integer(parent: dict[str, Any], key: str, where: str) -> int:
    """Return ``parent[key]`` as an int; numeric strings (Twilio's counters) are accepted."""
    value = opt_integer(parent, key, where)
    if value is None:
        raise ProtocolError(f"{where}: {key!r} is required")
    return value


def opt_integer(parent: dict[str, Any], key: str, where: str) -> int | None:
    """Like :func:`integer` but ``None`` when absent or null."""
    value = parent.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ProtocolError(f"{where}: {key!r} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and 0 < len(value) <= 30 and value.isascii():
        digits = value[1:] if value[0] == "-" else value
        if digits.isdigit():
            return int(value)
    raise ProtocolError(f"{where}: {key!r} must be an integer")
