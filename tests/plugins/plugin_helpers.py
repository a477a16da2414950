"""Helpers for the plugin tests: requests rendered like the router renders them, a
recorder standing in for the daemon's publish/say, and loopback URLs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from voiced.intents import templates
from voiced.intents.api import Plugin, Request
from voiced.models import NO_SPEAKER, IntentResult, Slot, SpeakerMatch


def make_request(
    plugin: type[Plugin] | Plugin,
    options: Mapping[str, Any],
    *,
    intent: str = "TestIntent",
    slots: Mapping[str, Any] | None = None,
    site: str = "kitchen",
    area: str | None = None,
    speaker: SpeakerMatch = NO_SPEAKER,
    people: Mapping[str, Mapping[str, Any]] | None = None,
    text: str = "test sentence",
    language: str = "en",
) -> Request:
    """A Request whose options went through the router's own rendering and validation."""
    slots = dict(slots or {})
    result = IntentResult(
        text=text,
        name=intent,
        slots=tuple(Slot(k, v, str(v), k, 0, 0) for k, v in slots.items()),
        confidence=1.0,
    )
    variables: dict[str, Any] = {
        **slots,
        "site": site,
        "area": slots.get("area", area),
        "speaker": templates.SpeakerVars(speaker.name, (people or {}).get(speaker.name, {})),
        "intent": intent,
        "text": text,
        "session_id": "session-1",
        "lang": language,
    }
    rendered = templates.render(dict(options), variables)
    return Request(
        intent=result,
        site=site,
        session_id="session-1",
        options=plugin.Options.model_validate(rendered),
        speaker=speaker,
        area=variables["area"],
        variables=variables,
        language=language,
    )


@dataclass
class Recorder:
    """Collects what a plugin publishes and says, and lets a test wait for it."""

    published: list[tuple[str, Any]] = field(default_factory=list)
    said: list[tuple[str, str]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, topic: str, payload: Any) -> None:
        self.published.append((topic, payload))
        self.event.set()

    async def say(self, site: str, text: str) -> None:
        self.said.append((site, text))
        self.event.set()

    async def wait(self, count: int, limit_s: float = 5.0) -> None:
        """Until `count` things were published or said (bounded)."""
        async with asyncio.timeout(limit_s):
            while len(self.published) + len(self.said) < count:
                self.event.clear()
                await self.event.wait()


Serve = Callable[[web.Application], Awaitable[str]]
"""`await serve(app)` starts `app` on a free loopback port and returns its base URL."""


def closed_port_url() -> str:
    """An http URL on a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
