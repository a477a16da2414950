"""The live websockets: `/api/events` (every event of every site) and `/api/stream` (a
browser tab as a satellite).

`/api/events?site=A&site=B&type=intent&levels=true` streams pipeline events as JSON, the
hub's bounded per-client queues keeping a slow reader from slowing anything else
(voiced.http.hub). `/api/stream` takes a JSON hello `{site, rate?, format?, mode?}`, then
binary PCM frames that go to a site worker claimed for the socket (the same queue, VAD,
ASR, intents and handlers as MQTT audio); the events of that site come back on the same
socket. Message shapes are in the README ("Live events").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from voiced.audio.wav import check_rate
from voiced.config import SiteMode
from voiced.const import MAX_AUDIO_PAYLOAD, SAMPLE_RATE
from voiced.errors import VoicedError
from voiced.http.errors import error_response
from voiced.http.hub import LIVE_TYPES, LiveClient, LiveHub, close_ws, dumps
from voiced.http.keys import DAEMON
from voiced.ingest import check_audio_amount
from voiced.models import EventType
from voiced.site_inbox import Audio, Control
from voiced.sites import SITE_ID_MAX, SiteRefused, check_site_id, is_valid_id, safe_repr
from voiced.transport.native import PcmFormat

log = logging.getLogger(__name__)

HUB: web.AppKey[LiveHub] = web.AppKey("live_hub", LiveHub)
"""The application's `LiveHub` (created on start-up, closed on shutdown)."""

HEARTBEAT_S = 30.0
"""Ping interval; a peer that does not answer is disconnected."""
MAX_FILTER_VALUES = 64
"""Most `site=` or `type=` values one `/api/events` request may give."""
EVENT_TYPES = frozenset({*(str(t) for t in EventType), *LIVE_TYPES})
HELLO_TIMEOUT_S = 10.0
"""A `/api/stream` client must say which site it is within this long."""
MAX_CONTROL_BYTES = 4096
"""Largest text message a client may send (the hello, listen/stop)."""
FORMATS = {"s16le": (2, False), "f32le": (4, True)}
"""`/api/stream` sample formats: name → (bytes per sample, floating point)."""
HELLO_KEYS = frozenset({"site", "rate", "format", "mode"})
RELEASE_TIMEOUT_S = 5.0
"""When a stream closes, its site's queued audio and utterance in progress get this long."""
QUEUE_FULL_REPORT_S = 1.0


def setup(app: web.Application) -> None:
    """Register `/api/events` and `/api/stream` and the hub's life."""
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/stream", stream)
    app.on_startup.append(_start)
    app.on_shutdown.append(_stop)


async def _start(app: web.Application) -> None:
    hub = LiveHub(app[DAEMON])
    hub.start()
    app[HUB] = hub


async def _stop(app: web.Application) -> None:
    hub = app.get(HUB)
    if hub is not None:
        await hub.stop()


class FilterError(ValueError):
    """A bad query parameter: `(field, message)`."""


def parse_filters(query: Any) -> dict[str, Any]:
    """`site=`, `type=` (repeatable) and `levels=` of an `/api/events` request."""
    unknown = sorted(set(query) - {"site", "type", "levels"})
    if unknown:
        raise FilterError(unknown[0], f"unknown query parameter {safe_repr(unknown[0])}; "
                          "use site=, type= (both repeatable) and levels=true")
    sites = query.getall("site", [])
    types = query.getall("type", [])
    for field, values in (("site", sites), ("type", types)):
        if len(values) > MAX_FILTER_VALUES:
            raise FilterError(field, f"at most {MAX_FILTER_VALUES} {field}= values")
    for site in sites:
        if not is_valid_id(site, SITE_ID_MAX):
            raise FilterError("site", f"site={safe_repr(site)} is not a valid site id (1 to "
                              f"{SITE_ID_MAX} of A-Z a-z 0-9 _ - . : @)")
    for kind in types:
        if kind not in EVENT_TYPES:
            raise FilterError("type", f"type={safe_repr(kind)} is not an event type; one of "
                              f"{', '.join(sorted(EVENT_TYPES))}")
    levels = query.get("levels", "false").lower()
    if levels not in ("true", "false", "1", "0"):
        raise FilterError("levels", "levels must be true or false")
    return {"sites": frozenset(sites) if sites else None,
            "types": frozenset(types) if types else None,
            "levels": levels in ("true", "1")}


