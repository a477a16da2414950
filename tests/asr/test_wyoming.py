"""Wyoming both ways, on loopback with the `wyoming` package's own client and server:

- the `wyoming` client library against `voiced wyoming-server` (pocketsphinx and the
  example intents): describe, transcribe a spoken command sent in its own WAV format,
  recognize text, and hostile events answered with `error` while the connection goes on;
- the daemon with `asr.backend: wyoming` against voiced's Wyoming server: a satellite's
  command understood end to end through the remote recognizer;
- the daemon against a streaming Wyoming server written in the test with the library
  (transcript chunks become partial transcripts), which then goes away (the embedded
  recognizer takes over, counted in /api/status) and comes back (voiced returns to it).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import wave
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
import yaml
from support import FIXTURES, Mosquitto, make_config, running_daemon, voiced_wyoming
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info
from wyoming.intent import Intent, NotRecognized, Recognize
from wyoming.server import AsyncEventHandler, AsyncTcpServer

from voiced.audio.wav import read_wav_file
from voiced.config import AsrConfig, Config
from voiced.intents.catalog import load_catalog
from voiced.satellite import Satellite

COMMANDS = yaml.safe_load((FIXTURES / "commands.yaml").read_text())["commands"]
KITCHEN = COMMANDS[0]  # "turn on the kitchen lights", HassTurnOn


async def read_until(client: AsyncTcpClient, *types: str) -> Event:
    async with asyncio.timeout(30):
        while True:
            event = await client.read_event()
            assert event is not None, "the server closed the connection"
            if event.type in types:
                return event


async def test_wyoming_client_library_against_voiced(tmp_path: Path) -> None:
    wav = (FIXTURES / KITCHEN["file"]).read_bytes()
    with wave.open(io.BytesIO(wav)) as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        frames = w.readframes(w.getnframes())
    async with voiced_wyoming(tmp_path) as server, \
            AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Describe().event())
        info = Info.from_event(await read_until(client, "info"))
        assert info.asr[0].name == "voiced" and "en" in info.asr[0].models[0].languages
        assert info.intent and info.intent[0].models[0].languages == ["en"]

        # the command in its own format, in uneven chunks, as a Wyoming satellite sends it
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        step = 3 * 331 * width * channels
        for start in range(0, len(frames), step):
            await client.write_event(AudioChunk(rate=rate, width=width, channels=channels,
                                                audio=frames[start:start + step]).event())
        await client.write_event(AudioStop().event())
        transcript = Transcript.from_event(await read_until(client, "transcript"))
        assert transcript.language == "en" and "kitchen lights" in transcript.text

        # what Home Assistant does next: the transcript to the intent recognizer
        await client.write_event(Recognize(text=transcript.text).event())
        intent = Intent.from_event(await read_until(client, "intent", "not-recognized"))
        assert intent.name == "HassTurnOn"
        assert {e.name: e.value for e in intent.entities} == KITCHEN["slots"]
        await client.write_event(Recognize(text="what is the meaning of life").event())
        assert (await read_until(client, "intent", "not-recognized")).type == "not-recognized"
        assert NotRecognized.is_type("not-recognized")

        # hostile events: an error each, and the connection keeps working
        await client.write_event(AudioChunk(rate=0, width=2, channels=1,
                                            audio=b"\0\0").event())
        assert Error.from_event(await read_until(client, "error")).code == "audio_format"
        await client.write_event(AudioChunk(rate=16000, width=2, channels=1,
                                            audio=b"\0\0\0").event())
        assert Error.from_event(await read_until(client, "error")).code == \
            "audio_partial_frame"
        await client.write_event(Event(type="recognize", data={"text": ["a list"]}))
        assert Error.from_event(await read_until(client, "error")).code == "text_invalid"
        await client.write_event(Event(type="audio-chunk", data={"rate": 16000}))
        assert Error.from_event(await read_until(client, "error")).code == "event_invalid"
        await client.write_event(Describe().event())
        await read_until(client, "info")


def wyoming_config(tmp_path: Path, port: int, uri: str, **asr: Any) -> Config:
    return make_config(tmp_path, port, asr={
        "backend": "wyoming", "processes": 1,
        "wyoming": {"uri": uri, "connect_timeout_s": 1, "timeout_s": 10}, **asr})


async def test_daemon_transcribes_through_voiceds_wyoming_server(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    pcm = read_wav_file(FIXTURES / KITCHEN["file"])
    async with voiced_wyoming(tmp_path / "server") as server:
        config = wyoming_config(tmp_path, mosquitto.port, f"tcp://127.0.0.1:{server.port}",
                                fallback="none")
        async with running_daemon(config) as daemon, \
                Satellite("127.0.0.1", mosquitto.port, "kitchen") as sat:
            answer = await sat.command(pcm, timeout=60)
            status = daemon.stats()["asr_remote"]
    assert answer.intent == "HassTurnOn" and answer.slots == KITCHEN["slots"], answer
    assert status["backend"] == "wyoming" and status["state"] == "up"
    assert (status["remote"], status["fallbacks"], status["failures"]) == (1, 0, 0)
    assert server.service.transcribed == 1


class Streamer(AsyncEventHandler):
    """A Wyoming ASR server that streams its transcript (as a remote engine would)."""

    said = "turn off the kitchen lights"

    def __init__(self, heard: list[int], *args: Any) -> None:
        super().__init__(*args)
        self.heard = heard
        self.chunks = 0

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            who = Attribution(name="test", url="https://example.invalid")
            model = AsrModel(name="streamer", attribution=who, installed=True,
                             description=None, version=None, languages=["en"])
            await self.write_event(Info(asr=[AsrProgram(
                name="streamer", attribution=who, installed=True, description=None,
                version=None, models=[model], supports_transcript_streaming=True)]).event())
        elif AudioChunk.is_type(event.type):
            self.chunks += 1
            if self.chunks == 5:  # half a second in: the first words
                await self.write_event(TranscriptStart(language="en").event())
                await self.write_event(TranscriptChunk(text="turn off").event())
        elif AudioStop.is_type(event.type):
            self.heard.append(self.chunks)
            await self.write_event(TranscriptChunk(text=" the kitchen lights").event())
            await self.write_event(Transcript(text=self.said, language="en").event())
            await self.write_event(TranscriptStop().event())
        return True


async def test_streaming_server_then_fallback_then_recovery(mosquitto: Mosquitto,
                                                            tmp_path: Path) -> None:
    from support import free_port

    port = free_port()
    heard: list[int] = []

    async def start_streamer() -> AsyncTcpServer:
        server = AsyncTcpServer("127.0.0.1", port)
        await server.start(lambda r, w: Streamer(heard, r, w))
        return server

    streamer = await start_streamer()
    config = wyoming_config(tmp_path, mosquitto.port, f"tcp://127.0.0.1:{port}",
                            remote_retry_s=0.5)
    pcm = read_wav_file(FIXTURES / KITCHEN["file"])
    async with running_daemon(config) as daemon, \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as peer, \
            Satellite("127.0.0.1", mosquitto.port, "kitchen") as sat:
        await peer.subscribe("voiced/events/kitchen")
        url = daemon.http.url + "api/status"

        async def remote_status() -> dict[str, Any]:
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                return (await response.json())["asr_remote"]  # type: ignore[no-any-return]

        # 1. the streaming server: partial transcript while the audio flows, then its text
        answer = await sat.command(pcm, realtime=True, timeout=60)
        assert answer.intent == "HassTurnOff" and answer.text == Streamer.said, answer
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            async for message in peer.messages:
                events.append(json.loads(message.payload))  # type: ignore[arg-type]
                if events[-1]["type"] == "session_ended":
                    break
        types = [e["type"] for e in events]
        assert "partial" in types and types.index("partial") < types.index("speech_ended")
        assert events[types.index("partial")]["text"] == "turn off"
        assert heard and heard[0] > 5

        # 2. the server goes away: the embedded recognizer hears the real words
        await streamer.stop()
        answer = await sat.command(pcm, timeout=60)
        assert answer.intent == "HassTurnOn" and answer.slots == KITCHEN["slots"], answer
        assert answer.text != Streamer.said
        status = await remote_status()
        assert status["state"] == "down" and status["fallbacks"] == 1
        assert status["failures"] == 1 and "Connection" in status["last_error"]

        # 3. it comes back: after asr.remote_retry_s voiced uses it again
        streamer = await start_streamer()
        await asyncio.sleep(0.6)  # remote_retry_s 0.5: the next try is due
        answer = await sat.command(pcm, timeout=60)
        await streamer.stop()
    assert answer.text == Streamer.said, answer
    assert daemon.stats()["asr_remote"]["state"] == "up"
    final = daemon.stats()["asr_remote"]
    assert (final["remote"], final["fallbacks"], final["recoveries"]) == (2, 1, 1)


@pytest.mark.parametrize("uri", ["http://127.0.0.1:10300", "tcp://127.0.0.1", "tcp://:80"])
def test_wyoming_uri_is_checked(uri: str) -> None:
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        AsrConfig(backend="wyoming", wyoming={"uri": uri})  # type: ignore[arg-type]


class Dropper(AsyncEventHandler):
    """A Wyoming server that fails mid-utterance: it hangs up after three audio chunks,
    or (`silent`) takes the whole utterance and never answers."""

    silent = False

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            who = Attribution(name="test", url="https://example.invalid")
            model = AsrModel(name="m", attribution=who, installed=True, description=None,
                             version=None, languages=["en"])
            await self.write_event(Info(asr=[AsrProgram(
                name="dropper", attribution=who, installed=True, description=None,
                version=None, models=[model])]).event())
            return True
        if AudioChunk.is_type(event.type):
            self.chunks = getattr(self, "chunks", 0) + 1
            return self.silent or self.chunks < 3
        return True


@pytest.mark.parametrize("silent", [False, True], ids=["hangs-up", "never-answers"])
def test_a_failure_mid_utterance_falls_back_with_all_the_audio(silent: bool,
                                                                tmp_path: Path) -> None:
    from support import free_port

    from voiced.asr.remote import RemoteTranscriber
    from voiced.asr.service import asr_intents, create_transcriber
    from voiced.asr.wyoming import WyomingClient

    port = free_port()
    config = make_config(tmp_path, 1883, asr={
        "processes": 1, "wyoming": {"uri": f"tcp://127.0.0.1:{port}", "timeout_s": 0.5}})
    recognizer = load_catalog(config)
    fallback = create_transcriber(config.asr, asr_intents(recognizer), config.state_dir)
    remote = RemoteTranscriber(WyomingClient(config.asr.wyoming, "en"), fallback, 60.0)
    pcm = read_wav_file(FIXTURES / KITCHEN["file"])
    loop = asyncio.new_event_loop()
    handler = type("H", (Dropper,), {"silent": silent})
    server = AsyncTcpServer("127.0.0.1", port)
    loop.run_until_complete(server.start(lambda r, w: handler(r, w)))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        remote.load()
        assert remote.up
        stream = remote.start_stream()
        for start in range(0, len(pcm), 3200):  # 100 ms at a time, as a satellite's feed
            stream.feed(pcm[start:start + 3200])
        transcript = stream.finish()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(server.stop())
        loop.close()
        remote.close()
    # the whole command reached the fallback (pocketsphinx adapts between decodes, so the
    # words may differ slightly from another decode of the same audio; the meaning not)
    result = recognizer.recognize(transcript.text)
    assert result.name == "HassTurnOn" and result.slot_values() == KITCHEN["slots"], transcript
    status = remote.status()
    assert (status["state"], status["failures"], status["fallbacks"]) == ("down", 1, 1)
    expected = "TimeoutError" if silent else ("BrokenPipe", "ConnectionReset",
                                              "ConnectionError")
    assert status["last_error"].startswith(expected), status["last_error"]


async def test_wyoming_server_command(tmp_path: Path) -> None:
    """`voiced wyoming-server` as a process: it listens, answers, and SIGTERM ends it."""
    import signal
    import sys

    from support import REPO, free_port

    port = free_port()
    config = tmp_path / "voiced.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"), "asr": {"processes": 1},
        "intents": {"paths": [str(REPO / "config" / "intents")]}}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiced", "wyoming-server", "--config", str(config),
        "--uri", f"tcp://127.0.0.1:{port}", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while b"listening on" not in (line := await proc.stdout.readline()):
                assert line, "the server exited before listening"
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Recognize(text="turn on the kitchen lights").event())
            assert Intent.from_event(await read_until(client, "intent")).name == "HassTurnOn"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
