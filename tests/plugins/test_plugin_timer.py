"""The timer plugin: real asyncio timers, real SQLite in the state folder, restarts."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import pytest
from pydantic import ValidationError
from voiced_plugins._durations import duration_from_slots, parse_number, speak_duration
from voiced_plugins.timer import TimerPlugin, infer_action

from voiced.intents.api import PluginContext


@pytest.fixture
async def plugin(say_context: PluginContext):
    instance = TimerPlugin(say_context)
    await instance.start()
    yield instance
    await instance.stop()


def stored(context: PluginContext) -> list[tuple[Any, ...]]:
    with sqlite3.connect(context.state_dir / "timers.db") as db:
        return db.execute("SELECT site, name, duration_s FROM timers ORDER BY ends_at").fetchall()


async def announced_after_start(context: PluginContext, recorder: Any) -> list[Any]:
    """Start a timer plugin (a daemon start), wait for its first announcement, stop it;
    what it published."""
    plugin = TimerPlugin(context)
    await plugin.start()
    try:
        await recorder.wait(1, limit_s=5)
    finally:
        await plugin.stop()
    return list(recorder.published)


async def test_timer_rings_on_its_site_and_is_forgotten(
    plugin: TimerPlugin, make_request: Any, recorder: Any, say_context: PluginContext
) -> None:
    request = make_request(plugin, {}, intent="HassStartTimer", slots={"seconds": 1}, site="hall")
    response = await plugin.handle(request)
    assert response.text == "Timer set for 1 second."
    assert stored(say_context) == [("hall", None, 1.0)]

    await recorder.wait(1, limit_s=5)
    assert recorder.said == [("hall", "Your 1 second timer is done.")]
    assert recorder.published == []
    # the row goes once the announcement is out (written by the plugin's own task)
    async with asyncio.timeout(5):
        while stored(say_context):
            await asyncio.sleep(0.01)
    assert plugin.timers() == []


async def test_set_list_and_cancel_by_name(plugin: TimerPlugin, make_request: Any) -> None:
    start = make_request(
        plugin, {}, intent="HassStartTimer", slots={"minutes": "ten", "name": "pasta"}
    )
    assert (await plugin.handle(start)).text == "pasta timer set for 10 minutes."
    start2 = make_request(plugin, {}, intent="HassStartTimer", slots={"minutes": 5})
    assert (await plugin.handle(start2)).text == "Timer set for 5 minutes."
    elsewhere = make_request(plugin, {}, intent="HassStartTimer", slots={"hours": 1}, site="attic")
    await plugin.handle(elsewhere)

    listing = (await plugin.handle(make_request(plugin, {}, intent="HassTimerStatus"))).text
    assert listing.startswith("You have 2 timers: the 5 minute timer has 5 minutes left;")
    assert "the pasta timer has 10 minutes left" in listing
    assert "hour" not in listing  # the attic's timer is not the kitchen's

    cancel = make_request(plugin, {}, intent="HassCancelTimer", slots={"name": "Pasta"})
    assert (await plugin.handle(cancel)).text == "The pasta timer is cancelled."
    assert [t.name for t in plugin.timers("kitchen")] == [None]


async def test_ambiguous_cancel_asks_which(plugin: TimerPlugin, make_request: Any) -> None:
    for minutes in (3, 7):
        await plugin.handle(make_request(plugin, {}, slots={"minutes": minutes}))
    response = await plugin.handle(make_request(plugin, {}, intent="HassCancelTimer"))
    assert response.continue_session is not None
    assert "Which one" in response.continue_session.text
    assert response.continue_session.intent_filter == ("HassCancelTimer",)
    assert len(plugin.timers()) == 2

    by_duration = make_request(plugin, {}, intent="HassCancelTimer", slots={"minutes": 7})
    assert (await plugin.handle(by_duration)).text == "The 7 minute timer is cancelled."
    everything = await plugin.handle(make_request(plugin, {}, intent="HassCancelAllTimers"))
    assert everything.data["cancelled"] and plugin.timers() == []
    nothing = await plugin.handle(make_request(plugin, {"action": "cancel"}))
    assert nothing.text == "There are no timers running."


async def test_timers_survive_a_restart(
    say_context: PluginContext, make_request: Any, recorder: Any
) -> None:
    first = TimerPlugin(say_context)
    await first.start()
    await first.handle(make_request(first, {}, slots={"minutes": 30, "name": "bread"}))
    [before] = first.timers()
    await first.stop()

    second = TimerPlugin(say_context)
    await second.start()
    try:
        [after] = second.timers()
        assert (after.id, after.name, after.ends_at) == (before.id, "bread", before.ends_at)
        listing = await second.handle(make_request(second, {"action": "list"}))
        assert listing.text.startswith("The bread timer has 30 minutes left.")
    finally:
        await second.stop()
    assert recorder.said == []


async def test_expired_while_down_is_announced_at_start(
    context: PluginContext, make_request: Any, recorder: Any
) -> None:
    """Without `say` the announcement is a Hermes tts/say message through publish."""
    first = TimerPlugin(context)
    await first.start()
    await first.handle(make_request(first, {}, slots={"seconds": 1}, site="office"))
    await first.stop()
    await asyncio.sleep(1.2)  # the daemon is "down" while the timer runs out
    assert recorder.published == []

    [(topic, payload)] = await announced_after_start(context, recorder)
    assert topic == "hermes/tts/say"
    assert payload["siteId"] == "office"
    assert payload["text"] == "Your 1 second timer is done."
    assert payload["lang"] == "en" and payload["sessionId"] is None and payload["id"]
    assert stored(context) == []


async def test_long_overdue_timer_says_how_late(
    context: PluginContext, recorder: Any
) -> None:
    """A timer that ran out two hours ago while voiced was stopped is not "done" just now."""
    from voiced_plugins._timer_store import Timer, TimerStore

    store = TimerStore(context.state_dir / "timers.db")
    store.open()
    now = time.time()
    store.add(Timer(id="overdue", site="kitchen", name="pasta", duration_s=600,
                    ends_at=now - 2 * 3600 - 50, created_at=now - 2 * 3600 - 650,
                    announcement="The pasta timer is done."))
    [(_, payload)] = await announced_after_start(context, recorder)
    assert payload["text"] == ("The pasta timer is done. It ran out 2 hours and 1 minute ago, "
                               "while voiced was not running.")
    assert stored(context) == []


async def test_announcement_template(plugin: TimerPlugin, make_request: Any, recorder: Any) -> None:
    options = {"announce": "{speaker}, {{name}} is ready after {{duration}} in the {area}."}
    request = make_request(plugin, options, slots={"seconds": 1, "name": "tea"}, area="kitchen")
    await plugin.handle(request)
    await recorder.wait(1)
    assert recorder.said == [("kitchen", "unknown, tea is ready after 1 second in the kitchen.")]


async def test_no_duration_asks_for_one(plugin: TimerPlugin, make_request: Any) -> None:
    response = await plugin.handle(make_request(plugin, {}, intent="HassStartTimer"))
    assert response.continue_session is not None
    assert response.continue_session.text == "For how long?"
    assert plugin.timers() == []


async def test_limits(plugin: TimerPlugin, make_request: Any) -> None:
    from voiced.errors import PluginError

    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {}, slots={"hours": 48}))
    assert err.value.code == "timer_too_long"
    await plugin.handle(make_request(plugin, {"max_timers": 1}, slots={"minutes": 1}))
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {"max_timers": 1}, slots={"minutes": 2}))
    assert err.value.code == "timer_limit"
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {}, slots={"minutes": "lots"}))
    assert err.value.code == "timer_bad_duration"


def test_actions_from_intent_names() -> None:
    assert infer_action("HassStartTimer") == "start"
    assert infer_action("SetTimer") == "start"
    assert infer_action("HassCancelTimer") == "cancel"
    assert infer_action("StopTimer") == "cancel"
    assert infer_action("HassCancelAllTimers") == "cancel_all"
    assert infer_action("HassTimerStatus") == "list"
    assert infer_action("ListTimers") == "list"


def test_durations() -> None:
    assert parse_number("twenty-five") == 25
    assert parse_number("one and a half") == 1.5
    assert parse_number("an") == 1
    assert parse_number(" 90 ") == 90
    with pytest.raises(ValueError):
        parse_number("soon")
    assert duration_from_slots({"hours": "an", "minutes": "thirty", "seconds": None}) == 5400
    assert speak_duration(5400) == "1 hour and 30 minutes"
    assert speak_duration(3725) == "1 hour, 2 minutes and 5 seconds"
    assert speak_duration(1) == "1 second"
    assert speak_duration(600, attributive=True) == "10 minute"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"action": "pause"}, "'start', 'cancel', 'cancel_all' or 'list'"),
        ({"max_timers": 0}, "greater than or equal to 1"),
        ({"sound": "bell"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        TimerPlugin.Options.model_validate(options)
    assert message in str(err.value)


@pytest.mark.parametrize("said", ["nan", "inf", "1e400", "-5", -5, "0", 0, "0.001", "1e-9"])
async def test_impossible_durations_are_refused_clearly(
    plugin: TimerPlugin, make_request: Any, said: Any
) -> None:
    from voiced.errors import PluginError

    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {}, slots={"minutes": said}))
    assert err.value.code == "timer_bad_duration"
    assert repr(said) in err.value.message
    assert plugin.timers() == []


async def test_announcement_values_are_text(plugin: TimerPlugin, make_request: Any) -> None:
    """`{text}` in `announce` is what was said, never a template for the timer's fields."""
    request = make_request(plugin, {"announce": "{{name}} is ready: {text}"},
                           slots={"minutes": 5, "name": "pasta"}, text="{name}{duration}")
    await plugin.handle(request)
    assert plugin.timers()[0].announcement == "pasta is ready: {name}{duration}"


@pytest.mark.parametrize("value", [float("inf"), float("nan"), "inf"])
def test_max_duration_must_be_finite(value: Any) -> None:
    with pytest.raises(ValidationError) as err:
        TimerPlugin.Options.model_validate({"max_duration_s": value})
    assert "max_duration_s" in str(err.value) and "finite" in str(err.value)
