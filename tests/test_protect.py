"""Protection rules through the real pipeline: every way in goes through the same check.

Real parts: Home Assistant's official sentences with a lock entity, the pipeline and its
runs, the router with the real `mqtt_publish` plugin publishing through a real mosquitto
(a subscriber proves what was and was not published), SQLite history, the Hermes and
native event translators. The recognizer hears a scripted sentence and the speaker is a
scripted person (tests/fakes.py); tests/test_protect_e2e.py does it with real voices.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from fakes import FakeSpeakers, FakeTranscriber, RecordingPublish, RecordingSubscriber, utterance
from support import Mosquitto

from voiced.asr.service import AsrService
from voiced.config import Config, HandlerConfig, HistoryConfig
from voiced.events import EventSink
from voiced.inference import InferenceEngine
from voiced.intents.api import ContinueSession, Plugin, PluginContext, Request, Response
from voiced.intents.catalog import load_catalog
from voiced.intents.plugins import PluginHost, discover_plugins
from voiced.intents.recognizer import IntentRecognizer
from voiced.intents.router import Router
from voiced.models import NO_SPEAKER, EventType, Outcome, SpeakerMatch, Transcript
from voiced.pipeline import Pipeline
from voiced.protect import CONFIRM_MARK, CONFIRM_TURN, PLACEHOLDER, Protector
from voiced.recorder import HistoryWriter
from voiced.storage import History
from voiced.transport.outputs import HermesBridge, NativeEvents

ALICE = SpeakerMatch("alice", 0.92)
PIN = "2580"
DOORS = {"name": "doors", "match": ["lock.*", "intent:UnlockDoor"], "people": ["alice"],
         "sites": ["hall", "kitchen"]}
HANDLERS: list[dict[str, Any]] = [
    {"intent": "HassTurnOff", "plugin": "mqtt_publish",
     "options": {"topic": "test/{name}", "payload": {"by": "{speaker}", "site": "{site}"}}},
    {"intent": "LockDoor", "plugin": "mqtt_publish",
     "options": {"topic": "home/lock/{door}", "payload": "lock"}},
    {"intent": "HassGetCurrentTime", "plugin": "ask"},
]


class AskPlugin(Plugin):
    """Asks which door, and listens for the answer (a multi-turn follow-up)."""

    name = "ask"

    async def handle(self, request: Request) -> Response:
        return Response(continue_session=ContinueSession("Which door?", ("HassTurnOff",)))


INTENTS = """
language: en
intents:
  UnlockDoor:  # gated by voice: only alice
    data:
      - sentences: ["unlock [the] {gated_door} door"]
        requires_context: {speaker: [alice]}
  LockDoor:
    data:
      - sentences: ["lock [the] {door} door"]
lists:
  gated_door: {values: [back]}
  door: {values: [front, back]}
"""


def _config(tmp_path: Path, rules: list[dict[str, Any]]) -> Config:
    intents = tmp_path / "intents"
    intents.mkdir(parents=True, exist_ok=True)
    (intents / "doors.yaml").write_text(INTENTS)
    return Config.model_validate({
        "state_dir": str(tmp_path / "state"),
        "intents": {"paths": [str(intents)], "official": True,
                    "areas": ["hall", "kitchen"],
                    "entities": [{"name": "front door", "id": "lock.front_door",
                                  "domain": "lock"}]},
        "speakers": {"backend": "resemblyzer"},
        "asr": {"backend": "whisper"},  # a passphrase would be allowed; the PIN is digits
        "handlers": HANDLERS, "protect": rules})


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> IntentRecognizer:
    """The official sentences (with the confirmation digits), loaded once."""
    rule = {**DOORS, "confirm": {"secret_env": "UNUSED"}}
    return load_catalog(_config(tmp_path_factory.mktemp("c"), [rule]))


class Script:
    """What the scripted recognizer hears next (one sentence per utterance)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, _pcm: bytes) -> Transcript:
        return Transcript(self.lines.pop(0), 0.95, "en")


