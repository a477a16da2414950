"""The ``home_assistant`` plugin: call a Home Assistant service over its REST API.

```yaml
handlers:
  - intent: HassTurnOn
    plugin: home_assistant
    options:
      url: "https://homeassistant.local:8123"
      service: "light.turn_on"
      entity_id: "light.{area}"
      data: {brightness_pct: 80}
      answer: "Lights on in the {area}."
```

Each request becomes ``POST {url}/api/services/<domain>/<service>`` with a JSON body of
``data`` plus ``entity_id`` and an ``Authorization: Bearer <token>`` header. The long-lived
token never lives in voiced.yaml: it is read from an environment variable (``token_env``,
default ``HA_TOKEN``) or from a systemd credential file
(``$CREDENTIALS_DIRECTORY/<token_credential>``, see ``LoadCredential=`` in systemd.exec).

`import_home_assistant()` reads areas and entity names from Home Assistant, to fill the
intent lists (``area``, ``name``) at start-up.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, ClassVar

import aiohttp
from pydantic import Field, field_validator, model_validator

from voiced.credentials import CredentialError, read_credential
from voiced.errors import PluginError
from voiced.intents.api import PluginOptions, Request, Response
from voiced.redact import plain_http_off_host

from ._client import HttpClientPlugin, read_body
from ._render import render_answer

__all__ = [
    "AREAS_TEMPLATE",
    "HomeAssistantOptions",
    "HomeAssistantPlugin",
    "read_token",
]

log = logging.getLogger(__name__)

_SERVICE = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")
_SECRET_KEYS = ("token", "access_token", "api_key", "password")
_ENTITY_ID = re.compile(r"[a-z0-9_]+\.[a-z0-9_]+")
_MAX_ERROR_BODY = 200
MAX_BODY = 16 * 1024 * 1024
"""Bytes of an answer read (``/api/states`` of a large home is several MB); a larger one is
``ha_error``."""

AREAS_TEMPLATE = (
    "[{% for a in areas() %}"
    '{{ {"id": a, "name": area_name(a)} | tojson }}{{ "," if not loop.last else "" }}'
    "{% endfor %}]"
)
"""Rendered by Home Assistant's template API: a JSON list of ``{id, name}`` areas."""


def read_token(token_env: str = "HA_TOKEN", token_credential: str | None = None) -> str:
    """The Home Assistant token from a systemd credential or the environment.

    A credential, when named, wins; raise PluginError("ha_no_token") when neither has one.
    """
    if token_credential is not None:
        try:
            return read_credential(token_credential, key="token_credential",
                                   what="the Home Assistant token").strip()
        except CredentialError as exc:
            raise PluginError("ha_no_token", str(exc)) from None
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise PluginError(
            "ha_no_token",
            f"the environment variable {token_env} holds no Home Assistant token "
            "(create a long-lived token in your Home Assistant profile)",
        )
    return token


class HomeAssistantOptions(PluginOptions):
    """Options of the ``home_assistant`` plugin."""

    answer_fields: ClassVar[tuple[str, ...]] = ("answer",)
    url: str = "http://localhost:8123"
    """Base URL of Home Assistant, without ``/api``."""
    service: str
    """``domain.service``, e.g. ``light.turn_on``; templated."""
    entity_id: str | list[str] | None = None
    """Target entity or entities, e.g. ``light.{area}``; templated."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Extra service data; templated."""
    token_env: str = "HA_TOKEN"
    """Environment variable holding the long-lived access token."""
    token_credential: str | None = None
    """systemd credential name holding the token (read from $CREDENTIALS_DIRECTORY)."""
    timeout_s: float = Field(4.0, gt=0, le=120)
    """Seconds; keep it below the handler's ``timeout_s`` (default 5) for a clear error."""
    answer: str | None = None
    """Spoken answer; ``{{service}}``, ``{{entity_id}}``, ``{{changed}}`` are filled in."""
    verify_tls: bool = True
    allow_insecure_http: bool = False
    """Send the token over plain http to a host other than loopback (clear text)."""

    @field_validator("entity_id")
    @classmethod
    def _entity_ids(cls, value: str | list[str] | None) -> str | list[str] | None:
        # a slot value rendered into an entity id must still be one (no other target,
        # no path or query smuggled into the request)
        _check_entity_ids("entity_id", value, allow_all=False)
        return value

    @field_validator("data")
    @classmethod
    def _data_entity_ids(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Home Assistant reads "light.a,lock.b" as two entities: in service data too,
        # every entity id is one (a protection rule sees each of them)
        _check_entity_ids("data.entity_id", value.get("entity_id"))
        target = value.get("target")
        if isinstance(target, dict):
            _check_entity_ids("data.target.entity_id", target.get("entity_id"))
        elif target is not None:
            raise ValueError(f"data.target must be a mapping (got {target!r:.80})")
        return value

    @model_validator(mode="after")
    def _token_over_https(self) -> HomeAssistantOptions:
        if plain_http_off_host(self.url) and not self.allow_insecure_http:
            raise ValueError("url: the access token would cross the network in clear text "
                             "over http; use https, or set allow_insecure_http: true")
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_secret_in_yaml(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in _SECRET_KEYS:
                if key in data:
                    raise ValueError(
                        f"'{key}' is not allowed: never put the Home Assistant token in "
                        "voiced.yaml; set token_env (an environment variable name, default "
                        "HA_TOKEN) or token_credential (a systemd credential name)"
                    )
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// (got {value!r})")
        return value.rstrip("/")

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        # a templated service ("light.turn_{state}") is checked once rendered
        if "{" not in value and not _SERVICE.match(value):
            raise ValueError(f"service must look like 'domain.service' (got {value!r})")
        return value

    @field_validator("token_credential")
    @classmethod
    def _credential_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value in (".", "..")):
            raise ValueError(f"token_credential must be a plain file name (got {value!r})")
        return value


def _check_entity_ids(key: str, value: Any, allow_all: bool = True,
                      rendered: bool = False) -> None:
    """ValueError unless `value` is None, one entity id, or a list of them (`all` where
    Home Assistant takes it); a template ("light.{area}") is checked once `rendered`."""
    if value is None:
        return
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{key}: {item!r:.80} is not an entity id (a string)")
        if "{" in item and not rendered:
            continue
        if allow_all and item == "all" and not isinstance(value, list):
            continue
        if not _ENTITY_ID.fullmatch(item):
            raise ValueError(f"{key}: {item[:80]!a} is not a Home Assistant entity id "
                             "(one domain.object_id: lower-case letters, digits, _; "
                             "a list for several)")


def _unreachable(url: str, exc: BaseException) -> PluginError:
    return PluginError("ha_unreachable", f"Home Assistant at {url} is unreachable: {exc}")


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    path: str,
    token: str,
    *,
    body: Any = None,
    timeout_s: float,
    verify_tls: bool = True,
) -> tuple[int, str]:
    """One authorized request; map network failures and bad statuses to PluginError."""
    try:
        async with session.request(
            method,
            url + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            ssl=verify_tls,
        ) as resp:
            status = resp.status
            text = await read_body(resp, MAX_BODY, code="ha_error",
                                   what=f"Home Assistant at {url}, {method} {path}")
    except TimeoutError as exc:
        raise PluginError(
            "ha_unreachable", f"Home Assistant at {url} did not answer within {timeout_s:g} s"
        ) from exc
    except aiohttp.ClientError as exc:
        raise _unreachable(url, exc) from exc
    if status == 401:
        raise PluginError(
            "ha_unauthorized", f"Home Assistant at {url} rejected the access token (401)"
        )
    if not 200 <= status < 300:
        raise PluginError(
            "ha_error", f"{method} {path} answered {status}: {text[:_MAX_ERROR_BODY]!r}"
        )
    return status, text


