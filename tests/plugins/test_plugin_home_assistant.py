"""The home_assistant plugin and the start-up import, against a local aiohttp server
that behaves like Home Assistant's REST API and checks every request it gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError
from voiced_plugins._ha_import import import_home_assistant
from voiced_plugins.home_assistant import AREAS_TEMPLATE, HomeAssistantPlugin

from voiced.config import HandlerConfig
from voiced.errors import PluginError
from voiced.intents.api import PluginContext
from voiced.intents.router import Router
from voiced.models import NO_SPEAKER, IntentResult, Slot

TOKEN = "long-lived-test-token"

STATES = [
    {"entity_id": "light.kitchen", "state": "off", "attributes": {"friendly_name": "Kitchen"}},
    {"entity_id": "light.living_room_lamp", "state": "on", "attributes": {}},
    {"entity_id": "switch.kettle", "state": "off", "attributes": {"friendly_name": "Kettle"}},
    {"entity_id": "sensor.outside", "state": "4", "attributes": {"friendly_name": "Outside"}},
]
AREAS = [{"id": "kitchen", "name": "Kitchen"}, {"id": "living_room", "name": "Living Room"}]


class FakeHomeAssistant:
    """Records requests; answers like Home Assistant; refuses a wrong bearer token."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/api/services/{domain}/{service}", self._service)
        app.router.add_get("/api/states", self._states)
        app.router.add_post("/api/template", self._template)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "auth": request.headers.get("Authorization"),
                "content_type": request.headers.get("Content-Type"),
                "body": body,
            }
        )
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"message": "Invalid authentication"}, status=401)
        return await handler(request)

    async def _service(self, request: web.Request) -> web.Response:
        body = self.requests[-1]["body"]
        if request.match_info["domain"] == "nope":
            return web.Response(status=400, text="Service nope.nothing not found")
        entity = body.get("entity_id")
        return web.json_response([{"entity_id": entity, "state": "on"}] if entity else [])

    async def _states(self, request: web.Request) -> web.Response:
        return web.json_response(STATES)

    async def _template(self, request: web.Request) -> web.Response:
        template = self.requests[-1]["body"]["template"]
        if template != AREAS_TEMPLATE:
            return web.Response(status=400, text=f"unexpected template {template!r}")
        import json

        # Home Assistant renders templates to text, not JSON
        return web.Response(text=json.dumps(AREAS), content_type="text/plain")


@pytest.fixture
async def home(serve: Any) -> tuple[FakeHomeAssistant, str]:
    fake = FakeHomeAssistant()
    return fake, await serve(fake.app())


@pytest.fixture
async def plugin(context: PluginContext):
    instance = HomeAssistantPlugin(context)
    await instance.start()
    yield instance
    await instance.stop()


async def test_service_call_is_a_real_round_trip(
    plugin: HomeAssistantPlugin,
    home: tuple[FakeHomeAssistant, str],
    monkeypatch: pytest.MonkeyPatch,
    make_request: Any,
) -> None:
    fake, url = home
    monkeypatch.setenv("HA_TOKEN", TOKEN)
    request = make_request(
        plugin,
        {
            "url": url + "/",
            "service": "light.turn_on",
            "entity_id": "light.{area}",
            "data": {"brightness_pct": "{level}", "transition": 2},
            "answer": "{{changed}} light on in the {area}.",
        },
        slots={"level": 40},
        area="kitchen",
    )
    response = await plugin.handle(request)

    [call] = fake.requests
    assert call["method"] == "POST"
    assert call["path"] == "/api/services/light/turn_on"
    assert call["auth"] == f"Bearer {TOKEN}"
    assert call["content_type"].startswith("application/json")
    assert call["body"] == {"entity_id": "light.kitchen", "brightness_pct": 40, "transition": 2}
    assert response.text == "1 light on in the kitchen."
    assert response.data["changed"] == ["light.kitchen"]


async def test_token_from_systemd_credential(
    plugin: HomeAssistantPlugin,
    home: tuple[FakeHomeAssistant, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_request: Any,
) -> None:
    fake, url = home
    (tmp_path / "ha_token").write_text(TOKEN + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("HA_TOKEN", "not-this-one")
    options = {"url": url, "service": "switch.turn_off", "token_credential": "ha_token"}
    await plugin.handle(make_request(plugin, options))
    assert fake.requests[0]["auth"] == f"Bearer {TOKEN}"
    assert fake.requests[0]["path"] == "/api/services/switch/turn_off"
    assert fake.requests[0]["body"] == {}


@pytest.mark.parametrize(("unset", "source"), [
    ("CREDENTIALS_DIRECTORY", {"token_credential": "ha_token"}),  # no systemd credentials
    ("MY_HA", {"token_env": "MY_HA"}),  # the token's variable is not set
])
async def test_missing_token(
    plugin: HomeAssistantPlugin, monkeypatch: pytest.MonkeyPatch, make_request: Any,
    unset: str, source: dict[str, str],
) -> None:
    monkeypatch.delenv(unset, raising=False)
    options = {"url": "http://127.0.0.1:9", "service": "light.turn_on", **source}
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, options))
    assert err.value.code == "ha_no_token"
    assert unset in err.value.message