@dataclass
class Rig:
    pipeline: Pipeline
    protector: Protector
    events: RecordingSubscriber
    wire: RecordingPublish
    speakers: FakeSpeakers
    heard: Script
    broker: aiomqtt.Client
    followed: list[tuple[str, str, tuple[str, ...], str | None, str | None]]
    clock: list[float]

    async def say(self, text: str, who: SpeakerMatch = NO_SPEAKER, site: str = "hall",
                  session: str = "s1", follow_up: bool = False) -> Any:
        """One spoken utterance; `follow_up`: the next turn of the session last continued."""
        self.heard.lines.append(text)
        self.speakers.match = who
        utt = utterance(site=site, session_id=session)
        if follow_up:
            _site, sid, intent_filter, custom, turn = self.followed[-1]
            utt = replace(utt, session_id=sid, intent_filter=intent_filter,
                          custom_data=custom, turn=turn)
        return await self.pipeline.process(utt)

    async def published(self) -> tuple[str, Any]:
        """The next message the handlers published, as the broker delivers it."""
        async with asyncio.timeout(10):
            message = await anext(self.broker.messages)
        return message.topic.value, json.loads(message.payload)  # type: ignore[arg-type]


@asynccontextmanager
async def rig(tmp_path: Path, mosquitto: Mosquitto, catalog: IntentRecognizer,
              rules: list[dict[str, Any]], secrets: dict[str, str] | None = None,
              ) -> AsyncIterator[Rig]:
    config = _config(tmp_path, rules)
    engine = InferenceEngine(2)
    sink = EventSink()
    events, wire = RecordingSubscriber(), RecordingPublish()
    history = History(tmp_path / "voiced.db")
    for subscriber in (HistoryWriter(history, HistoryConfig(), tmp_path, engine), events,
                       HermesBridge(wire), NativeEvents(wire)):
        sink.subscribe(subscriber)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as handlers_link, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as broker:
        await broker.subscribe("test/#")
        await broker.subscribe("home/#")

        async def publish(topic: str, payload: Any, qos: int = 0, retain: bool = False) -> None:
            await handlers_link.publish(topic, json.dumps(payload), qos=1)

        host = PluginHost(PluginContext(publish=publish, state_dir=tmp_path),
                          {**discover_plugins(), "ask": lambda: AskPlugin})
        clock = [0.0]
        protector = Protector(config.protect, secrets, clock=lambda: clock[0])
        router = Router(config.handlers, host.context,
                        lambda i: catalog.slot_names(i) if i in catalog.intent_names() else None,
                        host=host, protector=protector)
        await router.start()
        followed: list[tuple[str, str, tuple[str, ...], str | None, str | None]] = []
        heard = Script()
        speakers = FakeSpeakers(NO_SPEAKER)
        pipeline = Pipeline(config, engine, AsrService(FakeTranscriber(heard), engine),
                            catalog, router, sink, speakers,  # type: ignore[arg-type]
                            continue_session=lambda *a: followed.append(a))
        try:
            yield Rig(pipeline, protector, events, wire, speakers, heard, broker, followed,
                      clock)
        finally:
            await host.stop()
            history.close()
            engine.close()


def _handled(events: RecordingSubscriber) -> list[dict[str, Any]]:
    return [dict(e.data) for e in events.of(EventType.HANDLED)]


async def test_a_stranger_cannot_unlock_through_an_ungated_intent(
        tmp_path: Path, mosquitto: Mosquitto, catalog: IntentRecognizer) -> None:
    """"unlock the front door" with the official sentences is HassTurnOff(lock.front_door):
    no intent gate applies, the rule on lock.* does. A stranger is refused before the
    handler runs and the intent is never announced; Alice, on the same site, is served,
    and hers is the first message the broker delivers (the stranger's never went out)."""
    async with rig(tmp_path, mosquitto, catalog, [DOORS]) as r:
        refused = await r.say("unlock the front door", NO_SPEAKER)
        assert refused.outcome == Outcome.REFUSED and refused.handled.code == "protected"
        assert "protect rule 'doors' (lock.front_door): the voice was not identified" in \
            refused.detail
        assert r.events.of(EventType.INTENT) == []
        assert "hermes/intent/HassTurnOff" not in r.wire.topics()
        assert "hermes/nlu/intentNotRecognized" in r.wire.topics()
        assert [e.data["text"] for e in r.events.of(EventType.SAY)] == [
            "Sorry, I can't do that for you."]
        served = await r.say("unlock the front door", ALICE, session="s2")
        assert served.outcome == Outcome.HANDLED, served.detail
        assert await r.published() == ("test/lock.front_door", {"by": "alice", "site": "hall"})
        ended = [e.data["reason"] for e in r.events.of(EventType.SESSION_ENDED)]
        assert ended == ["abortedByUser", "nominal"]