class HomeAssistantPlugin(HttpClientPlugin):
    """Call one Home Assistant service per intent."""

    name: ClassVar[str] = "home_assistant"
    Options: ClassVar[type[HomeAssistantOptions]] = HomeAssistantOptions

    @staticmethod
    def targets(options: HomeAssistantOptions) -> list[str]:
        """For protection rules: `service:<domain.service>` and every entity id it names
        (`entity_id`, `data.entity_id`, `data.target.entity_id`); a call naming no entity,
        `all`, or an area, device or label (`area_id`, `device_id`, `label_id`, in `data`
        or `data.target`) acts on the whole domain (`<domain>.*`)."""
        domain = options.service.split(".", 1)[0]
        data = options.data
        target = data.get("target")
        target = target if isinstance(target, dict) else {}
        named: list[Any] = []
        for value in (options.entity_id, data.get("entity_id"), target.get("entity_id")):
            named.extend(value if isinstance(value, list) else [value] if value else [])
        # entity ids are validated (one each); a comma list is split all the same
        entities = [e.strip() for n in named for e in str(n).split(",") if e.strip() != "all"]
        grouped = any(key in where for where in (data, target)
                      for key in ("area_id", "device_id", "label_id", "floor_id"))
        whole = not entities or "all" in map(str, named) or grouped
        return [f"service:{options.service}", *entities, *([f"{domain}.*"] if whole else [])]

    async def handle(self, request: Request) -> Response:
        """POST the service call; raise PluginError("ha_unreachable", ...) and friends."""
        opts: HomeAssistantOptions = request.options
        if not _SERVICE.match(opts.service):
            raise PluginError(
                "ha_bad_service", f"service {opts.service!r} is not of the form 'domain.service'"
            )
        domain, service = opts.service.split(".", 1)
        # the options' validators let templates through at start-up; what goes to Home
        # Assistant is checked here, after rendering, braces and all
        target = opts.data.get("target")
        try:
            _check_entity_ids("entity_id", opts.entity_id, allow_all=False, rendered=True)
            _check_entity_ids("data.entity_id", opts.data.get("entity_id"), rendered=True)
            if isinstance(target, dict):
                _check_entity_ids("data.target.entity_id", target.get("entity_id"),
                                  rendered=True)
        except ValueError as exc:
            raise PluginError("slot_unsafe", f"home_assistant: {exc}") from None
        token = read_token(opts.token_env, opts.token_credential)
        body: dict[str, Any] = dict(opts.data)
        if opts.entity_id is not None:
            body["entity_id"] = opts.entity_id
        if self._session is None:
            await self.start()
        assert self._session is not None
        log.debug("home_assistant: %s %s", opts.service, opts.entity_id)
        _, text = await _call(
            self._session,
            "POST",
            opts.url,
            f"/api/services/{domain}/{service}",
            token,
            body=body,
            timeout_s=opts.timeout_s,
            verify_tls=opts.verify_tls,
        )
        try:
            states = json.loads(text)
        except ValueError:
            states = []
        changed = [s.get("entity_id") for s in states if isinstance(s, dict)]
        answer = None
        if opts.answer is not None:
            values = {
                "service": opts.service,
                "entity_id": opts.entity_id,
                "changed": len(changed),
            }
            answer = render_answer(opts.answer, request.variables, values)
        return Response(
            text=answer,
            data={"service": opts.service, "entity_id": opts.entity_id, "changed": changed},
        )
