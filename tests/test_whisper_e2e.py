"""The daemon with the Whisper backend selected, over a real mosquitto, with checkpoints of
the real architecture loaded by the real loader: random weights (two satellites that finish
speaking together are decoded in one batch), and a scripted model whose German output
must reach the German intent files and come back with `lang: de`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest
import yaml
from scripted_whisper import write_scripted_checkpoint
from support import FIXTURES, Mosquitto, make_config, running_daemon

from voiced.asr.whisper_models import write_random_checkpoint
from voiced.audio.wav import read_wav_file
from voiced.satellite import Satellite

pytestmark = pytest.mark.slow


async def test_whisper_backend_end_to_end_batches_sites(mosquitto: Mosquitto,
                                                       tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny-random.pt"
    write_random_checkpoint("tiny", checkpoint)
    config = make_config(tmp_path, mosquitto.port,
                         asr={"backend": "whisper", "model": str(checkpoint), "device": "cpu",
                              "compute": "fp32", "max_tokens": 4, "batch_window_ms": 300,
                              "min_confidence": 0.0, "language": "en"})
    entry = yaml.safe_load((FIXTURES / "commands.yaml").read_text())["commands"][0]
    pcm = read_wav_file(FIXTURES / entry["file"])
    async with running_daemon(config) as daemon:
        assert daemon.transcriber is not None and daemon.transcriber.supports_batching

        async def speak(site: str) -> object:
            async with Satellite("127.0.0.1", mosquitto.port, site) as sat:
                return await sat.command(pcm, timeout=120)

        answers = await asyncio.gather(speak("attic"), speak("cellar"))
        for answer in answers:
            # random weights transcribe gibberish: it must still flow through the pipeline
            assert answer.text is not None  # type: ignore[attr-defined]
            assert answer.termination in ("intentNotRecognized", "nominal")  # type: ignore[attr-defined]
        assert daemon.pipeline is not None
        batches = daemon.pipeline.asr.batcher.history  # type: ignore[union-attr]
        assert sum(b.size for b in batches) == 2
        assert max(b.size for b in batches) == 2, batches


async def test_detected_language_picks_that_languages_intents(mosquitto: Mosquitto,
                                                              tmp_path: Path) -> None:
    intents = tmp_path / "intents"
    (intents / "de").mkdir(parents=True)
    (intents / "lights.yaml").write_text(
        "language: en\nintents:\n  LightOn:\n    data:\n"
        "      - sentences: ['turn on the light in the {area}']\n"
        "lists:\n  area:\n    values: [kitchen]\n")
    (intents / "de" / "licht.yaml").write_text(
        "language: de\nintents:\n  LightOn:\n    data:\n"
        "      - sentences: ['schalte das licht in der {area} ein']\n"
        "lists:\n  area:\n    values: [{in: küche, out: kitchen}]\n")
    model = write_scripted_checkpoint(tmp_path / "says-german.pt",
                                      "Schalte das Licht in der Küche ein", "de")
    handlers = [{"intent": "LightOn", "plugin": "say", "options": {"text": "{lang}: {area}"}}]
    config = make_config(tmp_path, mosquitto.port, intents={"paths": [str(intents)]},
                         handlers=handlers,
                         asr={"backend": "whisper", "model": str(model), "device": "cpu",
                              "language": "auto", "prompt_tokens": 0})
    entry = yaml.safe_load((FIXTURES / "commands.yaml").read_text())["commands"][0]
    pcm = read_wav_file(FIXTURES / entry["file"])
    events: list[dict[str, object]] = []
    async with running_daemon(config), aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
        await peer.subscribe("hermes/intent/LightOn")
        await peer.subscribe("voiced/events/kitchen")
        async with Satellite("127.0.0.1", mosquitto.port, "kitchen") as sat:
            # at the pace of speech, so partial transcripts can come before the endpoint
            answer = await sat.command(pcm, realtime=True, timeout=60)
        async with asyncio.timeout(10):
            async for message in peer.messages:
                data = json.loads(message.payload)  # type: ignore[arg-type]
                if message.topic.value == "hermes/intent/LightOn":
                    parsed = data
                else:
                    events.append(data)
                if events and events[-1]["type"] == "session_ended":
                    break
    assert answer.intent == "LightOn", answer
    assert answer.slots == {"area": "kitchen"}
    assert answer.said == ["de: kitchen"]
    assert parsed["lang"] == "de" and parsed["input"] == "Schalte das Licht in der Küche ein"
    # partial transcripts while the person speaks, before the endpoint
    types = [e["type"] for e in events]
    assert "partial" in types and types.index("partial") < types.index("speech_ended"), types
    partial = events[types.index("partial")]
    assert partial["text"] == "Schalte das Licht in der Küche ein"


async def test_not_speech_is_dropped_before_the_intents(mosquitto: Mosquitto,
                                                         tmp_path: Path) -> None:
    """A cough heard as "turn on the kitchen light" with a high no-speech probability."""
    from voiced.storage import History

    model = write_scripted_checkpoint(tmp_path / "cough.pt", "turn on the kitchen light",
                                      "en", no_speech=True)
    config = make_config(tmp_path, mosquitto.port,
                         asr={"backend": "whisper", "model": str(model), "device": "cpu",
                              "language": "en", "prompt_tokens": 0})
    entry = yaml.safe_load((FIXTURES / "commands.yaml").read_text())["commands"][0]
    pcm = read_wav_file(FIXTURES / entry["file"])
    async with running_daemon(config), aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
        await peer.subscribe("hermes/asr/textCaptured")
        await peer.subscribe("voiced/events/hall")
        async with Satellite("127.0.0.1", mosquitto.port, "hall") as sat:
            answer = await sat.command(pcm, timeout=60)
        got: dict[str, dict[str, object]] = {}
        async with asyncio.timeout(10):
            async for message in peer.messages:
                data = json.loads(message.payload)  # type: ignore[arg-type]
                got[data.get("type") or message.topic.value] = data
                if "not_recognized" in got and "hermes/asr/textCaptured" in got:
                    break
    assert answer.intent is None and answer.termination == "intentNotRecognized", answer
    assert answer.text == ""
    assert got["hermes/asr/textCaptured"]["text"] == ""
    assert got["transcript"]["isSpeech"] is False
    assert got["not_recognized"]["reason"] == "not_speech"
    assert got["not_recognized"]["text"] == "turn on the kitchen light"
    history = History(config.state_dir / "voiced.db")
    try:
        async with asyncio.timeout(10):  # recorded just after the session ended
            while not (records := history.recent(1)):
                await asyncio.sleep(0.05)
    finally:
        history.close()
    (record,) = records
    assert (record.outcome, record.outcome_detail) == ("not_speech", "not_speech")
    assert record.text == "turn on the kitchen light"
