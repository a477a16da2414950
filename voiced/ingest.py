"""Ingest: classify each MQTT message, validate it, and hand it to its site's worker.

Runs on the event loop for every message, so it only parses headers and enqueues. Every
value that voiced will send out again is validated here, where it enters (site ids,
session ids, customData, wakeword ids: `voiced.transport.hermes`, `voiced.sites`), and
so is the work a message asks for (sample rate, audio per message). A site is created
only for a valid message. Bad input is reported through `error` (logged, rate-limited on
`hermes/error/<component>`) and dropped; an invalid site id is never put in a topic, so
such errors carry `siteId: null`. The rules are listed in docs/ingest.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from voiced.arrival import FAST_BURST_S, FAST_RATE
from voiced.audio.wav import parse_wav
from voiced.const import MAX_AUDIO_PAYLOAD, MAX_MESSAGE_AUDIO_MS
from voiced.errors import AudioFormatError, VoicedError
from voiced.sessions import SiteWorker
from voiced.site_inbox import Audio, Control
from voiced.sites import SITE_ID_MAX, SiteRefused, SiteRegistry, is_valid_id, safe_text
from voiced.transport import hermes, native
from voiced.transport.native import INTERNAL_FORMAT, PcmFormat

log = logging.getLogger(__name__)

ErrorReporter = Callable[[str, str, str, str | None], None]
"""`error(component, code, message, site)`; `site` is None unless it is a valid id."""

AUDIO = "audioServer"
"""Error component for audio topics."""
CONTROL = "transport"
"""Error component for control topics."""


class Ingest:
    """`route` for the MQTT reader, guarded: a message whose handling raises (a bug of
    voiced's, not the sender's) is answered like any refused one, on
    `hermes/error/transport` with code `internal` (rate limited, so a flood of the same
    message cannot flood the log), its traceback logged once per kind and place; every
    other message is still read."""

    def __init__(self, sites: SiteRegistry, error: ErrorReporter) -> None:
        self._sites = sites
        self._error = error
        self.failures = 0
        """Messages dropped because handling them raised."""
        self.retained_refused = 0
        """Retained audio and control messages the broker replayed, not taken."""
        self._seen: set[tuple[str, str]] = set()

    def __call__(self, topic: str, payload: bytes) -> None:
        try:
            route(topic, payload, self._sites, self._error)
        except Exception as exc:
            self.failures += 1
            where = (type(exc).__name__, _raised_at(exc))
            if where not in self._seen:
                self._seen.add(where)
                log.exception("ingest failed on %s", ascii(topic[:120]))
            self._error(CONTROL, "internal",
                        f"{safe_text(topic)}: voiced failed to handle this message "
                        f"({type(exc).__name__}: {safe_text(str(exc))}); it was dropped", None)


    def retained(self, topic: str, payload: bytes) -> None:
        """A message the broker replayed from its retained store (published with retain
        before voiced subscribed). A native `format` is a standing fact and is taken;
        audio and session control are old news replayed at every (re)connect (a stale
        session opened each time voiced starts), so they are refused, `retained` on the
        error path, and counted."""
        parts = topic.split("/")
        if len(parts) == 4 and parts[:2] == ["voiced", "audio"] and parts[3] == "format":
            self(topic, payload)
            return
        self.retained_refused += 1
        audio = topic.startswith(("hermes/audioServer/", "voiced/audio/"))
        self._error(AUDIO if audio else CONTROL, "retained",
                    f"{safe_text(topic)}: a retained message, replayed by the broker at every "
                    "(re)connect, was ignored; publish audio and session control without "
                    "retain (clear this one: publish an empty retained message on the topic)",
                    _topic_site(topic) if audio else None)


def _raised_at(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"


def route(topic: str, payload: bytes, sites: SiteRegistry, error: ErrorReporter) -> None:
    """Deliver one message (audio or control) to the site it belongs to."""
    if len(payload) > MAX_AUDIO_PAYLOAD:  # before parsing: never read a huge payload
        audio = topic.startswith(("hermes/audioServer/", "voiced/audio/"))
        error(AUDIO if audio else CONTROL, "payload_too_large",
              f"{safe_text(topic)}: {len(payload)} bytes is over the {MAX_AUDIO_PAYLOAD}-byte "
              "limit", _topic_site(topic) if audio else None)
        return
    try:
        nat = native.parse_topic(topic)
    except VoicedError as exc:
        error(AUDIO, exc.code, exc.message, None)
        return
    if nat is not None:
        site, kind = nat
        if kind == "format":
            _native_format(topic, payload, site, sites, error)
        else:
            _native_pcm(topic, payload, site, sites, error)
        return
    try:
        msg = native.parse_control(topic, payload) or hermes.parse_topic(topic, payload)
    except hermes.PayloadError as exc:
        component = AUDIO if topic.startswith("hermes/audioServer/") else CONTROL
        error(component, exc.code, exc.message, exc.site)
        return
    if msg is None:
        return
    if msg.kind == hermes.Inbound.AUDIO_FRAME:
        _hermes_audio(topic, payload, msg.site, sites, error)
    elif msg.kind in (hermes.Inbound.HOTWORD, hermes.Inbound.START_LISTENING):
        owner = sites.session_site(msg.session_id) if msg.session_id else None
        if owner is not None and owner != msg.site:
            # one session, one site: a client-chosen id that is open elsewhere would make
            # that session's events (and its answers) ambiguous to everyone downstream
            error(CONTROL, "session_id_in_use",
                  f"{safe_text(topic)}: session {safe_text(msg.session_id or '')} is open on "
                  "another site; a session id names one session on one site", msg.site)
            return
        worker = _worker(msg.site, CONTROL, sites, error)
        if worker is not None:
            if worker.contender is not None:  # room-group arbitration (voiced.arbiter_service)
                worker.contender.woke(msg.wake_score)
            _offer(worker, Control("listen", session_id=msg.session_id,
                                   wakeword_id=msg.wakeword_id, custom_data=msg.custom_data),
                   topic, error)
    elif msg.kind == hermes.Inbound.STOP_LISTENING:
        # nothing to stop on a site that does not exist: never create one for this
        # nor keep one alive: a stop is not the site being heard (idle expiry)
        existing = sites.get(msg.site, touch=False)
        if existing is not None:  # the worker checks the sessionId against its session
            _offer(existing, Control("stop", session_id=msg.session_id), topic, error)


def _offer(worker: SiteWorker, item: Audio | Control, topic: str,
           error: ErrorReporter) -> None:
    """Queue `item` on its site; a refusal is answered: a control message always (it
    is refused only when the queue holds nothing but controls), dropped audio at the
    1st, 10th, 100th and every 1000th chunk (the log counts the same)."""
    dropped, too_fast = worker.dropped, worker.too_fast
    taken = worker.offer(item)
    if taken and worker.dropped == dropped:
        return
    if worker.too_fast > too_fast:
        count = worker.too_fast
        if count in (1, 10, 100) or count % 1000 == 0:
            error(AUDIO, "too_fast", f"{safe_text(topic)}: site {worker.site} sends audio far "
                  f"faster than real time (over {FAST_BURST_S:.0f} s of 16 kHz mono at once, "
                  f"then {FAST_RATE:.0f} s a second): this audio was refused; {count} chunks "
                  "so far", worker.site)
        return
    if not taken and worker.dropped == dropped:
        # refused with nothing dropped: the site is stopping (voiced's shutdown, an idle
        # site being forgotten), or its queue holds nothing but controls
        if isinstance(item, Control):
            stopping = worker.stopping
            error(CONTROL, "site_stopping" if stopping else "queue_full",
                  f"{safe_text(topic)}: site {worker.site} "
                  + ("is stopping" if stopping else "has a queue full of control messages")
                  + f"; this {item.kind} was dropped", worker.site)
        return
    if isinstance(item, Control):
        item_said = f"the oldest queued audio chunk was dropped for this {item.kind}"
    else:
        item_said = "this audio was dropped"
    count = worker.dropped
    if count in (1, 10, 100) or count % 1000 == 0:
        error(AUDIO, "queue_full", f"{safe_text(topic)}: site {worker.site}'s queue is full "
              f"(voiced is behind, or the satellite sends faster than real time): "
              f"{item_said}; {count} audio chunks dropped so far", worker.site)


def _topic_site(topic: str) -> str | None:
    """The site segment of an audio topic when it is a valid site id, else None."""
    parts = topic.split("/")
    site = parts[2] if len(parts) == 4 else None
    return site if is_valid_id(site, SITE_ID_MAX) else None


def _worker(site: str, component: str, sites: SiteRegistry,
            error: ErrorReporter) -> SiteWorker | None:
    """The site's worker, created if allowed; refusals are reported (rate-limited)."""
    try:
        return sites.get_or_create(site)
    except SiteRefused as exc:
        if exc.report:
            error(component, exc.code, exc.message, site)
        return None


