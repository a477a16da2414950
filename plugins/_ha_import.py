"""Areas and entity names imported from Home Assistant for the intent lists
(`intents.home_assistant`): read over its REST API at start-up and on every reload, and
made safe for the grammar (names are words, ids are plain Home Assistant ids).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import aiohttp

from voiced.errors import PluginError

from .home_assistant import _ENTITY_ID, AREAS_TEMPLATE, _call, read_token

__all__ = ["HomeAssistantImport", "ListValue", "import_home_assistant"]

log = logging.getLogger("voiced_plugins.home_assistant")


@dataclass(frozen=True, slots=True)
class ListValue:
    """One value of an intent slot list: what people say, and what the slot becomes."""

    spoken: str
    """The name as spoken ("Living Room", "Kitchen Light")."""
    value: str
    """The slot value: an area id ("living_room") or an entity id ("light.kitchen")."""

    def to_hassil(self) -> dict[str, str]:
        """hassil's ``{in, out}`` form."""
        return {"in": self.spoken, "out": self.value}


@dataclass(frozen=True, slots=True)
class HomeAssistantImport:
    """Areas and entity names read from Home Assistant."""

    areas: tuple[ListValue, ...]
    entities: tuple[ListValue, ...]

    def to_hassil_lists(self) -> dict[str, dict[str, list[dict[str, str]]]]:
        """The ``lists:`` section hassil (and the official sentences) expect.

        ``area`` maps area names to area ids, so ``light.{area}`` gives ``light.kitchen``;
        ``name`` maps friendly names to entity ids, so ``entity_id: "{name}"`` works as is.
        """
        return {
            "area": {"values": [v.to_hassil() for v in self.areas]},
            "name": {"values": [v.to_hassil() for v in self.entities]},
        }


MAX_IMPORTED_NAME = 100
"""Characters of a name imported from Home Assistant; a longer one is left out (each is
spelled into the grammar: one 1 MB name cost 330 MB)."""
_TEMPLATE_SYNTAX = re.compile(r"[()\[\]{}<>|]")
"""hassil template syntax: in an imported name it is text, not alternatives or slots."""
_IMPORTED_AREA_ID = re.compile(r"[a-z0-9_]+")


def _entity_name(state: dict[str, Any]) -> str:
    attrs = state.get("attributes")
    name = attrs.get("friendly_name") if isinstance(attrs, dict) else None
    if isinstance(name, str) and name.strip():
        return name.strip()
    return str(state["entity_id"]).split(".", 1)[-1].replace("_", " ")


def _spoken(name: str) -> str | None:
    """An imported name as plain words for the grammar: hassil's template syntax
    (`(a|b)`, `[x]`, `{list}`, `<rule>`) becomes spaces (a device named "(ceiling|all)
    lights" answered to "all lights"; one named "lamp <name>" stopped start-up); None for
    a name too long or with nothing left."""
    if len(name) > MAX_IMPORTED_NAME:
        return None
    return " ".join(_TEMPLATE_SYNTAX.sub(" ", name).split()) or None


async def import_home_assistant(
    url: str,
    *,
    token: str | None = None,
    token_env: str = "HA_TOKEN",
    token_credential: str | None = None,
    domains: Collection[str] | None = None,
    timeout_s: float = 10.0,
    verify_tls: bool = True,
    session: aiohttp.ClientSession | None = None,
) -> HomeAssistantImport:
    """Read areas and entity names from Home Assistant for the intent lists.

    Entities come from ``GET /api/states`` (their ``friendly_name``, else the object id
    with spaces), restricted to `domains` (e.g. ``{"light", "switch"}``) when given.
    Areas come from the template API (``POST /api/template`` rendering
    `AREAS_TEMPLATE`: ``areas()`` and ``area_name``). The token is `token`, else read
    like the plugin reads it (`read_token`). Raises PluginError (``ha_unreachable``,
    ``ha_unauthorized``, ``ha_error``, ``ha_no_token``); callers at start-up should log
    it and carry on with the lists from voiced.yaml.
    """
    url = url.rstrip("/")
    token = token or read_token(token_env, token_credential)
    own = session is None
    client = session or aiohttp.ClientSession()
    try:
        _, states_text = await _call(
            client, "GET", url, "/api/states", token, timeout_s=timeout_s, verify_tls=verify_tls
        )
        _, areas_text = await _call(
            client,
            "POST",
            url,
            "/api/template",
            token,
            body={"template": AREAS_TEMPLATE},
            timeout_s=timeout_s,
            verify_tls=verify_tls,
        )
    finally:
        if own:
            await client.close()
    try:
        states = json.loads(states_text)
        raw_areas = json.loads(areas_text)
    except ValueError as exc:
        raise PluginError("ha_error", f"Home Assistant at {url} sent invalid JSON: {exc}") from exc
    if not isinstance(states, list) or not isinstance(raw_areas, list):
        raise PluginError("ha_error", f"Home Assistant at {url} sent an unexpected answer")
    entities, areas, skipped = [], [], 0
    for state in states:
        entity_id = state.get("entity_id") if isinstance(state, dict) else None
        if not isinstance(entity_id, str) or not _ENTITY_ID.fullmatch(entity_id):
            skipped += 1
            continue
        if domains is not None and entity_id.split(".", 1)[0] not in domains:
            continue
        spoken = _spoken(_entity_name(state))
        if spoken is None:
            skipped += 1
            continue
        entities.append(ListValue(spoken, entity_id))
    for area in raw_areas:
        area_id = area.get("id") if isinstance(area, dict) else None
        if not isinstance(area_id, str) or not _IMPORTED_AREA_ID.fullmatch(area_id):
            skipped += 1
            continue
        name = area.get("name")
        spoken = _spoken(name if isinstance(name, str) and name.strip() else area_id)
        if spoken is None:
            skipped += 1
            continue
        areas.append(ListValue(spoken, area_id))
    if skipped:
        log.warning("Home Assistant at %s: %d entities or areas left out (an id that is not "
                    "lower-case letters, digits and _, or a name over %d characters)", url,
                    skipped, MAX_IMPORTED_NAME)
    log.info(
        "imported %d areas and %d entities from Home Assistant at %s",
        len(areas),
        len(entities),
        url,
    )
    return HomeAssistantImport(areas=tuple(areas), entities=tuple(entities))
