"""Arbitration for real: one spoken command heard by several satellites of a room group.

The command is spoken by espeak-ng and rendered per satellite by sox (voiced.bench.rooms):
each at its own distance (gain and delay), with reverberation, its own noise, microphone
gain and stream latency, and one next to a loud television. All satellites stream at the
same time, in real time, over a real mosquitto, to a real daemon (webrtcvad, pocketsphinx,
SQLite history, /metrics). The nearest satellite must answer and the others stay silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
import yaml
from fakes import FakeTranscriber, RecordingSubscriber
from support import Mosquitto, make_config, running_daemon

from voiced.arbiter_service import Arbitration
from voiced.asr.service import AsrService
from voiced.audio.wav import read_wav_file
from voiced.bench.rooms import Mic, Room, dry_command, render
from voiced.config import SitesConfig, VadConfig
from voiced.const import BYTES_PER_SECOND
from voiced.events import EventSink, Subscriber
from voiced.inference import InferenceEngine
from voiced.models import EventType, PipelineEvent, Transcript
from voiced.satellite import Satellite
from voiced.sessions import SiteWorker
from voiced.site_inbox import Audio, Control
from voiced.transport.native import INTERNAL_FORMAT

pytestmark = pytest.mark.slow

COMMAND = "turn on the kitchen lights"
SITES = ("kitchen", "hall", "lounge", "den")
GROUPS = {"home": list(SITES)}


@pytest.fixture(scope="module")
def dry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dry_command(COMMAND, "en-us", tmp_path_factory.mktemp("dry") / "command.wav")


def _room(dry: Path, *mics: Mic) -> Room:
    return Room("home", mics, critical_m=1.2, reverberance=30, speech=dry)


# the nearest satellite is the last to start streaming and the hall one has the hottest
# microphone: first-come and loudest would both pick the hall
KITCHEN = Mic("kitchen", 0.4, "brown", -62, gain_db=0, latency_ms=90)
HALL = Mic("hall", 2.6, "brown", -61, gain_db=6, latency_ms=0)
LOUNGE = Mic("lounge", 5.0, "pink", -58, gain_db=-2, latency_ms=30, wall_db=10)
DEN = Mic("den", 4.0, "tv", -22, gain_db=0, latency_ms=10)
"""Next to a television playing loud music."""


class Tally(Subscriber):
    """Counts the events voiced publishes on voiced/events/<site>."""

    name = "tally"

    def __init__(self) -> None:
        self.count = 0

    async def handle(self, event: PipelineEvent) -> None:
        self.count += bool(event.site)


class Peer:
    """Everything voiced publishes, in order, read by a real MQTT client."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[tuple[str, dict[str, Any]]] = []

    async def read(self) -> None:
        async for message in self.client.messages:
            if isinstance(message.payload, bytes) and message.payload[:1] == b"{":
                self.messages.append((message.topic.value, json.loads(message.payload)))

    async def mark(self, daemon: Any) -> int:
        """Once every event voiced emitted so far has arrived here (the native events are
        published after the Hermes messages of the same event, on the same connection),
        the index of the messages after them."""
        tally = next(s for s in daemon.sink._subscribers if isinstance(s, Tally))
        async with asyncio.timeout(10):
            while sum(t.startswith("voiced/events/") for t, _ in self.messages) < tally.count:
                await asyncio.sleep(0.02)
        return len(self.messages)

    def hermes(self, prefix: str, site: str | None = None) -> list[dict[str, Any]]:
        return [d for t, d in self.messages[self.since:] if t.startswith(prefix)
                and (site is None or d.get("siteId") == site)]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [d for t, d in self.messages[self.since:]
                if t.startswith("voiced/events/") and d.get("type") == kind]


@contextlib.asynccontextmanager
async def _peer(port: int, daemon: Any) -> AsyncIterator[Peer]:
    daemon.sink.subscribe(Tally())
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for topic in ("hermes/#", "voiced/events/#"):
            await client.subscribe(topic)
        peer = Peer(client)
        reader = asyncio.create_task(peer.read())
        try:
            yield peer
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader


