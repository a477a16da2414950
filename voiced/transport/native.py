"""voiced's own topics: raw PCM in, rich pipeline events out.

Hermes wraps every 20 ms frame in a WAV header; the native audio topic carries bare
PCM. Its format is 16 kHz, 16-bit little-endian mono unless the satellite states
another once per stream on the `format` topic. The `<site>` segment is validated where
it enters (`voiced.sites.check_site_id`); limits are in docs/ingest.md.

| topic | direction | payload |
|---|---|---|
| `voiced/audio/<site>/pcm` | satellite → voiced | raw PCM samples |
| `voiced/audio/<site>/format` | satellite → voiced | `{"rate": 16000, "width": 2, "channels": 1}` |
| `voiced/control/<site>/listen` | satellite → voiced | `{sessionId?, wakewordId?, ...}` |
| `voiced/control/<site>/stop` | satellite → voiced | `{sessionId?}` or empty |
| `voiced/events/<site>` | voiced → | a pipeline event (JSON, see `PipelineEvent`) |
| `voiced/status` | voiced → (retained) | `{"state": "ready" or "stopping" or "offline", ...}` |

`listen` opens a session as hotword/detected does, `stop` stops listening as
asr/stopListening does. The control topics name their site, so a broker ACL can let each
satellite control only its own site (config/mosquitto/voiced.acl); Hermes' own control
topics carry the site only in the payload, where no broker can check it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from voiced.audio.wav import check_rate
from voiced.const import CHANNELS, SAMPLE_RATE, SAMPLE_WIDTH
from voiced.errors import AudioFormatError, TransportError
from voiced.sites import check_site_id, safe_repr, safe_text
from voiced.transport.hermes import HermesMessage, Inbound, PayloadError, parse_site_control

PREFIX = "voiced"
CONTROLS: dict[str, Inbound] = {"listen": Inbound.START_LISTENING,
                                "stop": Inbound.STOP_LISTENING}
"""`voiced/control/<site>/<name>`: what each control topic does."""
SUBSCRIPTIONS: tuple[str, ...] = (f"{PREFIX}/audio/+/pcm", f"{PREFIX}/audio/+/format",
                                  *(f"{PREFIX}/control/+/{name}" for name in CONTROLS))
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


def control_topic(site: str, name: str) -> str:
    """Where a satellite opens (`listen`) or stops (`stop`) a session on its site."""
    return f"{PREFIX}/control/{site}/{name}"


@dataclass(frozen=True, slots=True)
class PcmFormat:
    """The format of a raw PCM stream."""

    rate: int = SAMPLE_RATE
    """Samples per second."""
    width: int = SAMPLE_WIDTH
    """Bytes per sample."""
    channels: int = CHANNELS


INTERNAL_FORMAT = PcmFormat()


MAX_WIDTH = 4
"""Bytes per integer sample (8-bit unsigned, 16/24/32-bit signed)."""
MAX_CHANNELS = 16


def parse_format(topic: str, payload: bytes) -> PcmFormat:
    """Parse a `format` message; TransportError names the topic and what was expected.

    Codes: `json_invalid` (not JSON, nested too deeply, not an object), `format_invalid`
    (a field of the wrong type or range), `rate_unsupported` (not in SUPPORTED_RATES).
    """
    where = safe_text(topic)
    try:
        data = json.loads(payload)
    except RecursionError:
        raise TransportError("json_invalid",
                             f"{where}: payload is not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an over-long integer
        raise TransportError("json_invalid", f"{where}: payload is not valid JSON "
                             f"({safe_text(str(exc), 200)})") from None
    if not isinstance(data, dict):
        raise TransportError("json_invalid", f"{where}: expected a JSON object, "
                             f"got {type(data).__name__}")
    rate = _int_field(where, data, "rate", SAMPLE_RATE)
    width = _int_field(where, data, "width", SAMPLE_WIDTH)
    channels = _int_field(where, data, "channels", CHANNELS)
    if not 1 <= width <= MAX_WIDTH:
        raise TransportError("format_invalid", f"{where}: width must be 1, 2, 3 or 4 bytes")
    if not 1 <= channels <= MAX_CHANNELS:
        raise TransportError("format_invalid",
                             f"{where}: channels must be an integer 1..{MAX_CHANNELS}")
    try:
        check_rate(rate)
    except AudioFormatError as exc:
        raise TransportError(exc.code, f"{where}: {exc.message}") from None
    return PcmFormat(rate, width, channels)


def _int_field(where: str, data: dict[str, object], key: str, default: int) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise TransportError("format_invalid", f"{where}: {key} must be an integer, "
                             f"got {safe_repr(value)}")
    return value


def parse_topic(topic: str) -> tuple[str, str] | None:
    """`(site, "pcm" | "format")` for a native audio topic, else None.

    Raises TransportError("site_id_invalid") when the topic's site segment is not a valid
    site id (it would later become part of `voiced/events/<site>`).
    """
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == PREFIX and parts[1] == "audio" and parts[3] in {
        "pcm",
        "format",
    }:
        return check_site_id(parts[2], topic), parts[3]
    return None


def parse_control(topic: str, payload: bytes) -> HermesMessage | None:
    """A `voiced/control/<site>/listen|stop` message as the Hermes control it stands for;
    None for any other topic. Raises PayloadError (`site_id_invalid`, `site_mismatch`, and
    the payload checks of `hermes.parse_topic`)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != PREFIX or parts[1] != "control" or parts[3] not in CONTROLS:
        return None
    try:
        site = check_site_id(parts[2], topic)
    except TransportError as exc:
        raise PayloadError(exc.code, exc.message) from None
    return parse_site_control(CONTROLS[parts[3]], site, topic, payload)