async def test_allowed_person_from_a_disallowed_site(
        tmp_path: Path, mosquitto: Mosquitto, catalog: IntentRecognizer) -> None:
    """Alice by a window (site porch) is refused; the rule on what the handler publishes
    (`mqtt:home/lock/*`) applies to an innocent-looking intent too."""
    lock_topic = {"name": "lock-topic", "match": ["mqtt:home/lock/*"], "sites": ["hall"]}
    async with rig(tmp_path, mosquitto, catalog, [DOORS, lock_topic]) as r:
        porch = await r.say("unlock the front door", ALICE, site="porch")
        assert porch.outcome == Outcome.REFUSED
        assert "not allowed from site 'porch'" in (porch.detail or "")
        kitchen = await r.say("lock the front door", ALICE, site="kitchen", session="s2")
        assert kitchen.outcome == Outcome.REFUSED and kitchen.intent.name == "LockDoor"
        assert "protect rule 'lock-topic' (mqtt:home/lock/front)" in (kitchen.detail or "")
        hall = await r.say("lock the front door", NO_SPEAKER, site="hall", session="s3")
        assert hall.outcome == Outcome.HANDLED
        assert await r.published() == ("home/lock/front", "lock")


async def test_a_fuzzy_guess_never_reaches_a_protected_target(
        tmp_path: Path, mosquitto: Mosquitto, catalog: IntentRecognizer) -> None:
    async with rig(tmp_path, mosquitto, catalog, [DOORS]) as r:
        guessed = await r.say("unlok the front door", ALICE)
        assert guessed.intent.matched_by == "fuzzy" and guessed.outcome == Outcome.REFUSED
        assert "guessed (fuzzy match)" in (guessed.detail or "")
    relaxed = {**DOORS, "allow_fuzzy": True}
    async with rig(tmp_path / "b", mosquitto, catalog, [relaxed]) as r:
        assert (await r.say("unlok the front door", ALICE)).outcome == Outcome.HANDLED
        assert (await r.published())[0] == "test/lock.front_door"


async def test_a_follow_up_turn_is_checked_like_any_command(
        tmp_path: Path, mosquitto: Mosquitto, catalog: IntentRecognizer) -> None:
    """A plugin asks a question; the answer heard in the continued session is a command
    like any other: a stranger's is refused, Alice's is served."""
    async with rig(tmp_path, mosquitto, catalog, [DOORS]) as r:
        asked = await r.say("what time is it", NO_SPEAKER)
        assert asked.termination is None and r.followed[-1][2] == ("HassTurnOff",)
        answer = await r.say("unlock the front door", NO_SPEAKER, follow_up=True)
        assert answer.outcome == Outcome.REFUSED and "not identified" in (answer.detail or "")
        await r.say("what time is it", ALICE, session="s2")
        answer = await r.say("unlock the front door", ALICE, follow_up=True)
        assert answer.outcome == Outcome.HANDLED
        assert await r.published() == ("test/lock.front_door", {"by": "alice", "site": "hall"})


async def test_a_claimed_name_is_not_a_voice(
        tmp_path: Path, mosquitto: Mosquitto, catalog: IntentRecognizer) -> None:
    """Text entry with speaker="alice": the name fills templates but passes no rule, no
    `requires_context: speaker` gate and no min_speaker_confidence."""
    async with rig(tmp_path, mosquitto, catalog, [DOORS]) as r:
        p = r.pipeline
        text = await p.handle_text("unlock the front door", site="hall", speaker="alice")
        assert text.outcome == Outcome.REFUSED
        assert "the name 'alice' was claimed, not identified by voice" in (text.detail or "")
        assert text.speaker.name == "alice" and not text.speaker.verified
        speaker_event = r.events.of(EventType.SPEAKER)[-1]
        assert speaker_event.data["verified"] is False
        gated = await p.handle_text("unlock the back door", site="hall", speaker="alice")
        assert gated.outcome == Outcome.REFUSED and gated.intent.name == "UnlockDoor"
        # the same words in Alice's identified voice pass
        assert (await r.say("unlock the front door", ALICE)).outcome == Outcome.HANDLED
        assert (await r.published())[1]["by"] == "alice"
    strict = HandlerConfig.model_validate({**HANDLERS[0], "min_speaker_confidence": 0.5})
    host = PluginHost(PluginContext(publish=RecordingPublish(), state_dir=tmp_path))
    router = Router([strict], host.context, catalog.slot_names, host=host)
    await router.start()
    intent = catalog.recognize("unlock the front door", {})
    claimed = await router.handle(intent, site="hall", session_id="s", language="en",
                                  speaker=SpeakerMatch("alice", 1.0, verified=False), area=None)
    assert claimed.outcome == Outcome.REFUSED and claimed.code == "speaker_not_allowed"
    await host.stop()