async def _stream_all(port: int, audio: dict[str, bytes], latency: dict[str, float]) -> None:
    """Every satellite streams its recording in real time, from the same moment (each
    after its own latency)."""
    async with contextlib.AsyncExitStack() as stack:
        sats = {site: await stack.enter_async_context(Satellite("127.0.0.1", port, site))
                for site in audio}

        async def one(site: str) -> None:
            await asyncio.sleep(latency[site] / 1000)
            await sats[site].stream(audio[site], realtime=True, trailing_silence_ms=0)

        await asyncio.gather(*(one(site) for site in audio))


WARM_UP_S = 1.0
"""Noise each satellite streams first: webrtcvad calls the first frames of a new stream
speech, and those false starts are over (discarded) before the command is streamed."""


async def _warm_up(port: int, daemon: Any, peer: Peer, audio: dict[str, bytes],
                   quiet: dict[str, bytes] | None = None) -> int:
    """Stream each satellite's first WARM_UP_S (its noise; `quiet`: a room's noise for a
    satellite whose television only goes on with the recording) and wait until that
    settled; returns the index of the peer's messages after it (the test's)."""
    cut = int(WARM_UP_S * BYTES_PER_SECOND)
    await _stream_all(port, {site: (quiet or {}).get(site, pcm)[:cut]
                             for site, pcm in audio.items()}, dict.fromkeys(audio, 0.0))
    await _settled(daemon)
    return await peer.mark(daemon)


async def _settled(daemon: Any, timeout: float = 30.0) -> None:
    """Until every site is idle (its last utterance ended: a satellite whose audio
    stopped mid-utterance ends it after STALL_S), no utterance runs and arbitration holds
    nothing."""
    async with asyncio.timeout(timeout):
        while True:
            status = daemon.arbitration.status()
            if (all(w.idle for w in daemon.sites.values()) and daemon.pipeline.inflight == 0
                    and status["parked"] == status["kept"] == 0):
                return
            await asyncio.sleep(0.05)


async def _metrics(daemon: Any) -> str:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{daemon.http.port}/metrics") as resp:
        return await resp.text()


async def test_the_nearest_satellite_answers_and_the_others_stay_silent(
        mosquitto: Mosquitto, tmp_path: Path, dry: Path) -> None:
    room = _room(dry, KITCHEN, HALL, LOUNGE, DEN)
    audio = await asyncio.to_thread(render, room, tmp_path / "room")
    # the television goes on when the recording starts: before, the den hears its room
    quiet = await asyncio.to_thread(render, _room(dry, replace(DEN, noise="brown",
                                                                noise_dbfs=-62, hears=False)),
                                    tmp_path / "quiet")
    config = make_config(tmp_path, mosquitto.port, sites={"groups": GROUPS}, handlers=[
        {"intent": "HassTurnOn", "plugin": "say", "options": {"text": "Turning on the {area} "
                                                                     "lights"}}])
    async with running_daemon(config) as daemon, _peer(mosquitto.port, daemon) as peer:
        peer.since = await _warm_up(mosquitto.port, daemon, peer, audio, quiet)
        await _stream_all(mosquitto.port, audio, {m.site: m.latency_ms for m in room.mics})
        await _settled(daemon)
        await peer.mark(daemon)
        metrics = await _metrics(daemon)
    intents = peer.hermes("hermes/intent/")
    assert [(i["siteId"], i["intent"]["intentName"]) for i in intents] == [
        ("kitchen", "HassTurnOn")], peer.messages
    slots = {s["slotName"]: s["value"]["value"] for s in intents[0]["slots"]}
    assert slots["area"] == "kitchen"
    assert "arbitration" in intents[0]["timings"]
    assert [s["text"] for s in peer.hermes("hermes/tts/say")] == ["Turning on the kitchen lights"]
    for site in ("hall", "lounge", "den"):
        # nothing was heard, understood or said for a loser: no textCaptured, no
        # intentNotRecognized, no answer, no error
        for prefix in ("hermes/asr/textCaptured", "hermes/nlu/", "hermes/tts/say",
                       "hermes/error/"):
            assert peer.hermes(prefix, site) == [], (site, prefix)
        started = peer.hermes("hermes/dialogueManager/sessionStarted", site)
        ended = peer.hermes("hermes/dialogueManager/sessionEnded", site)
        assert len(started) == len(ended), (site, started, ended)
        for end in ended:
            assert end["termination"]["reason"] == "abortedByUser"
            assert end["termination"]["error"] == "arbitration_lost: kitchen answers"
    assert peer.hermes("hermes/dialogueManager/sessionStarted", "hall"), \
        "the hall satellite heard the command: it should have had a session to lose"
    decisions = peer.events("arbitration")
    assert decisions and all(d["winner"] == "kitchen" for d in decisions), decisions
    contest = next(d for d in decisions if d["reason"] in ("scored", "deadline"))
    sites = {c["site"]: c for c in contest["candidates"]}
    assert {"kitchen", "hall"} <= set(sites) and sites["kitchen"]["won"]
    assert sites["kitchen"]["score"] > sites["hall"]["score"]
    losers = [d for d in peer.events("session_ended") if d.get("cause") == "arbitration_lost"]
    assert {d["site"] for d in losers} >= {"hall"}
    assert all(d["winner"] == "kitchen" for d in losers)
    # the history: one handled row, one arbitration_lost row per loser's utterance
    rows = sqlite3.connect(config.state_dir / "voiced.db").execute(
        "SELECT site, outcome, outcome_detail FROM utterances").fetchall()
    assert [r[:2] for r in rows if r[0] == "kitchen"] == [("kitchen", "handled")]
    lost = [r for r in rows if r[0] != "kitchen"]
    assert lost and all(r[1] == "arbitration_lost" and "kitchen answers" in r[2]
                        for r in lost), rows
    assert 'voiced_arbitrations_total{group="home"' in metrics
    assert 'outcome="arbitration_lost"' in metrics


