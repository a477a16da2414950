"""Fixtures of the plugin tests (helpers live in plugin_helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from plugin_helpers import Recorder, Serve

from voiced.intents.api import PluginContext


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
