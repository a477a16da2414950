"""Areas and devices imported from Home Assistant (a local aiohttp server checking the
requests) fill the intent lists at start-up; an unreachable Home Assistant does not stop
the daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from support import Mosquitto, free_port, make_config, running_daemon


async def test_areas_and_devices_come_from_home_assistant(
        mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    async def states(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response([
            {"entity_id": "light.desk_lamp", "attributes": {"friendly_name": "Desk Lamp"}},
            {"entity_id": "sensor.weather", "attributes": {"friendly_name": "Weather"}},
        ])

    async def template(request: web.Request) -> web.Response:
        body = await request.json()
        assert "areas()" in body["template"]
        return web.Response(text=json.dumps([{"id": "den", "name": "Den"}]))

    app = web.Application()
    app.router.add_get("/api/states", states)
    app.router.add_post("/api/template", template)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    monkeypatch.setenv("HA_TOKEN", "secret-token")
    try:
        url = str(server.make_url("")).rstrip("/")
        config = make_config(tmp_path, mosquitto.port,
                             intents={"home_assistant": {"url": url}})
        async with running_daemon(config) as daemon:
            assert daemon.recognizer is not None
            result = daemon.recognizer.recognize("turn on the den lights", {})
            assert result.name == "HassTurnOn" and result.slot_values()["area"] == "den"
            # the imported areas replace the example ones
            assert daemon.recognizer.recognize("turn on the kitchen lights", {}).name is None
        assert seen and all(s == "Bearer secret-token" for s in seen)
    finally:
        await server.close()


async def test_unreachable_home_assistant_keeps_the_file_lists(
        mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HA_TOKEN", "x")
    config = make_config(tmp_path, mosquitto.port, intents={
        "home_assistant": {"url": f"http://127.0.0.1:{free_port()}", "timeout_s": 2}})
    async with running_daemon(config) as daemon:
        assert daemon.recognizer is not None
        assert daemon.recognizer.recognize("turn on the kitchen lights", {}).name == "HassTurnOn"
