"""Ingest: classify each MQTT message and hand it to its site's worker.

Runs on the event loop for every message, so it only parses headers and enqueues; bad
input is reported through `error` (logged, rate-limited on hermes/error) and dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from voiced.audio.wav import parse_wav
from voiced.const import MAX_AUDIO_PAYLOAD
from voiced.errors import VoicedError
from voiced.sessions import Audio, Control, SiteWorker
from voiced.transport import hermes, native
from voiced.transport.native import PcmFormat

ErrorReporter = Callable[[str, str, str, str | None], None]
"""`error(component, code, message, site)`."""


def route(
    topic: str, payload: bytes, worker_for: Callable[[str], SiteWorker | None], error: ErrorReporter
) -> None:
    """Deliver one message (audio or control) to the site it belongs to."""
    if len(payload) > MAX_AUDIO_PAYLOAD:
        site = topic.split("/")[2] if topic.count("/") >= 3 else None
        error(
            "audioServer",
            "payload_too_large",
            f"{topic}: {len(payload)} bytes is over the {MAX_AUDIO_PAYLOAD}-byte limit",
            site,
        )
        return
    nat = native.parse_topic(topic)
    if nat is not None:
        site, kind = nat
        worker = worker_for(site)
        if worker is None:
            return
        if kind == "format":
            try:
                worker.pcm_format = native.parse_format(topic, payload)
            except VoicedError as exc:
                error("audioServer", exc.code, exc.message, site)
        else:
            fmt = worker.pcm_format
            if len(payload) % (fmt.width * fmt.channels):
                error(
                    "audioServer",
                    "pcm_partial_frame",
                    f"{topic}: {len(payload)} bytes is not a whole number of "
                    f"{fmt.width * fmt.channels}-byte frames",
                    site,
                )
                return
            worker.offer(Audio(payload, fmt, False))
        return
    try:
        msg = hermes.parse_topic(topic, payload)
    except VoicedError as exc:
        error("transport", exc.code, exc.message, None)
        return
    if msg is None:
        return
    worker = worker_for(msg.site)
    if worker is None:
        return
    if msg.kind == hermes.Inbound.AUDIO_FRAME:
        try:
            wav = parse_wav(payload)
        except VoicedError as exc:
            error("audioServer", exc.code, f"{topic}: {exc.message}", msg.site)
            return
        worker.offer(Audio(wav.pcm, PcmFormat(wav.rate, wav.width, wav.channels), wav.float_format))
    elif msg.kind in (hermes.Inbound.HOTWORD, hermes.Inbound.START_LISTENING):
        worker.offer(
            Control(
                "listen",
                session_id=msg.data.get("sessionId"),
                wakeword_id=msg.wakeword_id or msg.data.get("wakewordId"),
                custom_data=msg.data.get("customData"),
            )
        )
    elif msg.kind == hermes.Inbound.STOP_LISTENING:
        worker.offer(Control("stop"))