async def test_groups_change_on_reload_and_the_new_group_arbitrates(
        mosquitto: Mosquitto, tmp_path: Path, dry: Path) -> None:
    """The kitchen and the hall start in no group (each its own); a reload of voiced.yaml
    puts them in one: the satellites already streaming arbitrate from then on, and only
    the nearest answers. Another reload takes them out again."""
    room = _room(dry, KITCHEN, HALL)
    audio = await asyncio.to_thread(render, room, tmp_path / "room")
    handlers = [{"intent": "HassTurnOn", "plugin": "say",
                 "options": {"text": "Turning on the {area} lights"}}]
    config_file = tmp_path / "voiced.yaml"
    config_file.write_text(yaml.safe_dump({"handlers": handlers}))
    config = make_config(tmp_path, mosquitto.port, handlers=handlers)
    async with running_daemon(config, config_file) as daemon, \
            _peer(mosquitto.port, daemon) as peer:
        peer.since = await _warm_up(mosquitto.port, daemon, peer, audio)
        assert [w.contender for w in daemon.sites.values()] == [None, None]
        config_file.write_text(yaml.safe_dump({"handlers": handlers, "sites": {
            "groups": {"home": ["kitchen"]}, "overrides": {"hall": {"group": "home"}},
            "arbitration": {"policy": "score", "window_ms": 800}}}))
        assert await daemon.reload()
        assert daemon.arbitration.arbiter.groups == {"kitchen": "home", "hall": "home"}
        assert daemon.arbitration.arbiter.settings.window_ms == 800
        await _stream_all(mosquitto.port, audio, {m.site: m.latency_ms for m in room.mics})
        await _settled(daemon)
        await peer.mark(daemon)
        assert [i["siteId"] for i in peer.hermes("hermes/intent/")] == ["kitchen"], \
            peer.messages
        assert peer.hermes("hermes/nlu/intentNotRecognized") == []
        contest = [d for d in peer.events("arbitration") if d["reason"] in ("scored",
                                                                           "deadline")]
        assert [(d["group"], d["winner"]) for d in contest] == [("home", "kitchen")]
        assert {c["site"] for c in contest[0]["candidates"]} == {"kitchen", "hall"}
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{daemon.http.port}/api/status") as resp:
            counters = (await resp.json())["arbitration"]
        assert counters["groups"] == {"home": ["hall", "kitchen"]}
        assert counters["window_ms"] == 800 and counters["lost"] >= 1
        assert counters["by_reason"].get(contest[0]["reason"], 0) >= 1
        assert counters["decisions"] == sum(counters["by_reason"].values())
        assert daemon.stats()["arbitration"]["lost"] == counters["lost"]  # voiced/status
        config_file.write_text(yaml.safe_dump({"handlers": handlers}))
        assert await daemon.reload()
        assert daemon.arbitration.arbiter.groups == {}
        assert [w.contender for w in daemon.sites.values()] == [None, None]


