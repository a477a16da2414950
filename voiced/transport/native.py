"""voiced's own topics: raw PCM in, rich pipeline events out.

Hermes wraps every 20 ms frame in a WAV header; the native audio topic carries bare
PCM. Its format is 16 kHz, 16-bit little-endian mono unless the satellite states
another once per stream on the `format` topic.

| topic | direction | payload |
|---|---|---|
| `voiced/audio/<site>/pcm` | satellite → voiced | raw PCM samples |
| `voiced/audio/<site>/format` | satellite → voiced | `{"rate": 16000, "width": 2, "channels": 1}` |
| `voiced/events/<site>` | voiced → | a pipeline event (JSON, see `PipelineEvent`) |
| `voiced/status` | voiced → (retained) | `{"state": "ready" or "stopping" or "offline", ...}` |
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from voiced.const import CHANNELS, SAMPLE_RATE, SAMPLE_WIDTH
from voiced.errors import TransportError

PREFIX = "voiced"
SUBSCRIPTIONS: tuple[str, ...] = (f"{PREFIX}/audio/+/pcm", f"{PREFIX}/audio/+/format")
STATUS_TOPIC = f"{PREFIX}/status"


def events_topic(site: str) -> str:
    """Where a site's pipeline events are published."""
    return f"{PREFIX}/events/{site}"


def pcm_topic(site: str) -> str:
    """Where a satellite publishes raw PCM."""
    return f"{PREFIX}/audio/{site}/pcm"


def format_topic(site: str) -> str:
    """Where a satellite states its PCM format."""
    return f"{PREFIX}/audio/{site}/format"


@dataclass(frozen=True, slots=True)
class PcmFormat:
    """The format of a raw PCM stream."""

    rate: int = SAMPLE_RATE
    """Samples per second."""
    width: int = SAMPLE_WIDTH
    """Bytes per sample."""
    channels: int = CHANNELS


INTERNAL_FORMAT = PcmFormat()


def parse_format(topic: str, payload: bytes) -> PcmFormat:
    """Parse a `format` message; TransportError names the topic and what was expected."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TransportError("bad_json", f"{topic}: payload is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise TransportError("bad_format", f"{topic}: expected a JSON object")
    fmt = PcmFormat(
        rate=data.get("rate", SAMPLE_RATE),
        width=data.get("width", SAMPLE_WIDTH),
        channels=data.get("channels", CHANNELS),
    )
    if not (isinstance(fmt.rate, int) and 4000 <= fmt.rate <= 192_000):
        raise TransportError("bad_format", f"{topic}: rate must be an integer 4000..192000")
    if fmt.width not in (1, 2, 3, 4):
        raise TransportError("bad_format", f"{topic}: width must be 1, 2, 3 or 4 bytes")
    if not (isinstance(fmt.channels, int) and 1 <= fmt.channels <= 16):
        raise TransportError("bad_format", f"{topic}: channels must be an integer 1..16")
    return fmt


def parse_topic(topic: str) -> tuple[str, str] | None:
    """`(site, "pcm" | "format")` for a native audio topic, else None."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == PREFIX and parts[1] == "audio" and parts[3] in {
        "pcm",
        "format",
    }:
        return parts[2], parts[3]
    return None