async def _open(request: web.Request, hub: LiveHub,
                max_msg_size: int) -> web.WebSocketResponse | web.Response:
    """The upgraded websocket, holding one of the hub's slots (the caller gives it back
    with `hub.release()` when the socket ends), or 503 when none is free."""
    if not hub.reserve():
        return error_response(503, "too_many_websockets",
                              f"{hub.open} websockets are open, the most voiced serves "
                              "at once; close one and retry", headers={"Retry-After": "5"})
    # no compression: every client would deflate the same messages again
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, compress=False,
                               max_msg_size=max_msg_size)
    try:
        await ws.prepare(request)
    except BaseException:
        hub.release()
        raise
    return ws


async def _serve(hub: LiveHub, client: LiveClient,
                 read: Callable[[], Coroutine[Any, Any, tuple[int, str]]]) -> None:
    """Run the reader next to the client's writer until either ends; then close."""
    reader = asyncio.create_task(read(), name=f"websocket-{client.name}-in")
    code: int = WSCloseCode.OK
    reason = ""
    try:
        await asyncio.wait({reader, client.task}, return_when=asyncio.FIRST_COMPLETED)
        if reader.done() and not reader.cancelled():
            failure = reader.exception()
            if failure is None:
                code, reason = reader.result()
            else:
                log.error("websocket %s: reading failed", client.name, exc_info=failure)
                code, reason = WSCloseCode.INTERNAL_ERROR, "internal error (see the log)"
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await hub.remove(client, code, reason)


# ---- /api/events -------------------------------------------------------------------------
async def events(request: web.Request) -> web.StreamResponse:
    """Every pipeline event (filtered), as JSON text messages."""
    hub = request.app[HUB]
    try:
        filters = parse_filters(request.query)
    except FilterError as exc:
        field, text = exc.args
        return error_response(400, "query_invalid", text, field=field)
    ws = await _open(request, hub, MAX_CONTROL_BYTES)
    if not isinstance(ws, web.WebSocketResponse):
        return ws
    try:
        await _events(ws, request, hub, filters)
    finally:
        hub.release()
    return ws


async def _events(ws: web.WebSocketResponse, request: web.Request, hub: LiveHub,
                  filters: dict[str, Any]) -> None:
    status = hub.refresh_status()  # before adding: a change goes to the others only
    client = hub.add(ws, request.transport, **filters)
    wanted = filters["sites"]
    client.offer(dumps({
        "type": "hello", "time": round(time.time(), 3),
        "filters": {"site": sorted(wanted) if wanted else [],
                    "type": sorted(filters["types"]) if filters["types"] else [],
                    "levels": filters["levels"]},
        "sites": hub.sites(wanted), "status": status}))

    async def read() -> tuple[int, str]:
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
        return WSCloseCode.OK, ""

    await _serve(hub, client, read)


# ---- /api/stream -------------------------------------------------------------------------
class StreamError(Exception):
    """A client mistake on `/api/stream`: `code`, `message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_hello(text: str, default_mode: SiteMode) -> tuple[str, int, str, SiteMode]:
    """`(site, rate, format, mode)` from the first message; StreamError says what is wrong."""
    try:
        hello = json.loads(text)
    except (ValueError, RecursionError):
        raise StreamError("hello_invalid", "the first message must be a JSON object "
                          '{"site": ..., "rate"?: 16000, "format"?: "s16le", '
                          '"mode"?: "always"}') from None
    if not isinstance(hello, dict):
        raise StreamError("hello_invalid", f"the first message must be a JSON object, not "
                          f"{type(hello).__name__}")
    unknown = sorted(set(hello) - HELLO_KEYS)
    if unknown:
        raise StreamError("hello_invalid", f"unknown field {safe_repr(unknown[0])}; the hello "
                          "has site, rate, format and mode")
    try:
        site = check_site_id(hello.get("site"), "/api/stream hello")
    except VoicedError as exc:
        raise StreamError(exc.code, exc.message) from None
    rate = hello.get("rate", SAMPLE_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise StreamError("rate_invalid", f"rate must be an integer (Hz), got {safe_repr(rate)}")
    try:
        check_rate(rate)
    except VoicedError as exc:
        raise StreamError(exc.code, exc.message) from None
    fmt = hello.get("format", "s16le")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise StreamError("format_invalid", f"format must be one of {', '.join(FORMATS)} "
                          f"(mono, little-endian), got {safe_repr(fmt)}")
    mode = hello.get("mode", str(default_mode))
    if not isinstance(mode, str) or mode not in {str(m) for m in SiteMode}:
        raise StreamError("mode_invalid", f"mode must be one of "
                          f"{', '.join(str(m) for m in SiteMode)}, got {safe_repr(mode)}")
    return site, rate, fmt, SiteMode(mode)


def _stream_error(code: str, message: str) -> str:
    return dumps({"type": "stream_error", "code": code, "message": message,
                  "time": round(time.time(), 3)})


async def _hello(ws: web.WebSocketResponse) -> str:
    """The first message's text; StreamError when it is not a text message in time."""
    try:
        msg = await ws.receive(timeout=HELLO_TIMEOUT_S)
    except TimeoutError:
        raise StreamError("hello_missing", f"no hello within {HELLO_TIMEOUT_S:g} s") from None
    if msg.type == WSMsgType.TEXT:
        if len(msg.data) > MAX_CONTROL_BYTES:
            raise StreamError("hello_invalid", f"the hello is over {MAX_CONTROL_BYTES} bytes")
        return str(msg.data)
    if msg.type == WSMsgType.BINARY:
        raise StreamError("hello_missing", "audio before the hello: send "
                          '{"site": ...} as the first (text) message')
    raise StreamError("closed", "the connection closed before the hello")