async def test_wake_word_scores_from_the_wire_reach_the_decision(
        mosquitto: Mosquitto, tmp_path: Path, dry: Path) -> None:
    """Two wake-word satellites of a group each report the hotword with their detector's
    score (`hermes/hotword/<id>/detected`, `score`): the contest's candidates carry them,
    and the nearest answers."""
    room = _room(dry, KITCHEN, HALL)
    audio = await asyncio.to_thread(render, room, tmp_path / "room")
    config = make_config(tmp_path, mosquitto.port, sites={
        "groups": {"home": ["kitchen", "hall"]},
        "overrides": {"kitchen": {"mode": "wake"}, "hall": {"mode": "wake"}}})
    async with running_daemon(config) as daemon, _peer(mosquitto.port, daemon) as peer:
        peer.since = await _warm_up(mosquitto.port, daemon, peer, audio)
        for site, score in (("kitchen", 0.93), ("hall", 0.41)):
            await peer.client.publish("hermes/hotword/jarvis/detected", json.dumps(
                {"siteId": site, "modelId": "jarvis", "score": score}))
        async with asyncio.timeout(10):
            while len(peer.hermes("hermes/dialogueManager/sessionStarted")) < 2:
                await asyncio.sleep(0.02)
        await _stream_all(mosquitto.port, audio, {m.site: m.latency_ms for m in room.mics})
        await _settled(daemon)
        await peer.mark(daemon)
    assert [i["siteId"] for i in peer.hermes("hermes/intent/")] == ["kitchen"], peer.messages
    contest = next(d for d in peer.events("arbitration") if d["reason"] in ("scored",
                                                                            "deadline"))
    assert {c["site"]: c["wakeScore"] for c in contest["candidates"]} == {
        "kitchen": 0.93, "hall": 0.41}


async def test_a_single_satellite_of_a_group_pays_no_delay(
        mosquitto: Mosquitto, tmp_path: Path, dry: Path) -> None:
    """Only the kitchen hears the command (the others hear their rooms' noise)."""
    quiet = [Mic(m.site, 50.0, m.noise, m.noise_dbfs, gain_db=m.gain_db, hears=False)
             for m in (HALL, LOUNGE)]
    room = _room(dry, KITCHEN, *quiet)
    audio = await asyncio.to_thread(render, room, tmp_path / "room")
    config = make_config(tmp_path, mosquitto.port, sites={"groups": GROUPS})
    async with running_daemon(config) as daemon, _peer(mosquitto.port, daemon) as peer:
        peer.since = await _warm_up(mosquitto.port, daemon, peer, audio)
        await _stream_all(mosquitto.port, audio, {m.site: 0.0 for m in room.mics})
        await _settled(daemon)
        await peer.mark(daemon)
    intents = peer.hermes("hermes/intent/")
    assert [i["siteId"] for i in intents] == ["kitchen"], peer.messages
    assert intents[0]["timings"]["arbitration"] < 5.0  # ms: no wait, only bookkeeping
    assert not [d for d in peer.events("arbitration") if d["winner"] == "kitchen"]


