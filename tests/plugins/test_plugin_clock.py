"""The clock plugin: spoken time and date, formats, time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from voiced_plugins.clock import ClockPlugin, format_time

from voiced.intents.api import PluginContext

# Saturday 21 November 2026, 15:05 UTC
FIXED = datetime(2026, 11, 21, 15, 5, 9, tzinfo=UTC)


@pytest.fixture
def plugin(context: PluginContext) -> ClockPlugin:
    instance = ClockPlugin(context)

    def fixed_now(zone: tzinfo | None) -> datetime:
        return FIXED.astimezone(zone or UTC)

    instance.now = fixed_now
    return instance


async def test_time(plugin: ClockPlugin, make_request: Any) -> None:
    response = await plugin.handle(make_request(plugin, {}, intent="HassGetCurrentTime"))
    assert response.text == "It is 3:05 PM."
    assert response.data["what"] == "time"


async def test_date_from_intent_name(plugin: ClockPlugin, make_request: Any) -> None:
    response = await plugin.handle(make_request(plugin, {}, intent="HassGetCurrentDate"))
    assert response.text == "Today is Saturday, November 21."


async def test_timezone_is_applied(plugin: ClockPlugin, make_request: Any) -> None:
    tokyo = make_request(plugin, {"timezone": "Asia/Tokyo", "what": "time"}, intent="WhatTime")
    assert (await plugin.handle(tokyo)).text == "It is 12:05 AM."
    date = make_request(plugin, {"timezone": "Asia/Tokyo", "what": "date"}, intent="WhatTime")
    assert (await plugin.handle(date)).text == "Today is Sunday, November 22."


async def test_custom_formats(plugin: ClockPlugin, make_request: Any) -> None:
    options = {"time_format": "{speaker}, it's %H:%M (%%)", "timezone": "Europe/Paris"}
    response = await plugin.handle(make_request(plugin, options))
    assert response.text == "unknown, it's 16:05 (%)"


async def test_real_clock(context: PluginContext, make_request: Any) -> None:
    plugin = ClockPlugin(context)
    response = await plugin.handle(make_request(plugin, {"timezone": "UTC"}))
    said = datetime.fromisoformat(response.data["iso"])
    assert abs(said - datetime.now(ZoneInfo("UTC"))) < timedelta(seconds=5)
    assert response.text.startswith("It is ") and response.text.endswith(("AM.", "PM."))


def test_no_padding_fields() -> None:
    moment = datetime(2026, 1, 2, 0, 7)
    assert format_time(moment, "%-I:%M %p, %-d/%-m, %-H h %-M") == "12:07 AM, 2/1, 0 h 7"
    assert format_time(moment, "100%% at %d") == "100% at 02"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"what": "weather"}, "'time' or 'date'"),
        ({"format": "%H"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        ClockPlugin.Options.model_validate(options)
    assert message in str(err.value)


async def test_an_inserted_value_is_no_strftime_directive(
    plugin: ClockPlugin, make_request: Any
) -> None:
    request = make_request(plugin, {"time_format": "{name}, it is %H:%M."},
                           slots={"name": "%c %%"}, intent="HassGetCurrentTime")
    response = await plugin.handle(request)
    assert response.text == "%c %%, it is 15:05."