async def test_wrong_token_is_unauthorized(
    plugin: HomeAssistantPlugin,
    home: tuple[FakeHomeAssistant, str],
    monkeypatch: pytest.MonkeyPatch,
    make_request: Any,
) -> None:
    _, url = home
    monkeypatch.setenv("HA_TOKEN", "stale")
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {"url": url, "service": "light.turn_on"}))
    assert err.value.code == "ha_unauthorized"


async def test_unknown_service_reports_home_assistants_answer(
    plugin: HomeAssistantPlugin,
    home: tuple[FakeHomeAssistant, str],
    monkeypatch: pytest.MonkeyPatch,
    make_request: Any,
) -> None:
    _, url = home
    monkeypatch.setenv("HA_TOKEN", TOKEN)
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {"url": url, "service": "nope.nothing"}))
    assert err.value.code == "ha_error"
    assert "400" in err.value.message and "not found" in err.value.message


async def test_unreachable(
    plugin: HomeAssistantPlugin, monkeypatch: pytest.MonkeyPatch, make_request: Any, closed_url: str
) -> None:
    monkeypatch.setenv("HA_TOKEN", TOKEN)
    url = closed_url
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {"url": url, "service": "light.turn_on"}))
    assert err.value.code == "ha_unreachable"
    assert f"Home Assistant at {url} is unreachable" in err.value.message


def test_templated_service_checked_after_rendering(make_request: Any) -> None:
    """A template passes at start-up; the rendered value is validated for each request."""
    HomeAssistantPlugin.Options.model_validate({"service": "light.turn_{state}"})
    with pytest.raises(ValidationError) as err:
        make_request(
            HomeAssistantPlugin, {"service": "light.turn_{state}"}, slots={"state": "on; rm"}
        )
    assert "domain.service" in str(err.value)


