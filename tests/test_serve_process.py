"""`voiced serve` as a real process: SIGTERM finishes utterances in flight; a broken
intents file stops start-up with the file and line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from support import FIXTURES, REPO, Mosquitto, free_port

from voiced.audio.wav import read_wav_file
from voiced.satellite import Satellite, last_speech_offset
from voiced.transport import native

pytestmark = pytest.mark.slow


def _serve(port: int, tmp_path: Path, *extra: str,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "voiced.cli", "serve", "--mqtt-host", "127.0.0.1",
         "--mqtt-port", str(port), "--state-dir", str(tmp_path / "state"), "--http-port", "0",
         *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


async def _wait_ready(port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(native.STATUS_TOPIC)
        async with asyncio.timeout(120):
            async for msg in client.messages:
                if json.loads(msg.payload).get("state") == "ready":  # type: ignore[arg-type]
                    return


async def test_sigterm_finishes_the_utterance_in_flight(mosquitto: Mosquitto,
                                                        tmp_path: Path) -> None:
    manifest = yaml.safe_load((FIXTURES / "commands.yaml").read_text())
    entry = manifest["commands"][0]
    proc = _serve(mosquitto.port, tmp_path)
    try:
        await _wait_ready(mosquitto.port)
        async with Satellite("127.0.0.1", mosquitto.port, "porch") as sat, \
                aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
            await peer.subscribe("hermes/intent/#")
            await peer.subscribe("hermes/nlu/intentNotRecognized")
            await peer.subscribe("hermes/asr/textCaptured")
            await peer.subscribe("hermes/dialogueManager/sessionEnded")
            await peer.subscribe("voiced/events/porch")
            # speech cut where the speech ends (the fixture's own quiet would end it): the
            # utterance is still open at SIGTERM
            pcm = read_wav_file(FIXTURES / entry["file"])
            await sat.stream(pcm[:last_speech_offset(pcm)], realtime=False,
                             trailing_silence_ms=0)
            topics: list[str] = []
            ended_reason = None
            async with asyncio.timeout(30):
                async for msg in peer.messages:
                    topics.append(msg.topic.value)
                    data = json.loads(msg.payload)  # type: ignore[arg-type]
                    if data.get("type") == "speech_started":
                        # at once: long before the 1.5 s stall timeout could end it
                        proc.send_signal(signal.SIGTERM)
                    if data.get("type") == "speech_ended":
                        ended_reason = data["reason"]
                    if msg.topic.value.endswith("sessionEnded"):
                        break
            # the utterance was cut by SIGTERM (audio still in transit is not taken), and
            # what had arrived went all the way through: transcript, intents, session end
            assert ended_reason == "shutdown", topics
            assert "hermes/asr/textCaptured" in topics
            assert f"hermes/intent/{entry['intent']}" in topics or \
                "hermes/nlu/intentNotRecognized" in topics
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert proc.stdout is not None
        output = proc.stdout.read().decode()
        assert "stopping" in output and "voiced stopped" in output, output
        assert "Traceback" not in output and "ERROR" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_broken_intents_file_stops_startup(tmp_path: Path) -> None:
    bad = tmp_path / "intents"
    bad.mkdir()
    (bad / "broken.yaml").write_text("language: en\nintents:\n  Foo:\n    data: [\n")
    proc = subprocess.run(
        [sys.executable, "-m", "voiced.cli", "serve", "--intents", str(bad), "--state-dir",
         str(tmp_path / "state"), "--mqtt-port", "1", "--http-port", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"{bad / 'broken.yaml'}:" in proc.stderr


def test_make_run_reaches_the_demo(tmp_path: Path) -> None:
    """What `make run` starts: the example config, the embedded broker, the demo. Every
    sample command is understood, then voiced keeps serving until SIGTERM."""
    samples = yaml.safe_load((REPO / "config" / "samples" / "samples.yaml").read_text())
    port = free_port()
    os.umask(0o022)  # what a shell usually has
    proc = subprocess.Popen(
        [sys.executable, "-m", "voiced.cli", "serve", "--config", "config/voiced.yaml",
         "--embedded-broker", "--mqtt-port", str(port), "--state-dir", str(tmp_path / "state"),
         "--http-port", "0", "--demo"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    answers: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        for line in proc.stdout:
            if line.startswith("demo: ") and ".wav: " in line:
                name, _, answer = line[len("demo: "):].partition(": ")
                answers[name] = answer
            if line.startswith("demo: done") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert set(answers) == {s["file"] for s in samples["samples"]}, answers
    for sample in samples["samples"]:
        assert f"→ {sample['intent']}(" in answers[sample["file"]], answers
    # started with a permissive umask (022), its state is still its user's only
    state = tmp_path / "state"
    assert state.stat().st_mode & 0o777 == 0o700
    files = [f for f in state.rglob("*") if f.is_file()]
    assert any(f.name == "voiced.db" for f in files)
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {
        f.name: oct(0o600) for f in files}


async def test_sigterm_during_start_up_stops_at_once(mosquitto: Mosquitto,
                                                      tmp_path: Path) -> None:
    """SIGTERM while start-up waits (here for a Home Assistant that takes the request and
    never answers, within a 60 s timeout) stops voiced at once, cleanly: it used to finish
    starting first (or never, with a load that does not return)."""
    asked = asyncio.Event()

    async def states(request: web.Request) -> web.Response:
        asked.set()
        await asyncio.Event().wait()  # never answers; closed with the server
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/api/states", states)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    config = tmp_path / "voiced.yaml"
    config.write_text(yaml.safe_dump({"intents": {"home_assistant": {
        "url": str(server.make_url("")).rstrip("/"), "token_env": "HA_TOKEN",
        "timeout_s": 60}}}))
    proc = _serve(mosquitto.port, tmp_path, "--config", str(config),
                  env={"HA_TOKEN": "x"})
    try:
        async with asyncio.timeout(120):
            await asked.wait()
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 30)
        assert time.monotonic() - signalled < 20  # not the 60 s of the import
        assert proc.stdout is not None
        output = proc.stdout.read().decode()
        assert code == 0, output
        assert "stopping during start-up (loading intents)" in output, output
        assert "voiced stopped" in output and " ready " not in output, output
        assert "Traceback" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await server.close()
