"""Fixtures of the plugin tests: requests rendered exactly as the router renders them
(`make_request`), a recorder standing in for the daemon's publish/say, plugin contexts
with a real state folder, and a real aiohttp server on a loopback port (`serve`).

Pytest runs with --import-mode=importlib, so tests use these through fixtures rather
than importing this module.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from voiced.intents import templates
from voiced.intents.api import Plugin, PluginContext, Request
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
    cls = plugin.Options
    rendered = templates.render_options(
        dict(options), variables, getattr(cls, "topic_fields", ()),
        getattr(cls, "argv_fields", ()), getattr(cls, "url_fields", ()),
        getattr(cls, "answer_fields", ()))
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

    async def publish(self, topic: str, payload: Any, qos: int = 0,
                      retain: bool = False) -> None:
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


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def context(tmp_path: Path, recorder: Recorder) -> PluginContext:
    """A context without `say`: announcements go through `publish`."""
    return PluginContext(publish=recorder.publish, state_dir=tmp_path / "state")


@pytest.fixture
def say_context(tmp_path: Path, recorder: Recorder) -> PluginContext:
    """A context whose daemon can speak (`say`)."""
    return PluginContext(publish=recorder.publish, state_dir=tmp_path / "state", say=recorder.say)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """A real aiohttp server on a free loopback port: `url = await serve(app)`."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        # handlers still running at teardown (a deliberately slow one) are not waited for
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        sockets = site._server.sockets if site._server is not None else None
        assert sockets
        return f"http://127.0.0.1:{sockets[0].getsockname()[1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture(name="make_request")
def make_request_fixture() -> Callable[..., Request]:
    """`make_request(plugin, options, slots=..., area=..., site=...)`."""
    return make_request


@pytest.fixture
def closed_url() -> str:
    """An http URL on a loopback port nothing listens on."""
    return closed_port_url()
