"""The live websockets against a real daemon, a real mosquitto and real audio.

`/api/events`: a satellite's spoken command over MQTT arrives as events, filters hold,
a client that stops reading is cut off without slowing anyone, the number of clients is
bounded. `/api/stream`: a spoken fixture sent as 48 kHz float PCM over the websocket is
understood and its events come back on the socket; bad input is answered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml
from support import FIXTURES, Mosquitto, make_config, running_daemon

from voiced.audio.resample import StreamResampler
from voiced.audio.wav import read_wav_file, to_float
from voiced.config import SitesConfig
from voiced.http import hub as hub_module
from voiced.http.live import HUB
from voiced.models import EventType, PipelineEvent
from voiced.satellite import Satellite, room_tone
from voiced.sites import SiteRefused, SiteRegistry

pytestmark = pytest.mark.slow

MANIFEST = yaml.safe_load((FIXTURES / "commands.yaml").read_text())
ENTRY = next(e for e in MANIFEST["commands"] if e["file"] == "commands/on_kitchen.wav")
HANDLERS = [{"intent": "HassTurnOn", "plugin": "say",
             "options": {"text": "Turning on the {area} lights"}}]
WAIT_S = 60


def _pcm() -> bytes:
    return read_wav_file(FIXTURES / ENTRY["file"])


def _base(daemon: Any) -> str:
    return f"http://127.0.0.1:{daemon.http.port}"


def _hub(daemon: Any) -> Any:
    return daemon.http._runner.app[HUB]


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: str,
                 got: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Messages up to and including the first of type `kind` (bounded wait)."""
    got = [] if got is None else got
    async with asyncio.timeout(WAIT_S):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, got[-3:])
            got.append(json.loads(msg.data))
            if got[-1]["type"] == kind:
                return got


@pytest.fixture
async def daemon(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Any]:
    config = make_config(tmp_path, mosquitto.port, handlers=HANDLERS)
    async with running_daemon(config) as running:
        yield running


async def test_events_of_a_satellite_command(daemon: Any, mosquitto: Mosquitto) -> None:
    base = _base(daemon)
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"{base}/api/events") as every, \
            http.ws_connect(f"{base}/api/events?site=hall&type=intent") as intents, \
            http.ws_connect(f"{base}/api/events?site=den") as den:
        for ws in (every, intents, den):
            hello = (await _until(ws, "hello"))[0]
        assert hello["filters"] == {"site": ["den"], "type": [], "levels": False}
        assert hello["status"]["mqtt"] is True and hello["sites"] == {}
        async with Satellite("127.0.0.1", mosquitto.port, "hall") as sat:
            answer = await sat.command(_pcm(), timeout=WAIT_S)
        assert answer.intent == "HassTurnOn", answer
        got = await _until(every, "session_ended")
        # partial transcripts come when the decoder catches up, status when load changes
        kinds = [m["type"] for m in got if m["type"] not in ("partial", "status")]
        assert kinds == ["site_connected", "speech_started", "session_started", "speech_ended",
                         "transcript", "intent", "handled", "say", "outcome",
                         "session_ended"], kinds
        by_type = {m["type"]: m for m in got}
        assert by_type["site_connected"]["data"] == {"mode": "always", "area": None,
                                                     "source": "mqtt"}
        intent = by_type["intent"]
        assert intent["site"] == "hall" and intent["sessionId"] == answer.session_id
        assert intent["data"]["intent"] == "HassTurnOn"
        assert intent["data"]["slots"]["area"] == ENTRY["slots"]["area"]
        assert by_type["say"]["data"]["text"] == answer.said[0]
        assert by_type["transcript"]["data"]["text"] == answer.text
        outcome = by_type["outcome"]
        assert set(outcome["timings"]) >= {"vad", "asr", "nlu", "handler", "processing"}
        assert all(isinstance(m["time"], float) and m["time"] <= time.time() for m in got)
        # an event each filtered client must see, emitted after the command: everything
        # of the command that the filters let through came before it, in order
        await daemon.sink.emit(PipelineEvent(EventType.INTENT, "hall", "mark", {"n": 1}))
        await daemon.sink.emit(PipelineEvent(EventType.ERROR, "den", "mark", {"n": 2}))
        only_intents = await _until(intents, "intent")
        only_intents = await _until(intents, "intent", only_intents)
        assert [(m["type"], m["sessionId"]) for m in only_intents] == [
            ("intent", answer.session_id), ("intent", "mark")]
        assert [(m["type"], m["sessionId"]) for m in await _until(den, "error")] == [
            ("error", "mark")]


