"""The http plugin against a real local aiohttp server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError
from voiced_plugins.http import HttpPlugin

from voiced.errors import PluginError
from voiced.intents.api import PluginContext


@pytest.fixture
async def plugin(context: PluginContext):
    instance = HttpPlugin(context)
    await instance.start()
    yield instance
    await instance.stop()


def weather_app(seen: list[dict[str, Any]]) -> web.Application:
    async def weather(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": body,
            }
        )
        return web.json_response({"temperature": 21.5, "rooms": [{"name": "attic"}]})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text="sensor offline")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="late")

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="all good")

    app = web.Application()
    app.router.add_route("*", "/weather/{room}", weather)
    app.router.add_get("/broken", broken)
    app.router.add_get("/slow", slow)
    app.router.add_get("/plain", plain)
    return app


async def test_get_with_templated_url_params_headers_and_spoken_answer(
    plugin: HttpPlugin, serve: Any, monkeypatch: pytest.MonkeyPatch, make_request: Any
) -> None:
    seen: list[dict[str, Any]] = []
    url = await serve(weather_app(seen))
    monkeypatch.setenv("WEATHER_KEY", "s3cret")
    request = make_request(
        plugin,
        {
            "url": url + "/weather/{area}",
            "params": {"unit": "{unit}"},
            "headers": {"X-Site": "{site}"},
            "headers_env": {"X-Api-Key": "WEATHER_KEY"},
            "answer": "It is {{response[temperature]}} degrees in the {area}.",
        },
        slots={"unit": "celsius"},
        area="kitchen",
        site="satellite-1",
    )
    response = await plugin.handle(request)

    assert response.text == "It is 21.5 degrees in the kitchen."
    assert response.data["status"] == 200
    [hit] = seen
    assert hit["method"] == "GET"
    assert hit["path"] == "/weather/kitchen"
    assert hit["query"] == {"unit": "celsius"}
    assert hit["headers"]["X-Site"] == "satellite-1"
    assert hit["headers"]["X-Api-Key"] == "s3cret"
    assert hit["body"] is None


async def test_post_json_body_keeps_numbers(
    plugin: HttpPlugin, serve: Any, make_request: Any
) -> None:
    seen: list[dict[str, Any]] = []
    url = await serve(weather_app(seen))
    request = make_request(
        plugin,
        {
            "method": "post",
            "url": url + "/weather/{area}",
            "json": {"room": "{area}", "level": "{level}", "note": "set by {speaker}"},
            "answer": "First room: {{response[rooms][0][name]}}",
        },
        slots={"level": 40, "area": "hall"},
    )
    response = await plugin.handle(request)

    assert response.text == "First room: attic"
    [hit] = seen
    assert hit["method"] == "POST"
    assert hit["headers"]["Content-Type"].startswith("application/json")
    assert hit["body"] == {"room": "hall", "level": 40, "note": "set by unknown"}


async def test_plain_text_response_is_the_body(
    plugin: HttpPlugin, serve: Any, make_request: Any
) -> None:
    url = await serve(weather_app([]))
    request = make_request(plugin, {"url": url + "/plain", "answer": "{{response}}!"})
    assert (await plugin.handle(request)).text == "all good!"


async def test_error_status_is_a_plugin_error(
    plugin: HttpPlugin, serve: Any, make_request: Any
) -> None:
    url = await serve(weather_app([]))
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {"url": url + "/broken"}))
    assert err.value.code == "http_status"
    assert "503" in err.value.message and "sensor offline" in err.value.message


async def test_ok_status_list(plugin: HttpPlugin, serve: Any, make_request: Any) -> None:
    url = await serve(weather_app([]))
    response = await plugin.handle(
        make_request(plugin, {"url": url + "/broken", "ok_status": [503]})
    )
    assert response.data["status"] == 503


async def test_timeout(plugin: HttpPlugin, serve: Any, make_request: Any) -> None:
    url = await serve(weather_app([]))
    started = time.monotonic()
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {"url": url + "/slow", "timeout_s": 0.3}))
    assert err.value.code == "http_timeout"
    assert time.monotonic() - started < 2


async def test_unreachable(plugin: HttpPlugin, make_request: Any, closed_url: str) -> None:
    url = closed_url
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {"url": url + "/x"}))
    assert err.value.code == "http_unreachable"
    assert url in err.value.message


async def test_missing_header_env(plugin: HttpPlugin, serve: Any, make_request: Any) -> None:
    url = await serve(weather_app([]))
    request = make_request(
        plugin, {"url": url + "/plain", "headers_env": {"Authorization": "NO_SUCH_VAR_XYZ"}}
    )
    with pytest.raises(PluginError) as err:
        await plugin.handle(request)
    assert err.value.code == "http_missing_env"
    assert "NO_SUCH_VAR_XYZ" in err.value.message


async def test_answer_missing_field_is_clear(
    plugin: HttpPlugin, serve: Any, make_request: Any
) -> None:
    url = await serve(weather_app([]))
    request = make_request(plugin, {"url": url + "/plain", "answer": "{{reply}}"})
    with pytest.raises(PluginError) as err:
        await plugin.handle(request)
    assert err.value.code == "answer_template"
    assert "'reply'" in err.value.message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://x", "colour": "red"}, "Extra inputs are not permitted"),
        ({"url": "ftp://x"}, "http:// or https://"),
        ({"url": "http://x", "method": "BREW"}, "GET"),
        ({"url": "http://x", "timeout_s": 0}, "greater than 0"),
        ({}, "url"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        HttpPlugin.Options.model_validate(options)
    assert message in str(err.value)
