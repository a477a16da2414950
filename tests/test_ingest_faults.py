"""Ingest under a hostile (or unlucky) LAN client: every fault is refused where it enters.

Real mosquitto, a real in-process daemon, an aiomqtt client as the hostile satellite and
voiced's own Satellite as the good one. After the bad messages, a command from a good
satellite is still understood, the MQTT link never dropped, each bad message produced
exactly its error on hermes/error/..., and no site was created for invalid input.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from support import FIXTURES, Mosquitto, make_config, running_daemon

from voiced.audio.wav import build_wav, read_wav_file
from voiced.satellite import Satellite

pytestmark = pytest.mark.slow

COMMAND = read_wav_file(FIXTURES / "commands" / "on_kitchen.wav")
""""turn on the kitchen lights" (espeak-ng)."""
HOTWORD = "hermes/hotword/porcupine/detected"
FRAME = build_wav(bytes(640))
"""20 ms of silence: a valid Hermes audioFrame."""


def wav_header(rate: int, width: int = 2, channels: int = 1, data: bytes = b"") -> bytes:
    """A WAV file built by hand (build_wav refuses the rates these tests need)."""
    block = width * channels
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block,
                                    width * 8)
            + b"data" + struct.pack("<I", len(data)) + data)


def site_tasks() -> set[str]:
    """Names of the running site worker tasks (however the daemon owns them)."""
    return {t.get_name() for t in asyncio.all_tasks()
            if t.get_name().startswith("site-") and not t.done()}


@asynccontextmanager
async def observer(port: int, *topics: str) -> AsyncIterator[aiomqtt.Client]:
    """An MQTT client subscribed to `topics` (hermes/error/# by default)."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for topic in topics or ("hermes/error/#",):
            await client.subscribe(topic)
        yield client


async def errors(client: aiomqtt.Client, n: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The next `n` hermes/error messages, each with its `code` split out."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async for msg in client.messages:
            if not msg.topic.value.startswith("hermes/error/"):
                continue
            data = json.loads(msg.payload)  # type: ignore[arg-type]
            data["topic"] = msg.topic.value
            data["code"] = data["error"].split(":", 1)[0]
            found.append(data)
            if len(found) == n:
                return found
    raise AssertionError("unreachable")


async def assert_still_serving(daemon: Any, port: int, site: str = "good") -> None:
    """A good satellite's command is understood, on the first and only MQTT connection."""
    async with Satellite("127.0.0.1", port, site) as sat:
        answer = await sat.command(COMMAND, timeout=60)
    assert answer.intent == "HassTurnOn" and answer.termination == "nominal", answer
    assert daemon.connected
    assert daemon.link.connections == 1, "the MQTT link dropped and reconnected"
    assert daemon.reader.connections == 1, "the MQTT reader dropped and reconnected"


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logged = [r.getMessage() for r in caplog.records if r.exc_info]
    assert not logged, logged


async def test_hostile_site_ids_never_reach_a_topic(mosquitto: Mosquitto, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Fault 1: `{"siteId": "#"}` became voiced/events/# and killed the MQTT link."""
    port = mosquitto.port
    payload_ids: list[object] = ["#", "+", "/", "a/b", "\u0001", "\ud800", "x" * 70_000, "é",
                                 5, ["a"]]
    async with running_daemon(make_config(tmp_path, port)) as daemon, \
            observer(port) as peer:
        for site in payload_ids:
            await peer.publish(HOTWORD, json.dumps({"siteId": site}))
        # topic segments mosquitto lets through: too long, a space, non-ASCII
        await peer.publish(f"hermes/audioServer/{'x' * 65}/audioFrame", FRAME)
        await peer.publish("voiced/audio/a b/pcm", bytes(640))
        await peer.publish("voiced/audio/küche/format", b'{"rate": 16000}')
        got = await errors(peer, len(payload_ids) + 3)
        assert [e["code"] for e in got] == ["site_id_invalid"] * len(got)
        assert all(e["siteId"] is None for e in got)
        assert all(e["error"].isascii() and len(e["error"]) < 400 for e in got)
        text = "\n".join(e["error"] for e in got)
        assert "siteId '\\ud800'" in text and "siteId '\\x01'" in text
        assert "(70000 characters)" in text and "siteId of type list" in text
        assert daemon.sites == {}
        await assert_still_serving(daemon, port)
        assert set(daemon.sites) == {"good"} and site_tasks() == {"site-good"}
        async with observer(port, "voiced/status") as status:
            async with asyncio.timeout(15):  # retained, then refreshed while counters move
                async for msg in status.messages:
                    data = json.loads(msg.payload)  # type: ignore[arg-type]
                    if data.get("processed", 0) >= 1:
                        break
            assert set(data["sites"]) == {"good"}
    no_tracebacks(caplog)


async def test_hostile_session_fields_are_refused(mosquitto: Mosquitto, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Fault 2: a lone surrogate in customData/sessionId killed a wake-mode site's worker
    when its session timed out (sessionEnded could not be encoded)."""
    port = mosquitto.port
    config = make_config(tmp_path, port, sites={"overrides": {"good": {"mode": "wake"}}})
    bad: list[tuple[str, dict[str, Any], str]] = [
        (HOTWORD, {"customData": "\ud800"}, "custom_data_invalid"),
        (HOTWORD, {"customData": "x" * 100_000}, "custom_data_invalid"),
        (HOTWORD, {"customData": {"a": 1}}, "custom_data_invalid"),
        (HOTWORD, {"sessionId": "\ud800"}, "session_id_invalid"),
        ("hermes/asr/startListening", {"sessionId": []}, "session_id_invalid"),
        ("hermes/asr/startListening", {"sessionId": "s/#"}, "session_id_invalid"),
        ("hermes/asr/startListening", {"sessionId": "s" * 10_000}, "session_id_invalid"),
        ("hermes/asr/startListening", {"wakewordId": "\ud800"}, "wakeword_id_invalid"),
        (f"hermes/hotword/{'w' * 200}/detected", {}, "wakeword_id_invalid"),
        (HOTWORD, {"modelId": "\ud800"}, "model_id_invalid"),
    ]
    async with running_daemon(config) as daemon, \
            observer(port, "hermes/error/#", "hermes/dialogueManager/#") as peer:
        for topic, fields, _ in bad:
            await peer.publish(topic, json.dumps({"siteId": "good", **fields}))
        got = await errors(peer, len(bad))
        assert Counter(e["code"] for e in got) == Counter(code for _, _, code in bad)
        assert all(e["siteId"] == "good" for e in got)
        assert daemon.sites == {}, "an invalid control message created a site"
        # the later event: a valid session; no session was started by the bad ones
        custom = "{\"room\": \"küche ✓\"}"
        await peer.publish(HOTWORD, json.dumps({"siteId": "good", "sessionId": "good-1",
                                                "customData": custom}))
        async with asyncio.timeout(20):
            msg = await anext(aiter(peer.messages))
        assert msg.topic.value == "hermes/dialogueManager/sessionStarted"
        started = json.loads(msg.payload)  # type: ignore[arg-type]
        assert started["sessionId"] == "good-1" and started["customData"] == custom
        async with Satellite("127.0.0.1", port, "good") as sat:
            answer = await sat.command(COMMAND, timeout=60)
        assert answer.intent == "HassTurnOn" and answer.session_id == "good-1", answer
        assert daemon.link.connections == 1
    no_tracebacks(caplog)


async def test_json_bombs_are_plain_json_errors(mosquitto: Mosquitto, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Fault 6: deep nesting and over-long integers escaped the JSON error path (a
    traceback per message, no answer on hermes/error)."""
    port = mosquitto.port
    bad: list[tuple[str, bytes, str]] = [
        ("hermes/asr/startListening", b"[" * 100_000, "json_invalid"),
        (HOTWORD, b'{"siteId": "a", "n": ' + b"1" * 5000 + b"}", "json_invalid"),
        ("hermes/asr/stopListening", b"[1]", "json_invalid"),
        ("hermes/asr/startListening", b'"text"', "json_invalid"),
        ("hermes/asr/startListening", b"\xff\xfe garbage", "json_invalid"),
        ("voiced/audio/f/format", b'{"a": ' * 50_000, "json_invalid"),
        ("voiced/audio/f/format", b'{"rate": ' + b"9" * 5000 + b"}", "json_invalid"),
        ("voiced/audio/f/format", b'{"rate": 16000, "width": true}', "format_invalid"),
        (HOTWORD, b'{"siteId": 5}', "site_id_invalid"),
        ("hermes/asr/startListening", b'{"siteId": "a", "sessionId": []}',
         "session_id_invalid"),
    ]
    async with running_daemon(make_config(tmp_path, port)) as daemon, \
            observer(port) as peer:
        for topic, payload, _ in bad:
            await peer.publish(topic, payload)
        got = await errors(peer, len(bad))
        assert Counter(e["code"] for e in got) == Counter(code for _, _, code in bad)
        deep = [e for e in got if "nested too deeply" in e["error"]]
        assert len(deep) == 2 and {e["topic"] for e in deep} == {
            "hermes/error/transport", "hermes/error/audioServer"}
        assert any("4300 digits" in e["error"] for e in got)
        # a Hermes payload that cannot be read has no site; a native topic names a valid one
        assert {e["siteId"] for e in got if e["code"] == "json_invalid"} == {None, "f"}
        assert daemon.sites == {}
        await assert_still_serving(daemon, port)
    no_tracebacks(caplog)


async def test_unsupported_sample_rates_are_refused(mosquitto: Mosquitto,
                                                    tmp_path: Path) -> None:
    """Fault 3: a 44-byte WAV at 191999 Hz made voiced design a 3.8-million-tap filter
    on the event loop."""
    port = mosquitto.port
    async with running_daemon(make_config(tmp_path, port)) as daemon, \
            observer(port) as peer:
        for _ in range(5):
            await peer.publish("hermes/audioServer/odd/audioFrame", wav_header(191_999))
        await peer.publish("hermes/audioServer/odd/audioFrame",
                           wav_header(191_999, data=bytes(4)))
        await peer.publish("voiced/audio/odd/format", b'{"rate": 191999}')
        got = await errors(peer, 7)
        assert [e["code"] for e in got] == ["rate_unsupported"] * 7
        assert all("191999 Hz" in e["error"] and "44100" in e["error"] for e in got)
        assert all(e["siteId"] == "odd" for e in got)
        assert "odd" not in daemon.sites
        await assert_still_serving(daemon, port)


async def test_audio_per_message_is_bounded(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Fault 5: one 1 MB message of 8 kHz 8-bit audio held two minutes of speech."""
    port = mosquitto.port
    two_s = bytes(64_000)  # 2 s of 16 kHz 16-bit mono: the most one message may hold
    bad: list[tuple[str, bytes, str]] = [
        ("hermes/audioServer/long/audioFrame", build_wav(two_s + bytes(2)), "audio_too_long"),
        ("hermes/audioServer/long/audioFrame",
         build_wav(bytes(999_000), rate=8000, width=1), "audio_too_long"),
        ("voiced/audio/long/pcm", bytes(96_000), "audio_too_long"),
        ("hermes/audioServer/long/audioFrame", build_wav(b""), "audio_empty"),
        ("voiced/audio/long/pcm", b"", "audio_empty"),
    ]
    async with running_daemon(make_config(tmp_path, port)) as daemon, \
            observer(port) as peer:
        for topic, payload, _ in bad:
            await peer.publish(topic, payload)
        got = await errors(peer, len(bad))
        assert Counter(e["code"] for e in got) == Counter(code for _, _, code in bad)
        assert any("124.88 s" in e["error"] and "2000 ms" in e["error"] for e in got)
        assert all(e["siteId"] == "long" for e in got)
        assert "long" not in daemon.sites
        # exactly 2 s is accepted (and creates its site)
        await peer.publish("hermes/audioServer/edge/audioFrame", build_wav(two_s))
        await assert_still_serving(daemon, port)
        assert set(daemon.sites) == {"edge", "good"}


async def test_invalid_messages_create_no_sites(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Fault 4: every new topic name created a permanent worker task before the payload
    was validated (5000 empty messages: a quarter of a core, forever)."""
    port = mosquitto.port
    async with running_daemon(make_config(tmp_path, port)) as daemon, \
            observer(port) as peer:
        for i in range(500):
            await peer.publish(f"hermes/audioServer/s{i}/audioFrame", b"")
        for i in range(300):
            await peer.publish(f"voiced/audio/p{i}/pcm", b"")
        for i in range(200):  # nothing to stop on a site that does not exist
            await peer.publish("hermes/asr/stopListening", json.dumps({"siteId": f"q{i}"}))
        await peer.publish(HOTWORD, b'{"siteId": "#"}')  # the marker: its error comes last
        got = await errors(peer, 801, timeout=60)
        assert Counter(e["code"] for e in got) == {"wav_header": 500, "audio_empty": 300,
                                                   "site_id_invalid": 1}
        assert daemon.sites == {} and site_tasks() == set()
        await assert_still_serving(daemon, port)
        assert set(daemon.sites) == {"good"} and site_tasks() == {"site-good"}


async def test_site_cap_and_idle_expiry(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Fault 4: sites are capped (`sites.max`) and forgotten when idle
    (`sites.idle_expiry_s`), but never while a session is open on them."""
    port = mosquitto.port
    config = make_config(tmp_path, port, vad={"wake_timeout_s": 60},
                         sites={"max": 3, "idle_expiry_s": 1,
                                "overrides": {"hall": {"mode": "wake"}}})
    async with running_daemon(config) as daemon, \
            observer(port, "hermes/error/#", "hermes/dialogueManager/#") as peer:
        await peer.publish(HOTWORD, b'{"siteId": "hall", "sessionId": "open-1"}')
        for site in ("a", "b", "c"):
            await peer.publish(f"hermes/audioServer/{site}/audioFrame", FRAME)
        got = await errors(peer, 1)
        assert got[0]["code"] == "sites_full" and got[0]["siteId"] == "c"
        assert "3 sites (sites.max)" in got[0]["error"]
        assert set(daemon.sites) == {"hall", "a", "b"}
        # idle sites go; the one with an open session stays (it was idle longest)
        async with asyncio.timeout(10):
            while set(daemon.sites) != {"hall"} or site_tasks() != {"site-hall"}:
                await asyncio.sleep(0.05)
        # once its session ends, it goes too
        await peer.publish("hermes/asr/stopListening", b'{"siteId": "hall"}')
        async with asyncio.timeout(10):
            async for msg in peer.messages:
                if msg.topic.value == "hermes/dialogueManager/sessionEnded":
                    break
            while daemon.sites or site_tasks():
                await asyncio.sleep(0.05)
        await assert_still_serving(daemon, port)


def test_site_ids_in_the_config_are_validated() -> None:
    from voiced.config import SitesConfig

    assert SitesConfig(allow=["kitchen", "sat-1.home"]).allowed("kitchen")
    for bad in ("a/b", "#", "x" * 65, "küche", ""):
        with pytest.raises(ValueError, match="not a valid site id"):
            SitesConfig(allow=[bad])
        with pytest.raises(ValueError, match="not a valid site id"):
            SitesConfig(overrides={bad: {"mode": "wake"}})


async def test_refusals_are_rate_limited_and_counted() -> None:
    """A flood of new site ids over the cap is reported once per interval, with a count."""
    from voiced.config import SitesConfig
    from voiced.sites import SiteRefused, SiteRegistry
    from voiced.supervise import Supervisor

    now = [0.0]

    class Worker:
        mode = "always"

        def __init__(self) -> None:
            self.queue: asyncio.Queue[object] = asyncio.Queue()
            self.stopped = asyncio.Event()

        async def run(self) -> None:
            await self.stopped.wait()

        def request_shutdown(self) -> None:
            self.stopped.set()

    supervisor = Supervisor()
    registry = SiteRegistry(SitesConfig(max=1), lambda site: Worker(),  # type: ignore[arg-type,return-value]
                            supervisor, error_interval_s=10, clock=lambda: now[0])
    registry.get_or_create("one")
    reports = []
    for i in range(5):
        with pytest.raises(SiteRefused) as info:
            registry.get_or_create(f"extra{i}")
        assert info.value.code == "sites_full"
        reports.append(info.value.report)
    assert reports == [True, False, False, False, False]
    now[0] = 10.0
    with pytest.raises(SiteRefused) as info:
        registry.get_or_create("late")
    assert info.value.report and "4 more refused" in info.value.message
    assert registry.refused == 6 and set(registry.workers) == {"one"}
    assert await registry.stop_site("one") and registry.workers == {}
    await registry.close()
    await supervisor.stop()


async def test_a_message_voiced_fails_to_handle_is_answered_and_the_next_one_read(
        caplog: pytest.LogCaptureFixture) -> None:
    """A failure inside ingest (a bug of voiced's: here, making a site's worker fails)
    is answered with `internal` on the error path, counted, its traceback logged once per
    kind and place, and the next message is handled."""
    from voiced.config import SitesConfig
    from voiced.ingest import Ingest
    from voiced.sites import SiteRegistry
    from voiced.supervise import Supervisor

    def broken_factory(site: str) -> Any:
        raise RuntimeError(f"cannot make {site}")

    supervisor = Supervisor()
    registry = SiteRegistry(SitesConfig(), broken_factory, supervisor)
    errors: list[tuple[str, str, str, str | None]] = []
    ingest = Ingest(registry, lambda *report: errors.append(report))
    frame = build_wav(bytes(640))
    for site in ("den", "hall", "den"):
        ingest(f"hermes/audioServer/{site}/audioFrame", frame)
    ingest("hermes/audioServer/bad site/audioFrame", frame)  # still refused as before
    assert ingest.failures == 3
    assert [e[:2] for e in errors[:3]] == [("transport", "internal")] * 3
    assert "hermes/audioServer/hall/audioFrame" in errors[1][2]
    assert "RuntimeError: cannot make hall" in errors[1][2]
    assert errors[3][1] == "site_id_invalid"
    assert caplog.text.count("Traceback") == 1
    await registry.close()
    await supervisor.stop()


def test_a_full_queue_never_loses_a_start_or_a_stop() -> None:
    """Audio and controls share a site's bounded queue. On a full queue audio is dropped
    (and answered on hermes/error at the 1st, 10th, 100th... chunk), but a control takes
    the oldest audio chunk's place, in order behind the rest: a satellite flushing its
    buffer right before its hotword used to lose the hotword without a word."""
    from voiced.ingest import _offer
    from voiced.site_inbox import Audio, Control, SiteInbox
    from voiced.transport.native import INTERNAL_FORMAT

    inbox = SiteInbox("den", 10)
    errors: list[tuple[str, str, str, str | None]] = []

    def report(*args: Any) -> None:
        errors.append(args)

    chunks = [Audio(bytes([i]) * 640, INTERNAL_FORMAT, False) for i in range(12)]
    for chunk in chunks:
        _offer(inbox, chunk, "voiced/audio/den/pcm", report)  # type: ignore[arg-type]
    assert inbox.dropped == 2 and [e[1] for e in errors] == ["queue_full"]
    assert "this audio was dropped; 1 audio chunks dropped so far" in errors[0][2]
    for kind in ("listen", "stop"):
        _offer(inbox, Control(kind), f"hermes/asr/{kind}", report)  # type: ignore[arg-type]
    queued = [inbox.queue.get_nowait() for _ in range(inbox.queue.qsize())]
    # the two oldest chunks made room; everything else in the order it came
    assert queued == [*chunks[2:10], Control("listen"), Control("stop")]
    assert inbox.dropped == 4 and len(errors) == 1  # counted, answered at 1, 10, 100...
    # a queue of nothing but controls refuses the next one, and says so
    for _ in range(10):
        assert inbox.offer(Control("stop"))
    _offer(inbox, Control("listen"), "hermes/asr/startListening", report)  # type: ignore[arg-type]
    assert errors[-1][:2] == ("transport", "queue_full") and errors[-1][3] == "den"
    assert "a queue full of control messages; this listen was dropped" in errors[-1][2]
    assert inbox.dropped == 4
    # a stopping site takes nothing more: a control is answered, audio quietly refused
    inbox.request_shutdown()
    count = len(errors)
    _offer(inbox, chunks[0], "voiced/audio/den/pcm", report)  # type: ignore[arg-type]
    assert len(errors) == count and inbox.dropped == 4
    _offer(inbox, Control("listen"), "hermes/asr/startListening", report)  # type: ignore[arg-type]
    assert errors[-1][1] == "site_stopping" and "den is stopping" in errors[-1][2]


async def test_retained_control_is_not_replayed_but_a_retained_format_is_kept(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A broker replays retained messages at every subscription: a hotword published with
    retain used to open a stale session each time voiced (re)connected. Replayed audio
    and session control are refused (`retained`); a native `format` published retained
    is a standing fact, taken, so the satellite's format survives voiced's restarts."""
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as publisher:
        await publisher.publish(HOTWORD, json.dumps({"siteId": "porch", "sessionId": "stale"}),
                                qos=1, retain=True)
        await publisher.publish("voiced/audio/deck/format",
                                json.dumps({"rate": 16000, "width": 2, "channels": 2}),
                                qos=1, retain=True)
    config = make_config(tmp_path, mosquitto.port,
                         sites={"overrides": {"porch": {"mode": "wake"}}},
                         vad={"wake_timeout_s": 60})
    async with observer(mosquitto.port, "hermes/error/#", "voiced/events/porch",
                        "hermes/intent/#") as client, \
            running_daemon(config) as daemon:
        [refused] = await errors(client, 1)
        assert refused["code"] == "retained" and refused["topic"] == "hermes/error/transport"
        assert HOTWORD in refused["error"]
        await client.publish("hermes/asr/startListening",
                             json.dumps({"siteId": "porch", "sessionId": "live"}), qos=1)
        # the command in the retained format: stereo, each sample twice
        samples = np.frombuffer(COMMAND + bytes(32_000), dtype="<i2")
        stereo = np.repeat(samples, 2).astype("<i2").tobytes()
        for offset in range(0, len(stereo), 2560):
            await client.publish("voiced/audio/deck/pcm", stereo[offset:offset + 2560])
        seen: list[tuple[str, str]] = []
        async with asyncio.timeout(60):
            async for msg in client.messages:
                data = json.loads(msg.payload)  # type: ignore[arg-type]
                if msg.topic.value.startswith("voiced/events/porch"):
                    seen.append((data["type"], data["sessionId"]))
                elif msg.topic.value.startswith("hermes/intent/") and data["siteId"] == "deck":
                    assert data["input"] == "turn on the kitchen lights", data
                    break
        assert seen[0] == ("session_started", "live"), seen
        assert daemon.ingest.retained_refused == 1


async def test_a_native_satellites_format_outlives_its_idle_site(mosquitto: Mosquitto,
                                                                 tmp_path: Path) -> None:
    """A native satellite states its PCM format once per stream. When its site was
    forgotten for being idle, its audio used to be read as 16 kHz mono: wrong words,
    without an error. A stop sent to it now and then does not keep it alive either."""
    config = make_config(tmp_path, mosquitto.port, sites={"idle_expiry_s": 1})
    samples = np.frombuffer(COMMAND + bytes(32_000), dtype="<i2")
    stereo = np.repeat(samples, 2).astype("<i2").tobytes()
    async with running_daemon(config) as daemon, \
            observer(mosquitto.port, "hermes/intent/#",
                     "hermes/nlu/intentNotRecognized") as client:
        await client.publish("voiced/audio/deck/format",
                             json.dumps({"rate": 16000, "width": 2, "channels": 2}), qos=1)
        await client.publish("voiced/audio/deck/pcm", bytes(2560), qos=1)
        async with asyncio.timeout(10):
            while "deck" not in daemon.sites:
                await asyncio.sleep(0.05)
            while "deck" in daemon.sites:  # idle: forgotten
                # stops do not keep a site alive (they are not the site being heard)
                await client.publish("hermes/asr/stopListening", b'{"siteId": "deck"}')
                await asyncio.sleep(0.05)
        for offset in range(0, len(stereo), 2560):
            await client.publish("voiced/audio/deck/pcm", stereo[offset:offset + 2560])
        async with asyncio.timeout(60):
            msg = await anext(client.messages)
        data = json.loads(msg.payload)  # type: ignore[arg-type]
        assert msg.topic.value == "hermes/intent/HassTurnOn", (msg.topic.value, data)
        assert data["siteId"] == "deck" and data["input"] == "turn on the kitchen lights"


async def test_a_site_sending_far_faster_than_real_time_is_held_to_a_budget(
        mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One client sending 200 s of 192 kHz stereo audio at once: what a minute of 16 kHz
    mono costs (a buffer flushed after a gap: 2.5 s of this audio) is taken, then 20 s of
    16 kHz mono a second; the rest is refused (`too_fast`, counted) instead of costing
    voiced's loop seconds that every other site waits for."""
    config = make_config(tmp_path, mosquitto.port)
    second = wav_header(192_000, 2, 2, bytes(192_000 * 4 * 2 // 2))  # 1 s of silence
    async with running_daemon(config) as daemon, observer(mosquitto.port) as peer:
        for _ in range(200):
            await peer.publish("hermes/audioServer/flood/audioFrame", second)
        [refused] = await errors(peer, 1)
        assert refused["code"] == "too_fast" and refused["siteId"] == "flood"
        assert "far faster than real time" in refused["error"]
        await assert_still_serving(daemon, mosquitto.port)
        flood = daemon.sites["flood"]
        # taken: (60 + 20 × the seconds it took to publish them, < 6) / 24 messages
        assert flood.too_fast >= 200 - 8, flood.status()
        assert flood.status()["too_fast"] == flood.too_fast
    no_tracebacks(caplog)