async def test_spoken_confirmation(tmp_path: Path, mosquitto: Mosquitto,
                                   catalog: IntentRecognizer,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """A right PIN runs the command, a wrong or late one does not; text entry cannot
    answer; the PIN is nowhere: events, the wire, the history, the log."""
    caplog.set_level(logging.DEBUG)
    rule = {**DOORS, "confirm": {"secret_env": "DOOR_PIN", "prompt": "Say the PIN.",
                                 "timeout_s": 10}}
    async with rig(tmp_path, mosquitto, catalog, [rule], {"doors": PIN}) as r:
        asked = await r.say("unlock the front door", ALICE)
        assert asked.outcome == Outcome.CONFIRMING and asked.termination is None
        assert r.followed[-1] == ("hall", "s1", (), CONFIRM_MARK, CONFIRM_TURN)
        assert r.events.of(EventType.INTENT) == []  # not announced before it is confirmed
        assert r.events.of(EventType.SAY)[-1].data["text"] == "Say the PIN."
        wrong = await r.say("two five eight one", ALICE, follow_up=True)
        assert wrong.outcome == Outcome.REFUSED and wrong.handled.code == "confirmation_failed"
        assert wrong.transcript.text == PLACEHOLDER

        await r.say("unlock the front door", ALICE, session="s2")
        r.clock[0] += 11  # the answer comes after timeout_s
        late = await r.say("two five eight zero", ALICE, follow_up=True)
        assert late.handled.code == "confirmation_expired"

        await r.say("unlock the front door", ALICE, session="s3")
        voice = await r.say("two five eight zero", NO_SPEAKER, follow_up=True)
        assert voice.outcome == Outcome.REFUSED
        assert "on the confirming voice" in (voice.detail or "")

        await r.say("unlock the front door", ALICE, session="s4")
        moved_on = await r.say("turn on the hall lights", ALICE, session="s5")
        assert moved_on.outcome == Outcome.NO_HANDLER
        assert not r.protector.waiting("hall")

        text = await r.pipeline.handle_text("unlock the front door", site="hall")
        assert text.outcome == Outcome.REFUSED

        await r.say("unlock the front door", ALICE, session="s6")
        right = await r.say("two five eight zero", ALICE, follow_up=True)
        assert right.outcome == Outcome.HANDLED, right.detail
        assert await r.published() == ("test/lock.front_door", {"by": "alice", "site": "hall"})
        # the PIN said again, outside any confirmation: hidden, and no command
        stray = await r.say("two five eight zero", ALICE, session="s7")
        assert stray.outcome == Outcome.NOT_RECOGNIZED and stray.transcript.text == PLACEHOLDER
        digits = await r.say("one two three four", ALICE, session="s8")
        assert digits.outcome == Outcome.NOT_RECOGNIZED and digits.intent.name is None

        codes = [h.get("code") for h in _handled(r.events)]
        assert codes.count("confirm") == 5 and "protected" in codes
        rows = sqlite3.connect(tmp_path / "voiced.db").execute(
            "SELECT text, intent, outcome FROM utterances ORDER BY id").fetchall()
        assert ("[confirmation]", "HassTurnOff", "handled") in rows
        assert ("unlock the front door", "HassTurnOff", "confirming") in rows
        dump = "\n".join([
            caplog.text,
            json.dumps([[e.type, e.to_json(), e.transcript.text if e.transcript else None]
                        for e in r.events.events], default=str),
            json.dumps(r.wire.messages, default=str),
            json.dumps(rows)]).lower()
        for secret in ("two five eight zero", PIN, "2 5 8 0"):
            assert secret not in dump, secret
        assert "two five eight one" not in dump  # nor a wrong answer