async def test_a_winner_with_no_speech_is_swapped_for_the_loser(
        mosquitto: Mosquitto, tmp_path: Path, dry: Path) -> None:
    """First-come policy: a cough next to the hall satellite starts first and wins; its
    VAD then finds too little speech, and the kitchen, which heard the command, answers."""
    cough = tmp_path / "cough.wav"
    raw = await asyncio.to_thread(dry_command, "hah", "en-us", tmp_path / "hah.wav")
    await asyncio.to_thread(
        subprocess.run, ["sox", str(raw), str(cough), "trim", "0.06", "0.10", "pad", "1.3",
                         "3.0", "gain", "-n", "-3"], check=True, capture_output=True, timeout=60)
    room = _room(dry, KITCHEN, Mic("hall", 50.0, "brown", -61, hears=False))
    audio = await asyncio.to_thread(render, room, tmp_path / "room")
    audio["hall"] = _mix(audio["hall"], read_wav_file(cough))
    config = make_config(tmp_path, mosquitto.port,
                         sites={"groups": {"home": ["kitchen", "hall"]},
                                "arbitration": {"policy": "first"}})
    async with running_daemon(config) as daemon, _peer(mosquitto.port, daemon) as peer:
        peer.since = await _warm_up(mosquitto.port, daemon, peer, audio)
        await _stream_all(mosquitto.port, audio, {"kitchen": 0.0, "hall": 0.0})
        await _settled(daemon)
        await peer.mark(daemon)
    decisions = peer.events("arbitration")
    assert [(d["reason"], d["winner"]) for d in decisions] == [
        ("first", "hall"), ("swap", "kitchen")], decisions
    intents = peer.hermes("hermes/intent/")
    assert [i["siteId"] for i in intents] == ["kitchen"], peer.messages
    assert peer.hermes("hermes/dialogueManager/sessionStarted", "hall") == []


async def _idle(workers: Any) -> None:
    async with asyncio.timeout(10):
        while not all(w.idle for w in workers):
            await asyncio.sleep(0.02)


def _mix(a: bytes, b: bytes) -> bytes:
    import numpy as np

    x = np.frombuffer(a, dtype="<i2").astype(np.int32)
    y = np.zeros_like(x)
    n = min(x.size, len(b) // 2)
    y[:n] = np.frombuffer(b[: 2 * n], dtype="<i2")
    return np.clip(x + y, -32768, 32767).astype("<i2").tobytes()


class Pair:
    """Two site workers of one group sharing one `Arbitration`, fed a rendered room in
    real time (real webrtcvad and segmenter; a recognizer that records its streams)."""

    def __init__(self, audio: dict[str, bytes]) -> None:
        self.audio = audio
        self.engine = InferenceEngine(2)
        self.asr = FakeTranscriber(Transcript("turn on the kitchen lights", 0.9))
        self.sink = EventSink()
        self.recorder = RecordingSubscriber()
        self.sink.subscribe(self.recorder)
        self.ran: list[Any] = []
        sites = SitesConfig.model_validate({"groups": {"home": list(audio)}})
        self.arbitration = Arbitration(sites, VadConfig(), self.sink, self._submit)
        service = AsrService(self.asr, self.engine)
        self.workers = {site: SiteWorker(site, sites.mode_for(site), VadConfig(), 500,
                                         self.engine, service, self.sink, self._submit,
                                         contender=self.arbitration.contender(site))
                        for site in audio}
        self.warm = self.warm_decisions = 0

    async def _submit(self, utt: Any, decode: Any, speaker: Any) -> None:
        self.ran.append(utt)
        if decode is not None:
            await decode.aclose()

    async def play(self, before_command: list[tuple[str, Control]] | None = None) -> None:
        """Stream everything; after the noise, before the command, note what the warm-up
        did and send `before_command` controls."""
        tasks = [asyncio.create_task(w.run()) for w in self.workers.values()]
        step = BYTES_PER_SECOND // 50
        first = next(iter(self.audio.values()))
        try:
            start = time.monotonic()
            for i, offset in enumerate(range(0, len(first), step)):
                if offset == int(1.2 * BYTES_PER_SECOND):  # the noise before the command
                    await _idle(self.workers.values())
                    self.warm = len(self.asr.streams)
                    self.warm_decisions = len(self.recorder.of(EventType.ARBITRATION))
                    for site, control in before_command or []:
                        self.workers[site].offer(control)
                for site, worker in self.workers.items():
                    worker.offer(Audio(self.audio[site][offset:offset + step], INTERNAL_FORMAT,
                                       False))
                await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))
            for worker in self.workers.values():
                worker.request_shutdown()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            await self.arbitration.close()
        finally:
            for task in tasks:
                task.cancel()
            self.engine.close()

    def decisions(self) -> list[PipelineEvent]:
        return self.recorder.of(EventType.ARBITRATION)[self.warm_decisions:]


