"""Speaker identification end to end over MQTT: real mosquitto, real pocketsphinx, real
resemblyzer on flite voices recorded from real speakers. The enrolled voice unlocks the
door and gets its own playlist; another voice is refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from support import Mosquitto, make_config, running_daemon

from voiced.audio.wav import read_wav_file
from voiced.config import SpeakersConfig
from voiced.inference import InferenceEngine
from voiced.satellite import Satellite
from voiced.speakers import voices
from voiced.speakers.service import create_speaker_service

pytestmark = pytest.mark.slow


def _flite(voice: str, text: str, out: Path) -> bytes:
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True,
                   timeout=60)
    return read_wav_file(out)


async def _enroll(state_dir: Path, name: str, voice: str, cache: Path) -> None:
    engine = InferenceEngine(1)
    service = create_speaker_service(SpeakersConfig(backend="resemblyzer"), state_dir, engine)
    assert service is not None
    await engine.run(service.load)
    wavs, _ = voices.enrollment_and_test(voices.ALL_VOICES[voice], cache, 5, 0)
    try:
        result = await service.enroll(name, [read_wav_file(w) for w in wavs])
        assert result.ok, result
    finally:
        await service.close()
        engine.close()


async def test_enrolled_voice_unlocks_and_others_are_refused(mosquitto: Mosquitto,
                                                             tmp_path: Path) -> None:
    state = tmp_path / "state"
    await _enroll(state, "alice", "flite-awb", tmp_path / "voices")
    handlers = [
        {"intent": "UnlockDoor", "plugin": "mqtt_publish",
         "options": {"topic": "home/door/{door}/set",
                     "payload": {"lock": False, "by": "{speaker}"}}},
        {"intent": "PlayMusic", "plugin": "mqtt_publish",
         "options": {"topic": "music/{site}/play", "payload": {"playlist": "{speaker.playlist}"}}},
    ]
    config = make_config(tmp_path, mosquitto.port, handlers=handlers,
                         speakers={"backend": "resemblyzer",
                                   "alice": {"playlist": "Alice's mix"}})
    unlock_awb = _flite("awb", "unlock the front door", tmp_path / "u_awb.wav")
    unlock_slt = _flite("slt", "unlock the front door", tmp_path / "u_slt.wav")
    music_awb = _flite("awb", "play my music", tmp_path / "m_awb.wav")
    async with running_daemon(config), aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
        await peer.subscribe("home/#")
        await peer.subscribe("music/#")
        async with Satellite("127.0.0.1", mosquitto.port, "porch") as sat:
            allowed = await sat.command(unlock_awb, timeout=60)
            refused = await sat.command(unlock_slt, timeout=60)
            music = await sat.command(music_awb, timeout=60)
        acted: dict[str, Any] = {}
        async with asyncio.timeout(10):
            async for msg in peer.messages:
                acted[msg.topic.value] = json.loads(msg.payload)  # type: ignore[arg-type]
                if len(acted) == 2:
                    break
    assert allowed.intent == "UnlockDoor", allowed
    assert allowed.speaker is not None and allowed.speaker["name"] == "alice"
    assert refused.intent is None and refused.termination == "abortedByUser", refused
    assert refused.said and "can't" in refused.said[0]
    assert music.intent == "PlayMusic" and music.speaker and music.speaker["name"] == "alice"
    assert acted == {"home/door/front/set": {"lock": False, "by": "alice"},
                     "music/porch/play": {"playlist": "Alice's mix"}}
    # the refusal is in the history
    import sqlite3

    db = sqlite3.connect(state / "voiced.db")
    outcomes = [r[0] for r in db.execute("SELECT outcome FROM utterances ORDER BY id")]
    assert outcomes == ["handled", "refused", "handled"]


async def test_learn_my_voice_from_a_satellite(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """"learn my voice as alice", three sentences, then alice's voice is known."""
    config = make_config(tmp_path, mosquitto.port,
                         speakers={"backend": "resemblyzer", "voice_enrollment": True,
                                   "alice": {"playlist": "Alice's mix"}})
    ask = _flite("awb", "learn my voice as alice", tmp_path / "learn.wav")
    samples = [read_wav_file(w) for w in voices.enrollment_and_test(
        voices.ALL_VOICES["flite-awb"], tmp_path / "voices", 3, 0)[0]]
    unlock = _flite("awb", "unlock the front door", tmp_path / "unlock.wav")
    async with running_daemon(config), aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
        await peer.subscribe("hermes/tts/say")
        await peer.subscribe("hermes/dialogueManager/sessionEnded")
        said: list[str] = []

        async def next_say() -> str:
            async with asyncio.timeout(60):
                async for msg in peer.messages:
                    if msg.topic.value == "hermes/tts/say":
                        text = str(json.loads(msg.payload)["text"])  # type: ignore[arg-type]
                        said.append(text)
                        return text
            raise AssertionError("no answer")

        async with Satellite("127.0.0.1", mosquitto.port, "study") as sat:
            await sat.stream(ask, realtime=False)
            assert "Please say" in await next_say(), said
            for pcm in samples:
                await sat.stream(pcm, realtime=False)
                reply = await next_say()
            assert reply.startswith("Got it"), said
            async with asyncio.timeout(30):  # the enrollment session ends
                async for msg in peer.messages:
                    if msg.topic.value.endswith("sessionEnded"):
                        break
            await asyncio.sleep(0.2)
            answer = await sat.command(unlock, timeout=60)
    assert answer.intent == "UnlockDoor", answer
    assert answer.speaker is not None and answer.speaker["name"] == "alice"
