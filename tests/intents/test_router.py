"""The handler router with the real first-party plugins it loads by entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes import SleepyPlugin

from voiced.config import HandlerConfig
from voiced.intents.api import Plugin, PluginContext, Request, Response
from voiced.intents.router import Router, discover_plugins
from voiced.models import NO_SPEAKER, IntentResult, Outcome, Slot, SpeakerMatch

SLOTS = {"HassTurnOn": {"area", "name"}, "PlayMusic": set(), "Slow": set(), "Boom": set()}


class BoomPlugin(Plugin):
    """A plugin whose start fails."""

    name = "boom"

    async def start(self) -> None:
        raise RuntimeError("cannot open device")

    async def handle(self, request: Request) -> Response:
        return Response()


def _router(handlers: list[dict[str, Any]], published: list[tuple[str, Any]],
            tmp_path: Path) -> Router:
    async def publish(topic: str, payload: Any, qos: int = 0, retain: bool = False) -> None:
        published.append((topic, payload))

    installed = discover_plugins()
    plugins = {**installed, "sleepy": lambda: SleepyPlugin, "boom": lambda: BoomPlugin}
    context = PluginContext(publish=publish, state_dir=tmp_path,
                            people={"alice": {"playlist": "Alice's mix"}})
    return Router([HandlerConfig.model_validate(h) for h in handlers], context,
                  lambda name: SLOTS.get(name), plugins)


def _intent(name: str, **slots: Any) -> IntentResult:
    return IntentResult("text", name, tuple(Slot(k, v, str(v), k, 0, 0) for k, v in slots.items()),
                        1.0)


def test_first_party_plugins_are_registered_entry_points() -> None:
    assert {"mqtt_publish", "say"} <= set(discover_plugins())


async def test_templated_publish_and_speaker_variables(tmp_path: Path) -> None:
    published: list[tuple[str, Any]] = []
    router = _router([
        {"intent": "HassTurnOn", "plugin": "mqtt_publish",
         "options": {"topic": "home/{area}/light", "payload": {"on": True, "by": "{speaker}"}}},
        {"intent": "PlayMusic", "plugin": "mqtt_publish",
         "options": {"topic": "music/{site}/play", "payload": {"playlist": "{speaker.playlist}"}}},
        {"intent": "PlayMusic", "plugin": "say", "options": {"text": "Playing {speaker.playlist}"}},
    ], published, tmp_path)
    await router.start()
    assert all(s.ok for s in router.statuses)
    out = await router.handle(_intent("HassTurnOn", area="kitchen"), site="k1", session_id="s",
                              speaker=NO_SPEAKER, area=None, language="en")
    assert out.outcome == Outcome.HANDLED
    assert published[-1] == ("home/kitchen/light", {"on": True, "by": "unknown"})
    # the site's area fills {area} when the sentence named none
    await router.handle(_intent("HassTurnOn"), site="k1", session_id="s", speaker=NO_SPEAKER,
                        area="hall", language="en")
    assert published[-1][0] == "home/hall/light"
    out = await router.handle(_intent("PlayMusic"), site="k1", session_id="s",
                              speaker=SpeakerMatch("alice", 0.9), area=None, language="en")
    assert published[-1] == ("music/k1/play", {"playlist": "Alice's mix"})
    assert out.response is not None and out.response.text == "Playing Alice's mix"
    await router.stop()


async def test_bad_handlers_become_statuses_and_others_work(tmp_path: Path) -> None:
    published: list[tuple[str, Any]] = []
    router = _router([
        {"intent": "HassTurnOn", "plugin": "nope"},
        {"intent": "HassTurnOn", "plugin": "mqtt_publish", "options": {"topic": "a/{room}"}},
        {"intent": "HassTurnOn", "plugin": "mqtt_publish", "options": {"topc": "a"}},
        {"intent": "Missing", "plugin": "say", "options": {"text": "hi"}},
        {"intent": "Boom", "plugin": "boom"},
        {"intent": "PlayMusic", "plugin": "say", "options": {"text": "ok"}},
    ], published, tmp_path)
    await router.start()
    errors = [s.error or "" for s in router.statuses]
    assert "unknown plugin 'nope'" in errors[0] and "mqtt_publish" in errors[0]
    assert "{room}" in errors[1] and "slots: area, name" in errors[1]
    assert "options.topc" in errors[2]
    assert "'Missing' is not defined" in errors[3]
    assert "failed to start: cannot open device" in errors[4]
    assert router.statuses[5].ok
    out = await router.handle(_intent("PlayMusic"), site="k", session_id="s",
                              speaker=NO_SPEAKER, area=None, language="en")
    assert out.outcome == Outcome.HANDLED and out.response and out.response.text == "ok"
    out = await router.handle(_intent("Boom"), site="k", session_id="s", speaker=NO_SPEAKER,
                              area=None, language="en")
    assert out.outcome == Outcome.ERROR and out.code == "handler_unavailable"
    await router.stop()


async def test_timeout_gating_and_runtime_template_errors(tmp_path: Path) -> None:
    published: list[tuple[str, Any]] = []
    router = _router([
        {"intent": "Slow", "plugin": "sleepy", "timeout_s": 0.2},
        {"intent": "PlayMusic", "plugin": "mqtt_publish", "min_speaker_confidence": 0.7,
         "options": {"topic": "m", "payload": {"p": "{speaker.playlist}"}}},
        {"intent": "HassTurnOn", "plugin": "mqtt_publish", "options": {"topic": "x/{area}"}},
    ], published, tmp_path)
    await router.start()
    out = await router.handle(_intent("Slow"), site="k", session_id="s", speaker=NO_SPEAKER,
                              area=None, language="en")
    assert out.outcome == Outcome.TIMEOUT and 150 < out.duration_ms < 2000
    for speaker in (NO_SPEAKER, SpeakerMatch("alice", 0.5)):
        out = await router.handle(_intent("PlayMusic"), site="k", session_id="s",
                                  speaker=speaker, area=None, language="en")
        assert out.outcome == Outcome.REFUSED and out.code == "speaker_not_allowed"
    assert published == []
    out = await router.handle(_intent("PlayMusic"), site="k", session_id="s",
                              speaker=SpeakerMatch("alice", 0.8), area=None, language="en")
    assert out.outcome == Outcome.HANDLED
    # no area in the sentence and none for the site: a clear run-time error
    out = await router.handle(_intent("HassTurnOn"), site="k", session_id="s",
                              speaker=NO_SPEAKER, area=None, language="en")
    assert out.outcome == Outcome.ERROR and out.code == "template_missing"
    assert "{area}" in (out.error or "")
    await router.stop()


@pytest.mark.parametrize("area", ["kitchen/../garage", "#", "a+b", "x\x00y", ""])
async def test_a_slot_value_cannot_redirect_a_topic(tmp_path: Path, area: str) -> None:
    """A value inserted into an MQTT topic must be one segment: a hostile area name (from
    a wildcard slot or an imported Home Assistant area) is refused, nothing is published."""
    published: list[tuple[str, Any]] = []
    router = _router([{"intent": "HassTurnOn", "plugin": "mqtt_publish",
                       "options": {"topic": "home/{area}/light", "payload": "on"}}],
                     published, tmp_path)
    await router.start()
    out = await router.handle(_intent("HassTurnOn", area=area), site="k1", session_id="s",
                              speaker=NO_SPEAKER, area=None, language="en")
    assert out.outcome == Outcome.ERROR and out.code == "slot_unsafe", out
    assert "{area}" in (out.error or "") and published == []
    ok = await router.handle(_intent("HassTurnOn", area="living room"), site="k1",
                             session_id="s", speaker=NO_SPEAKER, area=None, language="en")
    assert ok.outcome == Outcome.HANDLED and published == [("home/living room/light", "on")]
    await router.stop()


async def test_a_slot_value_cannot_become_a_command_option(tmp_path: Path) -> None:
    """`command`: a value inserted into an argument cannot start an option (`--delete`),
    and the program itself is never a template."""
    published: list[tuple[str, Any]] = []
    router = _router([{"intent": "HassTurnOn", "plugin": "command",
                       "options": {"argv": ["echo", "{area}", "--room={area}"]}},
                      {"intent": "PlayMusic", "plugin": "command",
                       "options": {"argv": ["{site}", "x"]}}], published, tmp_path)
    await router.start()
    bad = await router.handle(_intent("HassTurnOn", area="--delete-everything"), site="k1",
                              session_id="s", speaker=NO_SPEAKER, area=None, language="en")
    assert bad.outcome == Outcome.ERROR and bad.code == "slot_unsafe", bad
    assert "would become an option" in (bad.error or "")
    ok = await router.handle(_intent("HassTurnOn", area="kitchen"), site="k1",
                             session_id="s", speaker=NO_SPEAKER, area=None, language="en")
    assert ok.outcome == Outcome.HANDLED, ok
    assert ok.details[0]["argv"] == ["echo", "kitchen", "--room=kitchen"]
    # a templated program is refused at start-up (it failed each request before)
    [status] = [s for s in router.statuses if s.intent == "PlayMusic"]
    assert not status.ok and "argv[0] (the program) must be written out" in str(status.error)
    program = await router.handle(_intent("PlayMusic"), site="rm", session_id="s",
                                  speaker=NO_SPEAKER, area=None, language="en")
    assert program.outcome == Outcome.ERROR and program.code == "handler_unavailable"
    await router.stop()


async def test_a_slot_value_stays_inside_its_url_part(tmp_path: Path) -> None:
    """`http`: inserted values are percent-encoded: a slot cannot add a path segment, a
    query parameter or a fragment to the request."""
    from aiohttp import web

    seen: list[tuple[str, dict[str, str]]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.raw_path, dict(request.query)))
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    published: list[tuple[str, Any]] = []
    router = _router([{"intent": "HassTurnOn", "plugin": "http",
                       "options": {"url": f"http://127.0.0.1:{port}/rooms/{{area}}?on=1"}}],
                     published, tmp_path)
    await router.start()
    try:
        out = await router.handle(_intent("HassTurnOn", area="hall/../admin?drop=all#x"),
                                  site="k1", session_id="s", speaker=NO_SPEAKER, area=None,
                                  language="en")
        assert out.outcome == Outcome.HANDLED, out
    finally:
        await router.stop()
        await runner.cleanup()
    [(raw, query)] = seen
    from urllib.parse import unquote

    path = raw.split("?", 1)[0]
    assert path.count("/") == 2  # /rooms/<one segment>: no segment was added
    assert unquote(path) == "/rooms/hall/../admin?drop=all#x"
    assert query == {"on": "1"}  # no parameter was added
