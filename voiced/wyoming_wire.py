"""The Wyoming wire format as voiced's server reads it: one event (a JSON header line,
then `data_length` bytes of JSON and `payload_length` bytes of payload) with every length
bounded before anything is read, and each way it can be malformed named (`BadEvent`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wyoming.event import Event

MAX_HEADER_BYTES = 64 * 1024
"""Longest header line (bytes, JSON and its newline)."""
MAX_DATA_BYTES = 64 * 1024
"""Largest `data_length` (bytes of JSON after the header)."""
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Largest `payload_length` (bytes): one audio chunk (over 2 minutes at 16 kHz mono 16-bit;
clients send 20-100 ms)."""

class BadEvent(Exception):
    """An event that cannot be taken: `code`/`text` go into the `error` event; `fatal` when
    the stream's framing is lost and the connection must end."""

    def __init__(self, code: str, text: str, fatal: bool = True) -> None:
        super().__init__(text)
        self.code, self.text, self.fatal = code, text, fatal


def _length(header: dict[str, Any], key: str, limit: int) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadEvent("event_invalid", f"{key} must be a non-negative integer")
    if value > limit:
        raise BadEvent("event_too_large", f"{key} is over the limit of {limit} bytes")
    return value


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, None at the end of the stream. BadEvent when it is malformed or too
    large (nothing over the limits is read); IncompleteReadError when the client hung up
    in the middle of one."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise BadEvent("event_too_large",
                       f"header line over {MAX_HEADER_BYTES} bytes") from None
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    try:
        header = json.loads(line)
    except (ValueError, RecursionError):
        raise BadEvent("event_invalid", "the header must be a line of JSON in UTF-8") from None
    if not isinstance(header, dict):
        raise BadEvent("event_invalid", "the header must be a JSON object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    extra = await reader.readexactly(data_length) if data_length else b""
    payload = await reader.readexactly(payload_length) if payload_length else None
    # the stream is framed: what is wrong from here on costs this event, not the connection
    kind, data = header.get("type"), header.get("data")
    if not isinstance(kind, str):
        raise BadEvent("event_invalid", 'the header needs "type", a string', fatal=False)
    data = {} if data is None else data
    if extra:
        try:
            more = json.loads(extra)
        except (ValueError, RecursionError):
            more = None
        if not isinstance(more, dict) or not isinstance(data, dict):
            raise BadEvent("event_invalid", f"{kind[:40]!r}: the header's data and the "
                           "data_length bytes must be JSON objects", fatal=False)
        data = {**data, **more}
    if not isinstance(data, dict):
        raise BadEvent("event_invalid", f"{kind[:40]!r} needs data to be a JSON object",
                       fatal=False)
    return Event(type=kind, data=data, payload=payload)
