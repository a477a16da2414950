"""Reloading intents while serving, and the `voiced intents` commands."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import aiomqtt
import pytest
import yaml
from support import REPO, Mosquitto, make_config, running_daemon

from voiced.audio.wav import read_wav_file
from voiced.cli import main


async def test_intent_file_change_reloads_and_broken_file_keeps_old_set(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    intents = tmp_path / "intents"
    shutil.copytree(REPO / "config" / "intents", intents)
    config = make_config(tmp_path, mosquitto.port, intents={"paths": [str(intents)]})
    config_file = tmp_path / "voiced.yaml"
    config_file.write_text(yaml.safe_dump({"handlers": []}))
    async with running_daemon(config, config_file) as daemon, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
        await peer.subscribe("hermes/error/nlu")
        await peer.subscribe("pod/#")
        assert daemon.recognizer is not None
        assert daemon.recognizer.recognize("open the pod bay doors").name is None
        link_connections = daemon.link.connections  # type: ignore[union-attr]
        (intents / "pod.yaml").write_text(
            "language: en\nintents:\n  OpenPodBay:\n    data:\n"
            "      - sentences: ['open the pod bay doors']\n")
        async with asyncio.timeout(15):
            while daemon.reloads < 1:
                await asyncio.sleep(0.1)
        assert daemon.recognizer.recognize("open the pod bay doors").name == "OpenPodBay"
        # the grammar was rebuilt too: pocketsphinx now hears the new sentence
        wav = tmp_path / "pod.wav"
        await asyncio.to_thread(
            subprocess.run, ["espeak-ng", "-v", "en-us", "-w", str(wav), "open the pod bay doors"],
            check=True, timeout=60)
        assert daemon.transcriber is not None
        heard = await daemon.engine.run(daemon.transcriber.transcribe, read_wav_file(wav))
        assert heard.text == "open the pod bay doors"
        # a broken file: the error is published, the previous set stays
        (intents / "pod.yaml").write_text("language: en\nintents:\n  Broken: [\n")
        async with asyncio.timeout(15):
            message = await anext(aiter(peer.messages))
        assert message.topic.value == "hermes/error/nlu"
        assert "pod.yaml" in json.loads(message.payload)["error"]  # type: ignore[arg-type]
        assert daemon.reloads == 1
        assert daemon.recognizer.recognize("open the pod bay doors").name == "OpenPodBay"
        # SIGHUP's path (`voiced serve` calls reload()): the file fixed, and voiced.yaml's
        # handlers re-read: the new handler acts on the new intent
        (intents / "pod.yaml").write_text(
            "language: en\nintents:\n  OpenPodBay:\n    data:\n"
            "      - sentences: ['open the pod bay doors please']\n")
        config_file.write_text(yaml.safe_dump({"handlers": [
            {"intent": "OpenPodBay", "plugin": "mqtt_publish",
             "options": {"topic": "pod/doors", "payload": "open"}}]}))
        assert await daemon.reload()
        assert daemon.recognizer.recognize("open the pod bay doors please").matched_by == \
            "template"
        result = await daemon.pipeline.handle_text("open the pod bay doors please")
        assert result.intent.name == "OpenPodBay" and result.outcome == "handled"
        async with asyncio.timeout(10):
            message = await anext(aiter(peer.messages))
        assert (message.topic.value, message.payload) == ("pod/doors", b"open")
        assert daemon.link.connections == link_connections  # type: ignore[union-attr]


def test_intents_recognize_and_sample(capsys: pytest.CaptureFixture[str]) -> None:
    paths = ["--intents", str(REPO / "config" / "intents")]
    assert main(["intents", "recognize", "set the office lights to forty percent", *paths]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"intent": "HassLightSet",
                   "slots": {"area": "office", "brightness": 40, "domain": "light"},
                   "confidence": 1.0, "matched_by": "template"}
    assert main(["intents", "recognize", "unlock the back door", "--speaker", "bob",
                 *paths]) == 0
    assert json.loads(capsys.readouterr().out)["intent"] == "UnlockDoor"
    assert main(["intents", "recognize", "turn on the kitchn lights", *paths]) == 0
    fuzzy = json.loads(capsys.readouterr().out)
    assert fuzzy["matched_by"] == "fuzzy" and fuzzy["intent"] == "HassTurnOn"
    assert main(["intents", "sample", "-n", "5", *paths]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(line.strip() for line in lines)
