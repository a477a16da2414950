"""The live hub: every pipeline event, fanned out to websocket clients that never slow it.

`LiveHub` subscribes to the daemon's event sink and to the site registry. Each event is
turned into JSON once and offered to every client whose filters want it; offering never
waits. A client (`LiveClient`) has a bounded queue (`QUEUE_MESSAGES`, `QUEUE_BYTES`) and
one writer task: when the queue is full the oldest message is dropped and counted, and
the client hears `{"type": "dropped", "count": n, "total": t}` before its next message.
A client whose send has not finished for `SEND_STALL_S`, or that has lost
`HOPELESS_DROPS` messages in a row, is closed (1008, "too slow"). The hub also sends what
is not a pipeline event: satellites starting and stopping, status changes, and (on
request) live audio levels. Message shapes are listed in the README ("Live events").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from aiohttp import WSCloseCode, web

from voiced.events import CallbackSubscriber, finite
from voiced.models import PipelineEvent

log = logging.getLogger(__name__)

MAX_CLIENTS = 100
"""Websockets (`/api/events` and `/api/stream` together) open at once; more get 503."""
QUEUE_MESSAGES = 500
"""Messages waiting per client before the oldest are dropped."""
QUEUE_BYTES = 1 << 20
"""Bytes of messages waiting per client before the oldest are dropped."""
HOPELESS_DROPS = 2000
"""Messages dropped in a row (no send finished in between) before a client is closed."""
SEND_STALL_S = 10.0
"""A send that has not finished after this long closes the client (it stopped reading)."""
CLOSE_TIMEOUT_S = 2.0
"""How long a close handshake may take before the connection is cut."""
TICK_S = 0.25
"""How often status is compared (and sent when it changed), and audio levels are sent to
the clients that asked for them."""
LEVEL_STALE_S = 1.0
"""A site with no audio processed for this long has no level to show."""

LIVE_TYPES = ("site_connected", "site_gone", "status")
"""Message types of the hub's own (besides the pipeline's `EventType`s)."""


def dumps(message: dict[str, Any]) -> str:
    """Compact JSON for the wire; never `NaN` or `Infinity` (browsers reject them)."""
    try:
        return json.dumps(message, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        return json.dumps(finite(message), separators=(",", ":"), default=str)


def message(kind: str, site: str = "", session_id: str = "", data: dict[str, Any] | None = None,
            timings: dict[str, float] | None = None, at: float | None = None) -> dict[str, Any]:
    """An event message: `{type, site, sessionId, time, data, timings}`."""
    return {"type": kind, "site": site, "sessionId": session_id,
            "time": round(time.time() if at is None else at, 3),
            "data": data or {}, "timings": timings or {}}


def event_message(event: PipelineEvent, at: float) -> dict[str, Any]:
    """A pipeline event as a websocket message (its data as on `voiced/events/<site>`)."""
    return message(str(event.type), event.site, event.session_id, dict(event.data),
                   {k: round(v, 2) for k, v in event.timings_ms.items()}, at)


class LiveClient:
    """One websocket: its filters, its bounded queue and the task that writes it."""

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None,
                 name: str, *, sites: frozenset[str] | None = None,
                 types: frozenset[str] | None = None, levels: bool = False) -> None:
        self.ws = ws
        self.transport = transport
        self.name = name
        self.sites = sites
        """Only events of these sites (None: every event, site-less ones included)."""
        self.types = types
        """Only these message types (None: all)."""
        self.levels = levels
        self.queue: deque[str] = deque()
        self.queued_bytes = 0
        self.dropped = 0
        """Messages dropped since the client connected."""
        self.sent = 0
        self.too_slow: str | None = None
        """Why the client is being closed for not reading, if it is."""
        self._unreported = 0
        self._wakeup = asyncio.Event()
        self.task = asyncio.create_task(self._pump(), name=f"websocket-{name}")

    def wants(self, kind: str, site: str) -> bool:
        """True when this client's filters let a message of `kind` on `site` through."""
        return ((self.types is None or kind in self.types)
                and (self.sites is None or site in self.sites))

    def offer(self, text: str) -> None:
        """Queue one message; never waits. The oldest are dropped past the bounds."""
        if self.too_slow is not None or self.task.done():
            return
        self.queue.append(text)
        self.queued_bytes += len(text)
        while len(self.queue) > QUEUE_MESSAGES or (
                self.queued_bytes > QUEUE_BYTES and len(self.queue) > 1):
            self.queued_bytes -= len(self.queue.popleft())
            self.dropped += 1
            self._unreported += 1
        if self._unreported >= HOPELESS_DROPS:
            self._give_up(f"too slow: {self._unreported} messages dropped in a row")
            return
        self._wakeup.set()

    def _give_up(self, why: str) -> None:
        self.too_slow = why
        self.queue.clear()
        self.queued_bytes = 0
        self.task.cancel()

    async def _pump(self) -> None:
        """Write queued messages in order (a `dropped` notice before a gap); returns when
        the client stopped reading or the connection broke."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self.queue:
                if self._unreported:
                    notice = {"type": "dropped", "count": self._unreported,
                              "total": self.dropped, "time": round(time.time(), 3)}
                    self._unreported = 0
                    if not await self._send(dumps(notice)):
                        return
                    continue  # the queue may have lost more meanwhile
                text = self.queue.popleft()
                self.queued_bytes -= len(text)
                if not await self._send(text):
                    return

    async def _send(self, text: str) -> bool:
        try:
            async with asyncio.timeout(SEND_STALL_S):
                await self.ws.send_str(text)
        except TimeoutError:
            self.too_slow = f"too slow: a message was not taken in {SEND_STALL_S:g} s"
            return False
        except (ConnectionError, RuntimeError):  # the peer went away mid-send
            return False
        self.sent += 1
        return True

    async def close(self, code: int = WSCloseCode.OK, reason: str = "") -> None:
        """Stop the writer and close the websocket (cut when the peer does not answer)."""
        if self.too_slow is not None:
            code, reason = WSCloseCode.POLICY_VIOLATION, self.too_slow
        if not self.task.done():
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await close_ws(self.ws, code, reason, self.transport)


async def close_ws(ws: web.WebSocketResponse, code: int, reason: str,
                   transport: asyncio.BaseTransport | None) -> None:
    """Close `ws` with `code` and `reason` (at most 120 bytes, the frame's limit); a peer
    that does not answer within CLOSE_TIMEOUT_S has its connection aborted (a plain close
    would wait for it to read what is still buffered)."""
    if ws.closed:
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=reason.encode()[:120])
        return
    except TimeoutError:
        pass
    except (ConnectionError, RuntimeError) as exc:
        log.debug("websocket close failed: %r", exc)
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()


class LiveHub:
    """Fans events out to the connected `LiveClient`s; one per HTTP server."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.clients: set[LiveClient] = set()
        self.subscriber = CallbackSubscriber(self.publish_event, name="websocket")
        self.messages = 0
        """Messages fanned out (each counted once, however many clients took it)."""
        self.closed_slow = 0
        """Clients closed because they did not read."""
        self.refused = 0
        """Websockets refused because MAX_CLIENTS were open."""
        self.open = 0
        """Websockets open or being opened (slots taken by `reserve`)."""
        self.dropped_closed = 0
        """Messages dropped for clients that are gone."""
        self._connected = 0
        self._ticker: asyncio.Task[None] | None = None
        self._status: dict[str, Any] | None = None

    # ---- life ----------------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe to the daemon's events and sites; start the level/status ticker."""
        self.daemon.sink.subscribe(self.subscriber)
        self.daemon.site_registry.observers.append(self.site_changed)
        self._status = self.status()
        self._ticker = asyncio.create_task(self._tick(), name="websocket-ticker")

    async def stop(self) -> None:
        """Unsubscribe and close every client (1001: voiced is stopping)."""
        self.daemon.sink.unsubscribe(self.subscriber)
        with contextlib.suppress(ValueError):
            self.daemon.site_registry.observers.remove(self.site_changed)
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        clients, self.clients = list(self.clients), set()
        await asyncio.gather(*(c.close(WSCloseCode.GOING_AWAY, "voiced is stopping")
                               for c in clients), return_exceptions=True)

    @property
    def full(self) -> bool:
        """True when no more websockets may open."""
        return self.open >= MAX_CLIENTS

    def reserve(self) -> bool:
        """Take a slot for a websocket about to be upgraded (False, counted as refused,
        when all MAX_CLIENTS are taken). Checked and taken at once, before the upgrade,
        so concurrent upgrades cannot pass the check together, and a `/api/stream`
        socket still waiting for its hello counts."""
        if self.full:
            self.refused += 1
            return False
        self.open += 1
        return True

    def release(self) -> None:
        """Give back a slot that `reserve` took, when its socket has ended."""
        self.open -= 1

    def add(self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None,
            **filters: Any) -> LiveClient:
        """A new client (its writer starts at once)."""
        self._connected += 1
        client = LiveClient(ws, transport, str(self._connected), **filters)
        self.clients.add(client)
        return client

    async def remove(self, client: LiveClient, code: int = WSCloseCode.OK,
                     reason: str = "") -> None:
        """Forget `client` and close its websocket."""
        if client in self.clients:
            self.clients.discard(client)
            self.dropped_closed += client.dropped
        if client.too_slow is not None:
            self.closed_slow += 1
            log.warning("websocket %s closed: %s (%d messages dropped)", client.name,
                        client.too_slow, client.dropped)
        await client.close(code, reason)

    def stats(self) -> dict[str, float]:
        """Counters for /metrics."""
        return {"clients": self.open, "messages": self.messages,
                "dropped": self.dropped_closed + sum(c.dropped for c in self.clients),
                "closed_slow": self.closed_slow, "refused": self.refused}

    # ---- fan-out -------------------------------------------------------------------------
    def publish_event(self, event: PipelineEvent) -> None:
        """The sink's subscriber: one pipeline event to every client that wants it."""
        if self.clients:
            self.broadcast(str(event.type), event.site, event_message(event, time.time()))

    def broadcast(self, kind: str, site: str, msg: dict[str, Any]) -> None:
        """Offer `msg` to the clients whose filters take (`kind`, `site`); serialized once."""
        text: str | None = None
        for client in list(self.clients):
            if client.wants(kind, site):
                if text is None:
                    text = dumps(msg)
                    self.messages += 1
                client.offer(text)

    def site_changed(self, site: str, live: bool) -> None:
        """The site registry's observer: a satellite started or stopped."""
        if not self.clients:
            return
        if live:
            self.broadcast("site_connected", site,
                           message("site_connected", site, data=self.site_info(site)))
        else:
            self.broadcast("site_gone", site, message("site_gone", site))

    def site_info(self, site: str) -> dict[str, Any]:
        """Mode, area and source (mqtt or browser) of a live site."""
        daemon = self.daemon
        worker = daemon.sites.get(site)
        return {"mode": str(worker.mode) if worker is not None else None,
                "area": daemon.config.sites.area_for(site),
                "source": "browser" if site in daemon.site_registry.claimed else "mqtt"}

    def sites(self, only: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Every live site (or those of `only`) with its `site_info`."""
        wanted = set(only) if only is not None else None
        return {site: self.site_info(site) for site in sorted(self.daemon.sites)
                if wanted is None or site in wanted}

    def status(self) -> dict[str, Any]:
        """What a `status` message carries; sent again whenever it changes."""
        daemon = self.daemon
        stopping = daemon.supervisor.stopping
        return {
            "state": "stopping" if stopping else "ready" if daemon.connected else "starting",
            "mqtt": daemon.connected,
            "overloaded": daemon.health.overloaded,
            "sitesBehind": daemon.health.behind,
            "plugins": ({name: {"state": str(s.state), "error": s.error}
                         for name, s in sorted(daemon.host.statuses.items())}
                        if daemon.host is not None else {}),
            "handlersFailed": (sum(1 for h in daemon.router.statuses if not h.ok)
                               if daemon.router is not None else 0),
            "reloads": daemon.reloads,
            "reloadError": getattr(daemon, "reload_error", None),
        }

    # ---- the ticker ------------------------------------------------------------------------
    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.refresh_status()
                self._send_levels()
            except Exception:
                log.exception("websocket ticker failed; going on")

    def refresh_status(self) -> dict[str, Any]:
        """The current status; sent to every client when it changed since last sent (a new
        client gets it in its hello, so call this before adding one)."""
        current = self.status()
        if current != self._status:
            self._status = current
            self.broadcast("status", "", message("status", data=current))
        return current

    def levels(self, only: frozenset[str] | None = None) -> dict[str, float]:
        """The dBFS level of each site that processed audio in the last LEVEL_STALE_S."""
        now = time.time()
        levels = {}
        for site, worker in self.daemon.sites.items():
            heard = getattr(worker, "last_audio_wall", None)
            if heard is None or now - heard > LEVEL_STALE_S:
                continue
            if only is None or site in only:
                levels[site] = round(float(getattr(worker, "level_dbfs", -96.0)), 1)
        return levels

    def _send_levels(self) -> None:
        listeners = [c for c in self.clients if c.levels]
        if not listeners:
            return
        everything: str | None = None
        for client in listeners:
            if client.sites is None:
                if everything is None:
                    levels = self.levels()
                    if not levels:
                        return
                    everything = dumps(message("level", data={"levels": levels}))
                client.offer(everything)
            else:
                levels = self.levels(client.sites)
                if levels:
                    client.offer(dumps(message("level", data={"levels": levels})))
