"""Protection rules end to end: real mosquitto, real pocketsphinx (its grammar holds the
PIN's digits), real resemblyzer on flite/festival voices, audio streamed as a satellite
streams it. A stranger's "unlock the front door" never reaches the lock; Alice by a
window neither; Alice in the hall is asked for the PIN, and only the right one, in her
voice, opens the door. The PIN she says appears nowhere: not on the wire (partial
transcripts included), not in the history or its kept audio, not in the log."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from support import Mosquitto, make_config, running_daemon

from voiced.audio.wav import read_wav_file
from voiced.satellite import Satellite
from voiced.speakers import voices

pytestmark = pytest.mark.slow

INTENTS = """
language: en
intents:
  HassTurnOff:
    data:
      - sentences: ["unlock [the] {name}"]
lists:
  name:
    values:
      - {in: front door, out: lock.front_door}
"""
PIN_WORDS = "two five eight zero"
WRONG_WORDS = "seven three nine six"


class Wire:
    """Every message on the broker, kept in order; waits are bounded and event-driven."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    async def read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.messages.append((message.topic.value, bytes(message.payload)))  # type: ignore[arg-type]
            self._changed.set()

    async def wait(self, found: Callable[[str, Any], bool], after: int = 0,
                   timeout: float = 60) -> tuple[int, Any]:
        """The first message from index `after` on for which `found(topic, json)` holds."""
        async with asyncio.timeout(timeout):
            while True:
                for i in range(after, len(self.messages)):
                    topic, payload = self.messages[i]
                    try:
                        data = json.loads(payload)
                    except ValueError:
                        continue
                    if found(topic, data):
                        return i, data
                self._changed.clear()
                await self._changed.wait()

    @staticmethod
    def outcome(site: str, *outcomes: str) -> Callable[[str, Any], bool]:
        """The OUTCOME event (the history row) of an utterance on `site`."""
        return lambda t, d: t == f"voiced/events/{site}" and d.get("type") == "outcome" \
            and (not outcomes or d.get("outcome") in outcomes)


def _voice(voice: str, text: str, cache: Path) -> bytes:
    path = cache / f"{voice}-{text.replace(' ', '_')}.wav"
    if not path.exists():
        voices.synthesize(voices.ALL_VOICES[voice], text, path)
    return read_wav_file(path)


async def _turn(wire: Wire, site: str, pcm: bytes, until: Callable[[str, Any], bool],
                port: int) -> tuple[int, Any]:
    """Stream one utterance from `site`; the message that ends the turn."""
    start = len(wire.messages)
    async with Satellite("127.0.0.1", port, site) as sat:
        await sat.stream(pcm, realtime=False)
        return await wire.wait(until, start)