def check_audio_amount(frames: int, rate: int) -> None:
    """Raise AudioFormatError unless a message holds some audio and at most
    MAX_MESSAGE_AUDIO_MS of it (`audio_empty`, `audio_too_long`)."""
    if frames == 0:
        raise AudioFormatError("audio_empty", "the message holds no audio")
    if frames * 1000 > rate * MAX_MESSAGE_AUDIO_MS:
        raise AudioFormatError(
            "audio_too_long",
            f"{frames / rate:.2f} s of audio in one message; at most "
            f"{MAX_MESSAGE_AUDIO_MS} ms per message (send a stream of short chunks, "
            "e.g. 20-64 ms each)")


def _hermes_audio(topic: str, payload: bytes, site: str, sites: SiteRegistry,
                  error: ErrorReporter) -> None:
    try:
        wav = parse_wav(payload)
        check_audio_amount(wav.frames, wav.rate)
    except VoicedError as exc:
        error(AUDIO, exc.code, f"{topic}: {exc.message}", site)
        return
    worker = _worker(site, AUDIO, sites, error)
    if worker is not None:
        _offer(worker, Audio(wav.pcm, PcmFormat(wav.rate, wav.width, wav.channels),
                             wav.float_format), topic, error)


def _native_format(topic: str, payload: bytes, site: str, sites: SiteRegistry,
                   error: ErrorReporter) -> None:
    try:
        fmt = native.parse_format(topic, payload)
    except VoicedError as exc:
        error(AUDIO, exc.code, exc.message, site)
        return
    if _worker(site, AUDIO, sites, error) is not None:
        sites.set_pcm_format(site, fmt)


def _native_pcm(topic: str, payload: bytes, site: str, sites: SiteRegistry,
                error: ErrorReporter) -> None:
    existing = sites.get(site)
    fmt = sites.pcm_format(site) or INTERNAL_FORMAT
    frame = fmt.width * fmt.channels
    if len(payload) % frame:
        error(AUDIO, "pcm_partial_frame",
              f"{topic}: {len(payload)} bytes is not a whole number of {frame}-byte frames",
              site)
        return
    try:
        check_audio_amount(len(payload) // frame, fmt.rate)
    except VoicedError as exc:
        error(AUDIO, exc.code, f"{topic}: {exc.message}", site)
        return
    worker = existing or _worker(site, AUDIO, sites, error)
    if worker is not None:
        _offer(worker, Audio(payload, fmt, False), topic, error)