async def test_a_losers_models_are_never_fed(tmp_path: Path, dry: Path) -> None:
    """The far satellite's speech never opens a decoder, the near one's decoder hears the
    whole utterance, and one utterance runs."""
    room = _room(dry, Mic("kitchen", 0.7, "brown", -62), Mic("hall", 4.5, "brown", -62))
    pair = Pair(await asyncio.to_thread(render, room, tmp_path / "room"))
    await pair.play()
    assert [d.data["winner"] for d in pair.decisions()] == ["kitchen"]
    assert [u.site for u in pair.ran] == ["kitchen"]
    # one decoder for the command (the kitchen's), closed; the hall's speech opened none
    assert len(pair.asr.streams) == pair.warm + 1 and pair.asr.open_streams == 0
    fed = bytes(pair.asr.streams[-1].fed)
    # it heard the whole utterance but the end-of-speech silence voiced never decodes
    utt = pair.ran[0]
    assert utt.pcm.startswith(fed) and len(utt.pcm) - len(fed) <= BYTES_PER_SECOND // 2
    assert utt.arbitration_ms is not None and utt.arbitration_ms < 50
    lost = [e for e in pair.recorder.of(EventType.OUTCOME) if e.site == "hall"]
    assert [e.data["outcome"] for e in lost] == ["arbitration_lost"]
    assert pair.arbitration.status()["lost"] == 1


async def test_a_satellite_in_a_conversation_answers_even_when_another_hears_better(
        tmp_path: Path, dry: Path) -> None:
    """The kitchen asked a follow-up question (a `continue` turn); the answer is spoken
    nearer the hall, which hears it far better: the kitchen's session still gets it."""
    room = _room(dry, Mic("kitchen", 4.5, "brown", -62), Mic("hall", 0.5, "brown", -62))
    pair = Pair(await asyncio.to_thread(render, room, tmp_path / "room"))
    await pair.play([("kitchen", Control("continue", session_id="follow-up"))])
    decisions = pair.decisions()
    assert [(d.data["reason"], d.data["winner"]) for d in decisions] == [
        ("conversation", "kitchen")]
    assert [(u.site, u.session_id) for u in pair.ran] == [("kitchen", "follow-up")]
    ended = [e for e in pair.recorder.of(EventType.SESSION_ENDED) if e.site == "hall"]
    assert [e.data["cause"] for e in ended] == ["arbitration_lost"]


async def test_the_live_page_shows_who_answered_and_why(
        mosquitto: Mosquitto, tmp_path: Path, dry: Path, request: pytest.FixtureRequest) -> None:
    """The web page's live view, in a real Chromium: the winner's utterance carries the
    decision (each candidate's score), the loser's says it lost."""
    from browser import DESKTOP, artifacts, chromium, open_page
    from playwright.async_api import expect

    room = _room(dry, KITCHEN, HALL)
    audio = await asyncio.to_thread(render, room, tmp_path / "room")
    config = make_config(tmp_path, mosquitto.port, sites={"groups": {"home": ["kitchen",
                                                                              "hall"]}})
    async with running_daemon(config) as daemon, _peer(mosquitto.port, daemon) as peer, \
            chromium() as browser, \
            open_page(browser, f"http://127.0.0.1:{daemon.http.port}/",
                      artifacts(tmp_path, request.node.name), DESKTOP) as p:
        page = p.page
        await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        peer.since = await _warm_up(mosquitto.port, daemon, peer, audio)
        await _stream_all(mosquitto.port, audio, {m.site: m.latency_ms for m in room.mics})
        await _settled(daemon)
        decided = next(d for d in peer.events("arbitration") if d["reason"] == "scored")
        line = page.locator(f".card.site[data-site='kitchen'] .utt[data-session="
                            f"'{decided['sessionId']}'] .utt-arbitration")
        await expect(line).to_contain_text("kitchen answers (scored)")
        await expect(line.locator(".badge")).to_have_count(2)
        await expect(line.locator(".badge.ok")).to_have_attribute("data-site", "kitchen")
        hall = page.locator(".card.site[data-site='hall'] .outcome").first
        await expect(hall).to_contain_text("arbitration_lost: kitchen answers")
        await p.shot("arbitration")
