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


def hostile_app(seen: list[str]) -> web.Application:
    """Records the raw path of every request; `/secret` answers with a secret, `/big`
    streams 8 MB."""

    async def anything(request: web.Request) -> web.StreamResponse:
        seen.append(request.raw_path)
        if request.path == "/big":
            resp = web.StreamResponse()
            await resp.prepare(request)
            chunk = b"x" * 65536
            for _ in range(128):
                await resp.write(chunk)
            return resp
        return web.json_response({"temperature": 21, "secret": "s3cr3t-from-server"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


async def test_answer_values_are_text_never_templates(
    plugin: HttpPlugin, serve: Any, make_request: Any
) -> None:
    """A spoken value is rendered once, as text: it cannot name the response's fields,
    and a format width in it does not make a huge answer."""
    url = await serve(hostile_app([]))
    answer = "It is {{response[temperature]}} degrees in {name}."
    for said in ("{response[secret]}", "{body}", "{text:>300000000}", "{x"):
        request = make_request(plugin, {"url": url + "/t", "answer": answer},
                               slots={"name": said})
        response = await plugin.handle(request)
        assert response.text == f"It is 21 degrees in {said}."
    # the configuration's own fields are bounded too
    request = make_request(plugin, {"url": url + "/t", "answer": "{{body:>300000000}}"})
    with pytest.raises(PluginError) as err:
        await plugin.handle(request)
    assert err.value.code == "answer_template"


async def test_a_dot_segment_value_stays_in_its_segment_and_protect_rules_see_it(
    context: PluginContext, serve: Any
) -> None:
    """Site id `..` in `/public/{site}/{name}` is sent as `%2E%2E` (not resolved to
    `/admin`), and a rule on `/admin*` still refuses it."""
    from voiced.config import HandlerConfig, ProtectRule
    from voiced.intents.router import Router
    from voiced.models import NO_SPEAKER, IntentResult, Outcome, Slot
    from voiced.protect import Protector

    seen: list[str] = []
    url = await serve(hostile_app(seen))
    handler = HandlerConfig(intent="Fetch", plugin="http",
                            options={"url": url + "/public/{site}/{name}"})

    async def fetch(protector: Protector | None, site: str) -> Any:
        router = Router([handler], context, slot_names=lambda intent: {"name"},
                        protector=protector)
        await router.start()
        try:
            intent = IntentResult(text="fetch admin", name="Fetch",
                                  slots=(Slot("name", "admin", "admin", "name", 6, 11),),
                                  confidence=1.0)
            return await router.handle(intent, site=site, session_id="s1", speaker=NO_SPEAKER,
                                       area=None, language="en", spoken=False)
        finally:
            await router.stop()

    for site in ("..", "."):
        outcome = await fetch(None, site)
        assert outcome.outcome == Outcome.HANDLED, outcome
    assert seen == ["/public/%2E%2E/admin", "/public/%2E/admin"]

    rule = ProtectRule(name="admin", match=[f"http:{url}/admin*"], sites=["nowhere"])
    outcome = await fetch(Protector([rule]), "..")
    assert outcome.outcome == Outcome.REFUSED, outcome
    assert len(seen) == 2


async def test_a_control_character_in_a_header_is_slot_unsafe(
    plugin: HttpPlugin, serve: Any, make_request: Any
) -> None:
    seen: list[str] = []
    url = await serve(hostile_app(seen))
    request = make_request(plugin, {"url": url + "/t", "headers": {"X-By": "{name}"}},
                           slots={"name": "a\nX-Evil: 1"})
    with pytest.raises(PluginError) as err:
        await plugin.handle(request)
    assert err.value.code == "slot_unsafe"
    assert "headers.X-By" in err.value.message and "\\n" in err.value.message
    assert seen == []


async def test_a_huge_body_is_not_read_whole(
    plugin: HttpPlugin, serve: Any, make_request: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voiced_plugins import http

    monkeypatch.setattr(http, "MAX_BODY", 64 * 1024)
    url = await serve(hostile_app([]))
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {"url": url + "/big"}))
    assert err.value.code == "http_body_too_large"
    assert str(64 * 1024) in err.value.message
