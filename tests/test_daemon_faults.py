"""Daemon-level faults: a reload whose grammar cannot be built, a dead MQTT link, a
text command through the running daemon. Real mosquitto, real in-process daemon."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import aiomqtt
from fakes import FakeTranscriber
from support import REPO, Mosquitto, make_config, running_daemon

from voiced.errors import AsrError
from voiced.models import Transcript
from voiced.storage import History
from voiced.transport import native

NEW_INTENT = """
language: en
intents:
  OpenPodBay:
    data:
      - sentences: ["open the pod bay doors"]
"""


class BrokenGrammar(FakeTranscriber):
    """A recognizer whose grammar rebuild fails (as a dead worker or a bad grammar does)."""

    def reload(self, intents: object) -> None:
        raise AsrError("grammar_failed", "could not compile the grammar")


async def _next_error(client: aiomqtt.Client) -> dict[str, object]:
    async with asyncio.timeout(10):
        async for message in client.messages:
            return json.loads(message.payload)  # type: ignore[arg-type,no-any-return]
    raise AssertionError("no message")


async def test_reload_with_a_grammar_that_cannot_be_built_keeps_everything(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    intents = tmp_path / "intents"
    shutil.copytree(REPO / "config" / "intents", intents)
    config = make_config(tmp_path, mosquitto.port, intents={"paths": [str(intents)]})
    async with running_daemon(config) as daemon, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
        await peer.subscribe("hermes/error/nlu")
        old = daemon.recognizer
        daemon.asr.transcriber = BrokenGrammar(Transcript("", 0.0))
        (intents / "podbay.yaml").write_text(NEW_INTENT)
        assert await daemon.reload() is False
        error = await _next_error(peer)
        assert "grammar_failed" in str(error["error"])
        # all or nothing: the intents the daemon matches are still the old ones
        assert daemon.recognizer is old and daemon.pipeline.recognizer is old
        assert daemon.recognizer.recognize("open the pod bay doors").name is None
        # the watcher lives on: once the grammar builds again, a change reloads
        daemon.asr.transcriber = FakeTranscriber(Transcript("", 0.0))
        before = daemon.reloads
        (intents / "podbay.yaml").write_text(NEW_INTENT + "\n# touched\n")
        async with asyncio.timeout(15):
            while daemon.reloads == before:
                await asyncio.sleep(0.1)
        assert daemon.recognizer.recognize("open the pod bay doors").name == "OpenPodBay"


async def test_a_dead_mqtt_link_is_fatal_and_the_status_says_offline(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = make_config(tmp_path, mosquitto.port)
    async with running_daemon(config) as daemon:
        # a bug: a subscription paho refuses. It bites at the next (re)connection.
        daemon.link._subscriptions.append("bad/#/filter")
        mosquitto.stop()
        mosquitto.start()
        async with asyncio.timeout(30):
            await daemon.fatal.wait()
        assert "mqtt-link" in (daemon.supervisor.fatal_reason or "")
    # stop() said goodbye on a fresh connection: no retained "ready" for a deaf voiced
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
        await peer.subscribe(native.STATUS_TOPIC)
        status = await _next_error(peer)
    assert status["state"] == "offline"


async def test_text_command_through_the_running_daemon(mosquitto: Mosquitto,
                                                       tmp_path: Path) -> None:
    config = make_config(tmp_path, mosquitto.port,
                         handlers=[{"intent": "HassTurnOn", "plugin": "mqtt_publish",
                                    "options": {"topic": "home/{area}/light/set",
                                                "payload": {"state": "on"}}}])
    async with running_daemon(config) as daemon, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
        await peer.subscribe("home/#")
        result = await daemon.pipeline.handle_text("turn on the office lights", site="desk")
        assert result.intent.name == "HassTurnOn"
        published = await _next_error(peer)
    assert published == {"state": "on"}
    history = History(config.state_dir / "voiced.db")
    try:
        rows = history.recent(5)
    finally:
        history.close()
    assert [(r.site, r.intent, r.outcome, r.end_reason) for r in rows] == [
        ("desk", "HassTurnOn", "handled", "text")]


async def test_mqtt_publish_keeps_its_qos_and_retain_options(mosquitto: Mosquitto,
                                                             tmp_path: Path) -> None:
    """`retain: true` and `qos: 1` of an mqtt_publish handler reach the broker (they were
    accepted and then ignored): a subscriber that connects after the command still gets
    the state, marked retained, at QoS 1."""
    config = make_config(tmp_path, mosquitto.port,
                         handlers=[{"intent": "HassTurnOn", "plugin": "mqtt_publish",
                                    "options": {"topic": "home/{area}/light/state",
                                                "payload": {"state": "on"},
                                                "qos": 1, "retain": True}}])
    async with running_daemon(config) as daemon:
        result = await daemon.pipeline.handle_text("turn on the office lights", site="desk")
        assert result.intent.name == "HassTurnOn"
        assert await daemon.link.drain(10)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as late:
        await late.subscribe("home/#", qos=1)
        async with asyncio.timeout(10):
            message = await anext(aiter(late.messages))
    assert message.topic.value == "home/office/light/state"
    assert json.loads(message.payload) == {"state": "on"}  # type: ignore[arg-type]
    assert message.retain and message.qos == 1


async def test_a_follow_up_that_cannot_be_heard_still_ends_its_session(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A handler asks a follow-up question ("For how long?") of text entered for a site
    that has no satellite listening: the follow-up cannot be queued anywhere, and the
    session used to stay open for ever (no `session_ended`). It now ends with `error`,
    saying why."""
    intents = tmp_path / "intents"
    intents.mkdir()
    (intents / "timer.yaml").write_text(
        "language: en\nintents:\n  HassStartTimer:\n    data:\n"
        "      - sentences: ['set a timer', 'set a timer for {minutes} minutes']\n"
        "lists:\n  minutes:\n    range: {from: 1, to: 60}\n")
    config = make_config(tmp_path, mosquitto.port, intents={"paths": [str(intents)]},
                         handlers=[{"intent": "HassStartTimer", "plugin": "timer"}])
    async with running_daemon(config) as daemon, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
        await peer.subscribe("voiced/events/ghost")
        result = await daemon.pipeline.handle_text("set a timer", site="ghost",
                                                    session_id="asked-1")
        assert result.intent.name == "HassStartTimer" and result.termination is None
        async with asyncio.timeout(10):
            async for msg in peer.messages:
                event = json.loads(msg.payload)  # type: ignore[arg-type]
                if event["type"] == "session_ended":
                    break
        assert event["sessionId"] == "asked-1"
        assert event["reason"] == "error" and "could not be queued" in event["error"], event
