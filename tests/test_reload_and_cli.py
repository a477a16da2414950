"""Reloading intents while serving, and the `voiced intents` commands."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support import REPO, Mosquitto, make_config, running_daemon

from voiced.audio.wav import read_wav_file
from voiced.cli import main


async def test_intent_file_change_reloads_and_broken_file_keeps_old_set(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    intents = tmp_path / "intents"
    shutil.copytree(REPO / "config" / "intents", intents)
    config = make_config(tmp_path, mosquitto.port, intents={"paths": [str(intents)]})
    async with running_daemon(config) as daemon:
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
        (intents / "pod.yaml").write_text("language: en\nintents:\n  Broken: [\n")
        await asyncio.sleep(3)
        assert daemon.reloads == 1
        assert daemon.recognizer.recognize("open the pod bay doors").name == "OpenPodBay"
        # SIGHUP's path: an explicit reload after fixing the file
        (intents / "pod.yaml").unlink()
        assert await daemon.reload()
        assert daemon.recognizer.recognize("open the pod bay doors").name is None
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