async def test_rules_and_a_spoken_pin_end_to_end(mosquitto: Mosquitto, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("VOICED_TEST_DOOR_PIN", "2580")
    (tmp_path / "intents").mkdir()
    (tmp_path / "intents" / "door.yaml").write_text(INTENTS)
    config = make_config(
        tmp_path, mosquitto.port, intents={"paths": [str(tmp_path / "intents")]},
        asr={"processes": 1}, speakers={"backend": "resemblyzer"},
        history={"keep_audio": True, "audio_format": "wav"},
        handlers=[{"intent": "HassTurnOff", "plugin": "mqtt_publish",
                   "options": {"topic": "door/{name}", "payload": {"by": "{speaker}"}}}],
        protect=[{"name": "doors", "match": ["lock.*"], "people": ["alice"],
                  "sites": ["hall"], "min_confidence": 0.75,
                  "confirm": {"secret_env": "VOICED_TEST_DOOR_PIN",
                              "prompt": "Say the PIN.", "timeout_s": 20}}])
    cache = tmp_path / "voices"
    enroll, _ = voices.enrollment_and_test("flite-slt", cache, 3, 0)
    alice_unlock = _voice("flite-slt", "Unlock the front door.", cache)
    alice_pin = _voice("flite-slt", PIN_WORDS, cache)
    alice_wrong = _voice("flite-slt", WRONG_WORDS, cache)
    stranger_unlock = _voice("festival-ked", "Unlock the front door.", cache)
    stranger_pin = _voice("festival-ked", PIN_WORDS, cache)
    wire = Wire()
    port = mosquitto.port
    async with running_daemon(config) as daemon, \
            aiomqtt.Client("127.0.0.1", port) as peer:
        result = await daemon.speakers.enroll("alice", [read_wav_file(p) for p in enroll])
        assert result.ok, result
        await peer.subscribe("#")
        reader = asyncio.create_task(wire.read(peer))
        try:
            # a stranger: refused, nothing published, the intent never announced
            _, row = await _turn(wire, "hall", stranger_unlock, wire.outcome("hall"), port)
            assert row["outcome"] == "refused", row
            assert "the voice was not identified" in row["detail"]
            # Alice by the porch window: refused
            _, row = await _turn(wire, "porch", alice_unlock, wire.outcome("porch"), port)
            assert row["outcome"] == "refused" and "site 'porch'" in row["detail"], row
            # Alice in the hall: asked; the wrong PIN, then the right PIN in another voice
            for answer, why in ((alice_wrong, "wrong confirmation"),
                                (stranger_pin, "on the confirming voice")):
                start = len(wire.messages)
                await _turn(wire, "hall", alice_unlock, wire.outcome("hall", "confirming"),
                            port)
                _, prompt = await wire.wait(lambda t, d: t == "hermes/tts/say", start)
                assert prompt["text"] == "Say the PIN."
                _, row = await _turn(wire, "hall", answer,
                                     wire.outcome("hall", "refused", "handled"), port)
                assert row["outcome"] == "refused" and why in row["detail"], row
            # the right PIN in Alice's voice: the door opens, and that is the first (and
            # only) message on door/#: nothing before it ever went out
            await _turn(wire, "hall", alice_unlock, wire.outcome("hall", "confirming"), port)
            _, opened = await _turn(wire, "hall", alice_pin,
                                    lambda t, d: t.startswith("door/"), port)
            assert opened == {"by": "alice"}
            doors = [t for t, _ in wire.messages if t.startswith("door/")]
            assert doors == ["door/lock.front_door"]
            await wire.wait(wire.outcome("hall", "handled"), 0)
        finally:
            reader.cancel()
    rows = sqlite3.connect(config.state_dir / "voiced.db").execute(
        "SELECT text, outcome, audio_path FROM utterances ORDER BY id").fetchall()
    confirmations = [r for r in rows if r[0] == "[confirmation]"]
    assert [r[1] for r in confirmations] == ["refused", "refused", "handled"], rows
    assert all(r[2] is None for r in confirmations)  # the spoken PIN is not kept as audio
    assert sum(r[1] == "confirming" for r in rows) == 3
    wire_text = "\n".join(p.decode("utf-8", "replace") for t, p in wire.messages
                          if not t.startswith("hermes/audioServer/"))
    assert '"type": "partial"' in wire_text  # partial transcripts were published...
    everything = "\n".join([wire_text, caplog.text, json.dumps(rows)]).lower()
    for said in (PIN_WORDS, WRONG_WORDS, "2580", "7396"):
        assert said not in everything, said  # ... but never of the confirmation turn


async def test_a_reload_rereads_the_rules(mosquitto: Mosquitto, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGHUP's path re-reads `protect:` with the handlers; a rule whose secret cannot be
    read fails the reload and the rules in force stay."""
    import yaml

    handlers = [{"intent": "LockDoor", "plugin": "mqtt_publish",
                 "options": {"topic": "door/{door}", "payload": "lock"}}]
    kitchen_only = [{"name": "locking", "match": ["intent:LockDoor"], "sites": ["kitchen"]}]
    config_file = tmp_path / "voiced.yaml"
    config_file.write_text(yaml.safe_dump({"handlers": handlers, "protect": kitchen_only}))
    config = make_config(tmp_path, mosquitto.port, asr={"processes": 1}, handlers=handlers,
                         protect=kitchen_only)
    monkeypatch.delenv("VOICED_TEST_MISSING_PIN", raising=False)
    async with running_daemon(config, config_file) as daemon:
        hall = await daemon.pipeline.handle_text("lock the front door", site="hall")
        assert hall.outcome == "refused" and "protect rule 'locking'" in (hall.detail or "")
        broken = [{**kitchen_only[0], "confirm": {"secret_env": "VOICED_TEST_MISSING_PIN"}}]
        config_file.write_text(yaml.safe_dump({"handlers": handlers, "protect": broken}))
        assert not await daemon.reload()
        assert "VOICED_TEST_MISSING_PIN holds no secret" in (daemon.reload_error or "")
        again = await daemon.pipeline.handle_text("lock the front door", site="hall")
        assert again.outcome == "refused"
        config_file.write_text(yaml.safe_dump({"handlers": handlers, "protect": []}))
        assert await daemon.reload()
        allowed = await daemon.pipeline.handle_text("lock the front door", site="hall")
        assert allowed.outcome == "handled", allowed.detail
