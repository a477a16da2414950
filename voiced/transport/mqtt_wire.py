"""What voiced's MQTT clients put on the wire and how they connect: topic checks, payload
encoding, client ids, socket options and the reconnect backoff (shared by the outgoing
link, `voiced.transport.mqtt`, and the inbound reader, `voiced.transport.reader`)."""

from __future__ import annotations

import json
import random
import re
import secrets
import socket
from collections.abc import Mapping
from typing import Any

Payload = bytes | str | Mapping[str, Any] | list[Any]

MAX_TOPIC_BYTES = 65_535
"""The longest topic MQTT can carry (UTF-8 bytes)."""
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
"""Socket options of every MQTT client voiced makes: each audio frame and answer is a
small packet sent at once, never held back for the last one's acknowledgement (Nagle;
asyncio's own sockets, the embedded broker's, already do this)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def default_client_id(host: str | None = None) -> str:
    """`voiced-<host>-<6 random hex digits>`: unique per start, at most 23 characters
    (the length every MQTT 3.1.1 broker must accept)."""
    name = re.sub(r"[^A-Za-z0-9-]", "", host if host is not None else socket.gethostname())
    return f"voiced-{name[:9] or 'host'}-{secrets.token_hex(3)}"


def topic_problem(topic: object) -> str | None:
    """Why `topic` cannot be published to (None: it can)."""
    if not isinstance(topic, str):
        return f"is a {type(topic).__name__}, not text"
    if not topic:
        return "is empty"
    if "+" in topic or "#" in topic:
        return "contains a wildcard (+ or #)"
    if _CONTROL.search(topic):
        return "contains a control character"
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8 (it contains a lone surrogate)"
    if size > MAX_TOPIC_BYTES:
        return f"is {size} bytes long (at most {MAX_TOPIC_BYTES})"
    return None


def encode_payload(payload: Payload) -> bytes:
    """bytes pass through, text is UTF-8, mappings and lists become JSON.

    Never fails on text that cannot be UTF-8 (a lone surrogate): text is then sent with
    backslash escapes, JSON as ASCII with \\u escapes.
    """
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        try:
            return payload.encode()
        except UnicodeEncodeError:
            return payload.encode("utf-8", "backslashreplace")
    try:
        return json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(payload, ensure_ascii=True).encode()


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Jittered exponential backoff: between half and all of min(high, low * 2**attempt)."""
    return backoff_ceiling(attempt, low, high) * rng.uniform(0.5, 1.0)


def backoff_ceiling(attempt: int, low: float, high: float) -> float:
    """The longest wait before attempt `attempt` (0: the first retry)."""
    return min(high, low * (2 ** min(attempt, 30)))