async def test_through_the_router(
    home: tuple[FakeHomeAssistant, str],
    context: PluginContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The plugin as the daemon runs it: found by entry point, options checked, rendered."""
    fake, url = home
    monkeypatch.setenv("HA_TOKEN", TOKEN)
    handler = HandlerConfig(
        intent="HassTurnOn",
        plugin="home_assistant",
        options={"url": url, "service": "light.turn_on", "entity_id": "{name}"},
    )
    router = Router([handler], context, slot_names=lambda intent: {"name", "area"})
    await router.start()
    try:
        assert all(s.ok for s in router.statuses), router.statuses
        intent = IntentResult(
            text="turn on the kitchen light",
            name="HassTurnOn",
            slots=(Slot("name", "light.kitchen", "kitchen light", "name", 12, 25),),
            confidence=1.0,
        )
        outcome = await router.handle(
            intent,
            site="kitchen",
            session_id="s1",
            speaker=NO_SPEAKER,
            area="kitchen",
            language="en",
        )
    finally:
        await router.stop()
    assert outcome.error is None
    assert fake.requests[0]["body"] == {"entity_id": "light.kitchen"}


async def test_import_areas_and_entities(
    home: tuple[FakeHomeAssistant, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = home
    monkeypatch.setenv("HA_TOKEN", TOKEN)
    imported = await import_home_assistant(url, domains={"light", "switch"})

    assert [(r["method"], r["path"]) for r in fake.requests] == [
        ("GET", "/api/states"),
        ("POST", "/api/template"),
    ]
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in fake.requests)
    assert fake.requests[1]["body"] == {"template": AREAS_TEMPLATE}
    lists = imported.to_hassil_lists()
    assert lists["area"]["values"] == [
        {"in": "Kitchen", "out": "kitchen"},
        {"in": "Living Room", "out": "living_room"},
    ]
    assert lists["name"]["values"] == [
        {"in": "Kitchen", "out": "light.kitchen"},
        {"in": "living room lamp", "out": "light.living_room_lamp"},
        {"in": "Kettle", "out": "switch.kettle"},
    ]


async def test_import_without_filter_and_with_wrong_token(
    home: tuple[FakeHomeAssistant, str],
) -> None:
    _, url = home
    imported = await import_home_assistant(url, token=TOKEN)
    assert len(imported.entities) == len(STATES)
    with pytest.raises(PluginError) as err:
        await import_home_assistant(url, token="wrong")
    assert err.value.code == "ha_unauthorized"


async def test_import_unreachable(closed_url: str) -> None:
    with pytest.raises(PluginError) as err:
        await import_home_assistant(closed_url, token=TOKEN, timeout_s=2)
    assert err.value.code == "ha_unreachable"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"service": "light.turn_on", "token": "abc"}, "never put the Home Assistant token"),
        ({"service": "light.turn_on", "access_token": "abc"}, "token_env"),
        ({"service": "turn_on"}, "domain.service"),
        ({"service": "light.turn_on", "url": "homeassistant:8123"}, "http://"),
        ({"service": "light.turn_on", "token_credential": "../etc/x"}, "plain file name"),
        ({"service": "light.turn_on", "entity": "light.x"}, "Extra inputs are not permitted"),
        ({"entity_id": "light.x"}, "service"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        HomeAssistantPlugin.Options.model_validate(options)
    assert message in str(err.value)


@pytest.mark.parametrize("url", ["http://homeassistant.local:8123", "http://192.168.1.5:8123",
                                 "HTTP://[2001:db8::1]:8123"])
def test_the_token_never_goes_over_plain_http_off_this_host(url: str) -> None:
    from pydantic import ValidationError
    from voiced_plugins.home_assistant import HomeAssistantOptions

    from voiced.config import HomeAssistantImportConfig

    for model, extra in ((HomeAssistantOptions, {"service": "light.turn_on"}),
                         (HomeAssistantImportConfig, {})):
        with pytest.raises(ValidationError, match="clear text"):
            model.model_validate({"url": url, **extra})
        model.model_validate({"url": url, "allow_insecure_http": True, **extra})
        for fine in ("https://ha.example.org", "http://127.0.0.1:8123", "http://localhost:8123",
                     "http://[::1]:8123"):
            model.model_validate({"url": fine, **extra})


@pytest.mark.parametrize("entity", ["light.kitchen?x=1", "light/../x", "light.living room",
                                    "Light.kitchen", "kitchen"])
def test_a_rendered_entity_id_must_be_one(entity: str) -> None:
    from pydantic import ValidationError
    from voiced_plugins.home_assistant import HomeAssistantOptions

    base = {"url": "http://127.0.0.1:8123", "service": "light.turn_on"}
    with pytest.raises(ValidationError, match="entity id"):
        HomeAssistantOptions.model_validate({**base, "entity_id": entity})
    with pytest.raises(ValidationError, match="entity id"):
        HomeAssistantOptions.model_validate({**base, "entity_id": ["light.ok", entity]})
    HomeAssistantOptions.model_validate({**base, "entity_id": ["light.kitchen_2", "fan.x"]})
    # a template passes at start-up and is checked once rendered
    HomeAssistantOptions.model_validate({**base, "entity_id": "light.{area}"})


@pytest.mark.parametrize("entity", ["light.a,lock.front_door", "light.a lock.b", "Lock.b", ""])
def test_data_entity_ids_are_checked_like_the_top_level_one(entity: str) -> None:
    from voiced_plugins.home_assistant import HomeAssistantOptions

    base = {"url": "http://127.0.0.1:8123", "service": "light.turn_on"}
    for data in ({"entity_id": entity}, {"entity_id": ["light.ok", entity]},
                 {"target": {"entity_id": entity}}):
        with pytest.raises(ValidationError, match="entity id"):
            HomeAssistantOptions.model_validate({**base, "data": data})
    for fine in ({"entity_id": "all"}, {"entity_id": ["light.a", "lock.b"]},
                 {"target": {"entity_id": "light.{area}"}}):
        HomeAssistantOptions.model_validate({**base, "data": fine})


def test_targets_name_every_entity_the_call_touches() -> None:
    from voiced_plugins.home_assistant import HomeAssistantOptions

    base = {"url": "http://127.0.0.1:8123", "service": "homeassistant.turn_on"}
    targets = HomeAssistantPlugin.targets(HomeAssistantOptions.model_validate(
        {**base, "data": {"entity_id": ["light.a", "lock.front_door"]}}))
    assert "lock.front_door" in targets and "light.a" in targets
    targets = HomeAssistantPlugin.targets(HomeAssistantOptions.model_validate(
        {**base, "entity_id": "light.a", "data": {"target": {"area_id": "hall"}}}))
    assert "homeassistant.*" in targets


async def test_a_comma_list_in_data_never_reaches_home_assistant(
    home: tuple[FakeHomeAssistant, str],
    context: PluginContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`data: {entity_id: "{name}"}` with `light.a,lock.front_door` said: refused before
    anything is sent; a value with braces is refused after rendering too."""
    from voiced.config import ProtectRule
    from voiced.protect import Protector

    fake, url = home
    monkeypatch.setenv("HA_TOKEN", TOKEN)
    handler = HandlerConfig(intent="HaData", plugin="home_assistant",
                            options={"url": url, "service": "light.turn_on",
                                     "data": {"entity_id": "{name}"}})
    rule = ProtectRule(name="locks", match=["lock.*"], sites=["nowhere"])
    router = Router([handler], context, slot_names=lambda intent: {"name"},
                    protector=Protector([rule]))
    await router.start()
    outcomes = []
    try:
        assert all(s.ok for s in router.statuses), router.statuses
        for said in ("light.a,lock.front_door", "light.{x}", "lock.front_door", "light.a"):
            intent = IntentResult(text=f"hadata {said}", name="HaData", confidence=1.0,
                                  slots=(Slot("name", said, said, "name", 7, 7 + len(said)),))
            outcomes.append(await router.handle(intent, site="kitchen", session_id="s1",
                                                speaker=NO_SPEAKER, area=None, language="en"))
    finally:
        await router.stop()
    assert [o.code for o in outcomes] == ["options_invalid", "slot_unsafe",
                                          "protected", None], outcomes
    assert "options.data:" in (outcomes[0].error or "")
    assert [r["body"] for r in fake.requests] == [{"entity_id": "light.a"}]
