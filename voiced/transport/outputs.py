"""Everything voiced says on MQTT: Hermes messages, native events, rate-limited errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from voiced.models import EventType, PipelineEvent, Termination
from voiced.transport import hermes, native
from voiced.transport.mqtt import MqttLink, Payload

log = logging.getLogger(__name__)


class Outputs:
    """Publishes results; other parts (the HTTP API) can listen to events."""

    def __init__(self, link: MqttLink, error_interval_s: float) -> None:
        self._link = link
        self._error_interval_s = error_interval_s
        self._last_error: dict[tuple[str | None, str], float] = {}
        self.listeners: list[Callable[[PipelineEvent], None]] = []
        self.errors_suppressed = 0

    async def publish(self, topic: str, payload: Payload) -> None:
        """Publish anything (used by plugins)."""
        await self._link.publish(topic, payload)

    async def event(self, event: PipelineEvent) -> None:
        """A native event on `voiced/events/<site>`, also handed to listeners."""
        await self._link.publish(native.events_topic(event.site), event.to_json())
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed")

    async def session_started(self, site: str, session_id: str, custom_data: str | None) -> None:
        """Hermes sessionStarted plus the native event."""
        await self._link.publish("hermes/dialogueManager/sessionStarted",
                                 hermes.session_started(session_id, site, custom_data))
        await self.event(PipelineEvent(EventType.SESSION_STARTED, site, session_id))

    async def session_ended(self, site: str, session_id: str, reason: Termination,
                            custom_data: str | None = None, error: str | None = None) -> None:
        """Hermes sessionEnded plus the native event."""
        await self._link.publish("hermes/dialogueManager/sessionEnded",
                                 hermes.session_ended(session_id, site, reason, custom_data, error))
        await self.event(PipelineEvent(EventType.SESSION_ENDED, site, session_id,
                                       {"reason": str(reason), "error": error}))

    async def say(self, site: str, text: str, session_id: str | None, lang: str | None) -> None:
        """Ask an external TTS to speak (`hermes/tts/say`)."""
        await self._link.publish("hermes/tts/say", hermes.tts_say(text, site, session_id, lang))

    async def play_bytes(self, site: str, request_id: str, wav: bytes) -> None:
        """Play a WAV on a satellite."""
        await self._link.publish(f"hermes/audioServer/{site}/playBytes/{request_id}", wav)

    async def error(self, component: str, code: str, message: str, site: str | None,
                    session_id: str | None = None) -> bool:
        """`hermes/error/<component>` and an error event, at most one per site and code in
        the configured interval. Returns False when rate-limited."""
        now = time.monotonic()
        key = (site, code)
        last = self._last_error.get(key)
        if last is not None and now - last < self._error_interval_s:
            self.errors_suppressed += 1
            return False
        self._last_error[key] = now
        if len(self._last_error) > 10_000:
            self._last_error.clear()
        await self._link.publish(f"hermes/error/{component}",
                                 hermes.error(component, f"{code}: {message}", site, session_id))
        if site is not None:
            data: dict[str, Any] = {"component": component, "code": code, "message": message}
            await self.event(PipelineEvent(EventType.ERROR, site, session_id or "", data))
        return True
