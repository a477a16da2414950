"""Template rendering for handler options (pure)."""

from __future__ import annotations

import pytest

from voiced.errors import PluginError
from voiced.intents import templates
from voiced.intents.templates import SpeakerVars


def _vars() -> dict[str, object]:
    return {"area": "kitchen", "brightness": 40, "site": "k1",
            "speaker": SpeakerVars("alice", {"playlist": "Alice's mix"}), "text": "x"}


def test_render_keeps_numbers_and_formats_strings() -> None:
    out = templates.render({"entity": "light.{area}", "level": "{brightness}",
                            "list": ["{site}", 3], "who": "{speaker}",
                            "pl": "{speaker.playlist}", "later": "{{response[t]}} deg"}, _vars())
    assert out == {"entity": "light.kitchen", "level": 40, "list": ["k1", 3], "who": "alice",
                   "pl": "Alice's mix", "later": "{response[t]} deg"}


def test_missing_values_and_private_attributes_are_errors() -> None:
    with pytest.raises(PluginError, match=r"needs \{room\}"):
        templates.render("light.{room}", _vars())
    with pytest.raises(PluginError, match="no variable 'car'"):
        templates.render("{speaker.car}", _vars())
    with pytest.raises(PluginError, match="not allowed"):
        templates.render("{speaker.__class__}", _vars())


def test_fields_and_syntax_errors() -> None:
    assert templates.fields({"a": "x.{area}", "b": ["{speaker.playlist}", "{{lit}}"]}) == {
        "area", "speaker"}
    assert templates.syntax_errors({"a": {"b": "light.{area"}})[0].startswith("a.b:")
    assert templates.syntax_errors({"a": "ok {area}"}) == []