async def stream(request: web.Request) -> web.StreamResponse:
    """A browser tab as a satellite: hello, then PCM frames; its site's events come back."""
    hub = request.app[HUB]
    daemon = request.app[DAEMON]
    ws = await _open(request, hub, MAX_AUDIO_PAYLOAD)
    if not isinstance(ws, web.WebSocketResponse):
        return ws
    try:
        await _stream(ws, request, hub, daemon)
    finally:
        hub.release()
    return ws


async def _stream(ws: web.WebSocketResponse, request: web.Request, hub: LiveHub,
                  daemon: Any) -> None:
    registry = daemon.site_registry
    try:
        text = await _hello(ws)
        site, rate, fmt, mode = parse_hello(text, daemon.config.sites.default_mode)
        worker = registry.claim(site, mode)
    except (StreamError, SiteRefused) as exc:
        if not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(_stream_error(exc.code, exc.message))
        await close_ws(ws, WSCloseCode.POLICY_VIOLATION, f"{exc.code}: {exc.message}",
                       request.transport)
        return
    width, is_float = FORMATS[fmt]
    pcm_format = PcmFormat(rate, width, 1)
    client = hub.add(ws, request.transport, sites=frozenset({site}))
    client.offer(dumps({"type": "ready", "site": site, "rate": rate, "format": fmt,
                        "mode": str(mode), "maxMessageBytes": MAX_AUDIO_PAYLOAD,
                        "time": round(time.time(), 3)}))
    log.info("site %s: a browser streams %s at %d Hz (%s)", site, fmt, rate, mode)
    last_full = 0.0

    def frame(data: bytes) -> None:
        nonlocal last_full
        if len(data) % width:
            raise StreamError("pcm_partial_frame", f"{len(data)} bytes is not a whole number "
                              f"of {width}-byte {fmt} samples")
        try:
            check_audio_amount(len(data) // width, rate)
        except VoicedError as exc:
            raise StreamError(exc.code, exc.message) from None
        too_fast = worker.too_fast
        if not worker.offer(Audio(data, pcm_format, is_float)):
            now = time.monotonic()
            if now - last_full >= QUEUE_FULL_REPORT_S:
                last_full = now
                if worker.too_fast > too_fast:
                    raise StreamError("too_fast", f"site {site}: audio is sent far faster "
                                      f"than real time; {worker.too_fast} chunks refused")
                raise StreamError("queue_full", f"site {site}: audio arrives faster than "
                                  f"voiced processes it; {worker.dropped} chunks dropped")

    def control(data: str) -> None:
        try:
            kind = json.loads(data).get("type") if len(data) <= MAX_CONTROL_BYTES else None
        except (ValueError, RecursionError, AttributeError):
            kind = None
        if kind not in ("listen", "stop"):
            raise StreamError("message_invalid", 'text messages after the hello are '
                              '{"type": "listen"} or {"type": "stop"}')
        worker.offer(Control(kind))

    async def read() -> tuple[int, str]:
        async for msg in ws:
            try:
                if msg.type == WSMsgType.BINARY:
                    frame(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    control(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
            except StreamError as exc:
                client.offer(_stream_error(exc.code, exc.message))
        return WSCloseCode.OK, ""

    try:
        await _serve(hub, client, read)
    finally:
        # stopping: the daemon drains every site itself, this one included
        await registry.release(site, RELEASE_TIMEOUT_S, stop=not daemon.supervisor.stopping)
        log.info("site %s: the browser stream closed", site)
