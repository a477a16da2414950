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


async def test_names_from_home_assistant_are_words_never_templates(
        mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Imported names are what people say, not hassil templates: "(ceiling|all) lights"
    used to answer to "all lights", "lamp <name>" stopped start-up, an id with a comma or
    a path, a 1 MB name or attributes that are not a mapping broke the import. Such
    entries are cleaned or left out, and the rest is imported."""
    async def states(request: web.Request) -> web.Response:
        return web.json_response([
            {"entity_id": "light.ceiling", "attributes": {"friendly_name": "(Ceiling|All) lamp"}},
            {"entity_id": "light.lamp", "attributes": {"friendly_name": "lamp <name> {area}"}},
            {"entity_id": "light.a,lock.front_door", "attributes": {"friendly_name": "Sneaky"}},
            {"entity_id": "light.huge", "attributes": {"friendly_name": "x" * 1_000_000}},
            {"entity_id": "light.odd", "attributes": "notadict"},
        ])

    async def template(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps([{"id": "den", "name": "Kid's room [upstairs"},
                                             {"id": "../x", "name": "Attic"}]))

    app = web.Application()
    app.router.add_get("/api/states", states)
    app.router.add_post("/api/template", template)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    monkeypatch.setenv("HA_TOKEN", "t")
    try:
        config = make_config(tmp_path, mosquitto.port, intents={"home_assistant": {
            "url": str(server.make_url("")).rstrip("/")}})
        async with running_daemon(config) as daemon:
            recognizer = daemon.recognizer
            assert recognizer is not None
            on = recognizer.recognize("turn on the kid's room upstairs lights", {})
            assert on.name == "HassTurnOn" and on.slot_values()["area"] == "den", on
            assert recognizer.recognize("turn on the attic lights", {}).name is None
            names = {v["out"]: v["in"] for v in daemon._ha_lists["name"]["values"]}
            assert names == {"light.ceiling": "Ceiling All lamp", "light.lamp": "lamp name area",
                             "light.odd": "odd"}
    finally:
        await server.close()
