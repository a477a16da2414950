"""The event seam: every stage emits `PipelineEvent`s into ONE sink; subscribers translate.

Stages never name a wire. The Hermes bridge (voiced.transport.bridge), the native
`voiced/events/<site>` publisher, the history writer, the audio-out (spoken answers) and,
later, the HTTP websocket and metrics subscribe here. A subscriber that fails is logged
and counted; it never stops the others or the stage that emitted.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from voiced.models import EventType, PipelineEvent, Termination
from voiced.redact import redact

log = logging.getLogger(__name__)


class Subscriber(ABC):
    """Receives every event, in order, awaited by the emitting stage."""

    name: str = "subscriber"

    @abstractmethod
    async def handle(self, event: PipelineEvent) -> None:
        """Act on one event (publish it, record it, speak it...)."""


class CallbackSubscriber(Subscriber):
    """A plain function (sync or async) as a subscriber: tests, the HTTP websocket."""

    def __init__(self, callback: Callable[[PipelineEvent], Awaitable[None] | None],
                 name: str = "callback") -> None:
        self._callback = callback
        self.name = name

    async def handle(self, event: PipelineEvent) -> None:
        """Call the function (awaiting it when it is a coroutine)."""
        result = self._callback(event)
        if result is not None:
            await result


MAX_ERROR_KEYS = 10_000
"""Rate-limit entries kept (site, code); beyond this the table starts afresh."""


class EventSink:
    """Where stages emit. Subscribers run in subscription order for each event.

    Besides `emit`, it has the shorthands stages use (`session_started`, `say`, `error`...);
    `error` is rate-limited per site and code, so a satellite sending garbage 50 times a
    second costs one error per `error_interval_s`.
    """

    def __init__(self, error_interval_s: float = 0.0) -> None:
        self._subscribers: list[Subscriber] = []
        self._error_interval_s = error_interval_s
        self._last_error: dict[tuple[str | None, str], float] = {}
        self.emitted = 0
        self.failures = 0
        """Subscriber calls that raised (each is logged with its traceback)."""
        self.errors_suppressed = 0

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        """Add a subscriber; returns it (for `unsubscribe`)."""
        self._subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Remove a subscriber (no error when it is not there)."""
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    async def emit(self, event: PipelineEvent) -> None:
        """Hand `event` to every subscriber; a failing one is logged and skipped."""
        self.emitted += 1
        for subscriber in list(self._subscribers):
            try:
                await subscriber.handle(event)
            except Exception:
                self.failures += 1
                log.exception("event subscriber %s failed on %s (site %r)", subscriber.name,
                              event.type, event.site)

    async def session_started(self, site: str, session_id: str,
                              custom_data: str | None = None) -> None:
        """A session opened on `site` (Hermes sessionStarted)."""
        await self.emit(PipelineEvent(EventType.SESSION_STARTED, site, session_id,
                                      custom_data=custom_data))

    async def session_ended(self, site: str, session_id: str, reason: Termination,
                            custom_data: str | None = None, error: str | None = None) -> None:
        """A session ended (Hermes sessionEnded)."""
        await self.emit(PipelineEvent(EventType.SESSION_ENDED, site, session_id,
                                      {"reason": str(reason), "error": error},
                                      custom_data=custom_data))

    async def say(self, site: str, text: str, session_id: str | None,
                  language: str | None) -> None:
        """Ask for `text` to be spoken on `site` (the audio-out subscriber decides how)."""
        await self.emit(PipelineEvent(EventType.SAY, site, session_id or "",
                                      {"text": text, "lang": language}))

    async def error(self, component: str, code: str, message: str, site: str | None,
                    session_id: str | None = None) -> bool:
        """An error event (Hermes `hermes/error/<component>`), at most one per site and
        code per interval. Returns False when rate-limited."""
        now = time.monotonic()
        key = (site, code)
        last = self._last_error.get(key)
        if last is not None and now - last < self._error_interval_s:
            self.errors_suppressed += 1
            return False
        if len(self._last_error) >= MAX_ERROR_KEYS:
            self._last_error.clear()
        self._last_error[key] = now
        # whatever raised it (a plugin's HTTP error, a config line), no credential leaves
        data: dict[str, Any] = {"component": component, "code": code,
                                "message": redact(message)}
        await self.emit(PipelineEvent(EventType.ERROR, site or "", session_id or "", data))
        return True


def finite(value: Any) -> Any:
    """`value` with NaN and infinities (which JSON cannot carry) as None, in nested dicts
    and lists too: for JSON that strict parsers read (live events, `voiced satellite
    --json`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