async def test_bad_filters_are_refused(daemon: Any) -> None:
    base = _base(daemon)
    async with aiohttp.ClientSession() as http:
        for query, field in (("site=a/b", "site"), ("type=nonsense", "type"),
                             ("colour=red", "colour"), ("levels=maybe", "levels"),
                             ("&".join(["site=a"] * 65), "site")):
            async with http.get(f"{base}/api/events?{query}") as resp:
                assert resp.status == 400, query
                error = (await resp.json())["error"]
                assert error["code"] == "query_invalid" and error["field"] == field, error


def _stalled_client(port: int) -> socket.socket:
    """A websocket handshake on a socket with a tiny receive buffer, never read again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def _wait_for(check: Any, what: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_a_stalled_client_never_slows_the_pipeline(daemon: Any) -> None:
    hub = _hub(daemon)
    base = _base(daemon)
    stalled = await asyncio.to_thread(_stalled_client, daemon.http.port)
    try:
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(f"{base}/api/events?type=transcript") as reader:
            await _until(reader, "hello")
            await _wait_for(lambda: len(hub.clients) == 2, "both clients registered")
            slow = next(c for c in hub.clients if c.types is None)
            text = "x" * 4000
            batches, per_batch = 40, 100
            received = 0
            worst_emit = 0.0
            for batch in range(batches):
                started = time.monotonic()
                for i in range(per_batch):
                    await daemon.sink.emit(PipelineEvent(
                        EventType.TRANSCRIPT, "flood", f"s{batch}-{i}", {"text": text}))
                worst_emit = max(worst_emit, time.monotonic() - started)
                # the reading client gets every event; nothing waits for the stalled one
                async with asyncio.timeout(WAIT_S):
                    while received < (batch + 1) * per_batch:
                        msg = json.loads((await reader.receive()).data)
                        assert msg["type"] == "transcript", msg
                        assert msg["sessionId"] == f"s{received // per_batch}-" \
                                                   f"{received % per_batch}"
                        received += 1
            assert worst_emit < 2.0, worst_emit
            # the stalled client lost the oldest messages and was closed for it
            await _wait_for(lambda: hub.closed_slow == 1, "the stalled client closed")
            assert slow not in hub.clients and slow.dropped >= hub_module.HOPELESS_DROPS
            assert slow.too_slow is not None and "too slow" in slow.too_slow
            assert len(slow.queue) == 0
    finally:
        stalled.close()


async def test_a_client_that_stops_reading_is_closed(daemon: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "SEND_STALL_S", 0.5)
    hub = _hub(daemon)
    stalled = await asyncio.to_thread(_stalled_client, daemon.http.port)
    try:
        await _wait_for(lambda: len(hub.clients) == 1, "the client registered")
        client = next(iter(hub.clients))
        # far fewer messages than would be dropped before giving up: the stalled send does it
        for i in range(60):
            hub.publish_event(PipelineEvent(EventType.PARTIAL, "x", str(i), {"text": "y" * 65536}))
            await asyncio.sleep(0)
        await _wait_for(lambda: hub.closed_slow == 1, "the stalled client closed")
        assert client.too_slow is not None and "not taken in 0.5 s" in client.too_slow
        assert client.dropped < hub_module.HOPELESS_DROPS and not hub.clients
    finally:
        stalled.close()


async def test_slow_reader_is_told_what_it_missed(daemon: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "QUEUE_MESSAGES", 5)
    base = _base(daemon)
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"{base}/api/events?site=flood") as ws:
        await _until(ws, "hello")
        # 50 events in one go, the loop never yielding: only the newest 5 can wait
        for i in range(50):
            _hub(daemon).publish_event(
                PipelineEvent(EventType.PARTIAL, "flood", str(i), {"text": str(i)}))
        got = [json.loads((await ws.receive()).data) for _ in range(6)]
        assert got[0]["type"] == "dropped" and got[0]["count"] == 45, got[0]
        assert [m["sessionId"] for m in got[1:]] == ["45", "46", "47", "48", "49"]


async def test_websockets_are_bounded(daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "MAX_CLIENTS", 2)
    base = _base(daemon)
    async with aiohttp.ClientSession() as http:
        first = await http.ws_connect(f"{base}/api/events")
        await _until(first, "hello")
        second = await http.ws_connect(f"{base}/api/events")
        await _until(second, "hello")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{base}/api/events")
        assert refused.value.status == 503
        async with http.get(f"{base}/api/stream") as resp:  # counted together
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "too_many_websockets"
        await first.close()
        hub = _hub(daemon)
        await _wait_for(lambda: len(hub.clients) == 1, "the first client gone")
        third = await http.ws_connect(f"{base}/api/events")
        await _until(third, "hello")
        await second.close()
        await third.close()


async def test_sockets_waiting_for_a_hello_count_against_the_limit(
        daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "MAX_CLIENTS", 3)
    base = _base(daemon)
    hub = _hub(daemon)
    async with aiohttp.ClientSession() as http:
        # three streams that never say hello take every slot
        waiting = [await http.ws_connect(f"{base}/api/stream") for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{base}/api/events")
        assert refused.value.status == 503
        await waiting[0].close()
        await _wait_for(lambda: hub.open == 2, "the closed stream's slot given back")
        # upgrades at once cannot pass the check together: one of eight gets the slot
        tried = await asyncio.gather(*(http.ws_connect(f"{base}/api/events")
                                       for _ in range(8)), return_exceptions=True)
        opened = [t for t in tried if isinstance(t, aiohttp.ClientWebSocketResponse)]
        assert len(opened) == 1, tried
        assert all(isinstance(t, aiohttp.WSServerHandshakeError) and t.status == 503
                   for t in tried if t not in opened), tried
        async with http.get(f"{base}/metrics") as resp:
            assert "voiced_websocket_clients 3.0" in await resp.text()
        for ws in (*waiting[1:], *opened):
            await ws.close()
        await _wait_for(lambda: hub.open == 0, "every slot given back")


async def test_status_changes_are_sent(daemon: Any, mosquitto: Mosquitto) -> None:
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"{_base(daemon)}/api/events?type=status") as ws:
        assert (await _until(ws, "hello"))[-1]["status"]["state"] == "ready"
        mosquitto.stop()
        down = (await _until(ws, "status"))[-1]
        assert down["data"]["mqtt"] is False and down["data"]["state"] == "starting", down
        mosquitto.start()
        up = (await _until(ws, "status"))[-1]
        assert up["data"]["mqtt"] is True and up["data"]["state"] == "ready", up


async def test_clients_are_closed_when_voiced_stops(mosquitto: Mosquitto,
                                                    tmp_path: Path) -> None:
    config = make_config(tmp_path, mosquitto.port)
    async with aiohttp.ClientSession() as http:
        async with running_daemon(config) as running:
            ws = await http.ws_connect(f"{_base(running)}/api/events")
            await _until(ws, "hello")
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1001, msg
        assert msg.extra == "voiced is stopping"


# ---- /api/stream -----------------------------------------------------------------------
def _float48k(pcm: bytes) -> bytes:
    """Internal-format PCM as 48 kHz float32 in -1..1 (what a browser's AudioContext
    has)."""
    resampler = StreamResampler(16_000, 48_000)
    samples = np.concatenate([resampler.process(to_float(pcm, 2, 1)), resampler.flush()])
    return (samples / 32768).astype("<f4").tobytes()


async def test_browser_stream_is_a_satellite(daemon: Any) -> None:
    base = _base(daemon)
    pcm = _pcm()
    audio = _float48k(pcm + room_tone(pcm, 1200))
    chunk = 48_000 * 4 // 50  # 20 ms
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"{base}/api/events?type=site_connected&type=site_gone"
                            "&levels=true") as watch, \
            http.ws_connect(f"{base}/api/stream") as ws:
        await _until(watch, "hello")
        await ws.send_json({"site": "browser-1", "rate": 48_000, "format": "f32le"})
        ready = (await _until(ws, "ready"))[-1]
        assert ready["site"] == "browser-1" and ready["mode"] == "always"
        watched = await _until(watch, "site_connected")
        connected = watched[-1]
        assert connected["site"] == "browser-1"
        assert connected["data"]["source"] == "browser"
        # a bad frame is answered; the stream goes on
        await ws.send_bytes(b"\x00\x01\x02")
        error = (await _until(ws, "stream_error"))[-1]
        assert error["code"] == "pcm_partial_frame", error
        await ws.send_bytes(bytes(48_000 * 4 * 3))  # 3 s in one message
        assert (await _until(ws, "stream_error"))[-1]["code"] == "audio_too_long"
        await ws.send_str("hello?")
        assert (await _until(ws, "stream_error"))[-1]["code"] == "message_invalid"
        for offset in range(0, len(audio), chunk):
            await ws.send_bytes(audio[offset:offset + chunk])
        got = await _until(ws, "session_ended")
        # the site is still live: its level (sampled every TICK_S) reaches the watcher
        watched = await _until(watch, "level", watched)
        kinds = [m["type"] for m in got]
        assert {"speech_started", "transcript", "intent", "handled", "say",
                "outcome"} <= set(kinds), kinds
        intent = next(m for m in got if m["type"] == "intent")
        assert intent["site"] == "browser-1"
        assert intent["data"]["intent"] == "HassTurnOn", got
        assert intent["data"]["slots"]["area"] == ENTRY["slots"]["area"]
        said = next(m for m in got if m["type"] == "say")["data"]["text"]
        assert said.startswith("Turning on the")
        assert next(m for m in got if m["type"] == "session_ended")["data"]["reason"] == \
            "nominal"
        # while the browser holds the site, MQTT cannot feed it
        with pytest.raises(SiteRefused) as taken:
            daemon.site_registry.get_or_create("browser-1")
        assert taken.value.code == "site_in_use"
        await ws.close()
        watched = await _until(watch, "site_gone", watched)
        assert watched[-1]["site"] == "browser-1"
        # while audio flowed, the watcher that asked for levels got the site's level
        levels = [m["data"]["levels"]["browser-1"] for m in watched if m["type"] == "level"]
        assert levels and all(-96 <= level <= 0 for level in levels), watched
        assert max(levels) > -60, levels
        assert "browser-1" not in daemon.sites and not daemon.site_registry.claimed


async def test_browser_stream_refusals(daemon: Any) -> None:
    base = _base(daemon)
    async with aiohttp.ClientSession() as http:
        for hello, code in (
                ({"site": "a/b"}, "site_id_invalid"),
                ({"site": "ok", "rate": 12345}, "rate_unsupported"),
                ({"site": "ok", "format": "mp3"}, "format_invalid"),
                ({"site": "ok", "mode": "sometimes"}, "mode_invalid"),
                # not strings: refused alike (a TypeError and a 500 on the socket before)
                ({"site": "ok", "format": ["s16le"]}, "format_invalid"),
                ({"site": "ok", "mode": {"x": 1}}, "mode_invalid"),
                ({"site": "ok", "volume": 11}, "hello_invalid"),
                ([1, 2], "hello_invalid")):
            async with http.ws_connect(f"{base}/api/stream") as ws:
                await ws.send_json(hello)
                error = (await _until(ws, "stream_error"))[-1]
                assert error["code"] == code, (hello, error)
                closing = await ws.receive(timeout=10)
                assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
                assert str(closing.extra).startswith(code)
        async with http.ws_connect(f"{base}/api/stream") as ws:
            await ws.send_bytes(bytes(640))
            assert (await _until(ws, "stream_error"))[-1]["code"] == "hello_missing"
        # one site, one source
        async with http.ws_connect(f"{base}/api/stream") as first, \
                http.ws_connect(f"{base}/api/stream") as second:
            await first.send_json({"site": "desk", "mode": "wake"})
            assert (await _until(first, "ready"))[-1]["mode"] == "wake"
            await second.send_json({"site": "desk"})
            assert (await _until(second, "stream_error"))[-1]["code"] == "site_in_use"
            # a message over the size limit closes the socket, saying why
            await first.send_bytes(bytes(1_000_002))
            closing = await first.receive(timeout=10)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009, closing
        await _wait_for(lambda: "desk" not in daemon.sites, "the site released")


# ---- the registry's claims (no network) ------------------------------------------------
class _Owner:
    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[Any]] = {}

    def start(self, name: str, factory: Any, *, restart: bool = False,
              critical: bool = False) -> asyncio.Task[Any]:
        self.tasks[name] = asyncio.create_task(factory(), name=name)
        return self.tasks[name]


class _Worker:
    mode = "always"

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.idle = True

    async def run(self) -> None:
        await self.stop.wait()

    def request_shutdown(self) -> None:
        self.stop.set()


async def test_claimed_sites_are_exclusive_and_observed() -> None:
    owner = _Owner()
    registry = SiteRegistry(SitesConfig(max=2), lambda site: _Worker(),  # type: ignore[arg-type,return-value]
                            owner)
    seen: list[tuple[str, bool]] = []
    registry.observers.append(lambda site, live: seen.append((site, live)))
    registry.get_or_create("mqtt-sat")
    with pytest.raises(SiteRefused) as busy:
        registry.claim("mqtt-sat")
    assert busy.value.code == "site_in_use"
    worker = registry.claim("tab")
    assert registry.get("tab") is None and registry.workers["tab"] is worker
    with pytest.raises(SiteRefused) as twice:
        registry.claim("tab")
    assert twice.value.code == "site_in_use"
    with pytest.raises(SiteRefused) as full:
        registry.claim("tab2")
    assert full.value.code == "sites_full" and "tab2" not in registry.claimed
    await registry.release("tab")
    assert "tab" not in registry.workers and not registry.claimed
    assert seen == [("mqtt-sat", True), ("tab", True), ("tab", False)]
    await registry.stop_site("mqtt-sat")
    await registry.close()
