"""Intent sources beyond your own files: the official Home Assistant sentences.

The `home-assistant-intents` package ships Home Assistant's sentences for each language
as one hassil document. They refer to the lists `name`, `area` and `floor`, which describe
a particular home: voiced fills them from voiced.yaml (`intents.areas`,
`intents.entities`, `intents.floors`) or from Home Assistant itself (the home_assistant
plugin's `import_home_assistant`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voiced.errors import IntentError


def _values(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"values": list(items)}


def home_lists(areas: Sequence[str], entities: Sequence[Any],
               floors: Sequence[str] = (), zones: Sequence[str] = ()) -> dict[str, Any]:
    """hassil lists `area`, `floor` and `name` for a home.

    `entities` are objects with `name`, `id`, `domain` and `area` (EntityConfig), or dicts
    with those keys. A name's value is the entity id; its context carries the domain and
    area so that `requires_context: {domain: light}` in the official sentences works.
    """
    names = []
    for entity in entities:
        e = entity if isinstance(entity, dict) else entity.model_dump()
        context = {"domain": e.get("domain")} if e.get("domain") else {}
        if e.get("area"):
            context["area"] = e["area"]
        names.append({"in": e["name"], "out": e.get("id") or e["name"], "context": context,
                      "metadata": {"domain": e.get("domain")}})
    lists = {
        "area": _values([{"in": a, "out": a} for a in areas]),
        "floor": _values([{"in": f, "out": f} for f in floors]),
        "name": _values(names),
    }
    if zones:
        # Home Assistant's zone list is a wildcard ("who is at {zone}") that accepts any
        # words; naming the home's zones keeps questions like "who is the president"
        # from matching it
        lists["zone"] = _values([{"in": z, "out": z} for z in zones])
    return lists


def official_intents(language: str, areas: Sequence[str], entities: Sequence[Any],
                     floors: Sequence[str] = (), zones: Sequence[str] = ()) -> dict[str, Any]:
    """The official Home Assistant sentences for `language`, with the home's lists."""
    try:
        import home_assistant_intents
    except ImportError as exc:
        raise IntentError("official_unavailable",
                          "intents.official needs the package home-assistant-intents "
                          "(pip install home-assistant-intents)") from exc
    data = home_assistant_intents.get_intents(language)
    if not data:  # voiced compares codes in lower case; the package names de-CH, pt-BR
        known_as = {code.lower(): code for code in home_assistant_intents.get_languages()}
        if language.lower() in known_as:
            data = home_assistant_intents.get_intents(known_as[language.lower()])
    if not data:
        known = ", ".join(sorted(home_assistant_intents.get_languages())[:20])
        raise IntentError("official_unavailable",
                          f"home-assistant-intents has no sentences for language {language!r} "
                          f"(it has: {known}, ...)")
    data = dict(data)
    lists = dict(data.get("lists") or {})
    lists.update(home_lists(areas, entities, floors, zones))
    data["lists"] = lists
    data.pop("responses", None)
    return data
