"""voiced's Wyoming server against hostile or unlucky clients, on loopback with raw
sockets: malformed headers, declared lengths over the limits, idle and slow connections,
stalled utterances, clients that never read, too many connections, hang-ups, and a flood of
bad events. Each gets an `error` event where it can still be answered and costs one log line
at most; none leaves a traceback or a task nobody owns, and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import struct
import time
from pathlib import Path

import pytest
from support import FIXTURES, voiced_wyoming
from wyoming.event import Event, async_read_event

from voiced import wyoming_server
from voiced.audio.wav import read_wav_file
from voiced.wyoming_server import WyomingServer

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(server: WyomingServer) -> Conn:
    return await asyncio.open_connection("127.0.0.1", server.port)


def header(kind: str, **fields: object) -> bytes:
    return json.dumps({"type": kind, **fields}).encode() + b"\n"


async def reply(conn: Conn, timeout: float = 30) -> Event | None:
    """The server's next event, None once it closed the connection."""
    async with asyncio.timeout(timeout):
        return await async_read_event(conn[0])


async def closed(conn: Conn, timeout: float = 10) -> bool:
    async with asyncio.timeout(timeout):
        try:
            return await conn[0].read() == b""
        except ConnectionError:
            return True


async def served(server: WyomingServer) -> None:
    """A fresh, well-behaved client is answered."""
    conn = await connect(server)
    conn[1].write(header("describe"))
    event = await reply(conn)
    assert event is not None and event.type == "info"
    conn[1].close()


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    gc.collect()  # "Task exception was never retrieved" is logged when a task is collected
    bad = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, bad


# (bytes sent, error code, words in its text, the connection ends)
MALFORMED = [
    (b"[1,2,3]\n", "event_invalid", "JSON object", True),
    (b'"describe"\n', "event_invalid", "JSON object", True),
    (b"null\n", "event_invalid", "JSON object", True),
    (b"{not json\n", "event_invalid", "line of JSON", True),
    (b'{"type": "describe\xff"}\n', "event_invalid", "UTF-8", True),
    (b"x" * 70_000 + b"\n", "event_too_large", "header line over 65536", True),
    (header("describe", data_length="5"), "event_invalid", "data_length must be a", True),
    (header("audio-chunk", payload_length="4"), "event_invalid", "payload_length", True),
    (header("describe", data_length=2.5), "event_invalid", "non-negative integer", True),
    (header("describe", payload_length=-1), "event_invalid", "non-negative integer", True),
    (header("describe", payload_length=True), "event_invalid", "non-negative integer", True),
    (header("audio-chunk", payload_length=2 * 1024**3), "event_too_large",
     f"payload_length is over the limit of {4 * 1024 * 1024} bytes", True),
    (header("describe", data_length=10**12), "event_too_large",
     "data_length is over the limit of 65536 bytes", True),
    # the framing holds: the event is refused, the connection goes on
    (b'{"data": {}}\n', "event_invalid", '"type", a string', False),
    (header("describe", data_length=3) + b"[1]", "event_invalid", "JSON objects", False),
    (header("describe", data=[1], data_length=2) + b"{}", "event_invalid", "JSON objects",
     False),
    (header("describe", data_length=2) + b"\xff}", "event_invalid", "JSON objects", False),
    (header("transcribe", data="x"), "event_invalid", "'transcribe' needs data to be a JSON "
     "object", False),
    (header("transcribe", data=[1]), "event_invalid", "needs data to be a JSON object", False),
]


async def test_malformed_events_get_an_error_naming_what_was_expected(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with voiced_wyoming(tmp_path) as server:
        for sent, code, words, ends in MALFORMED:
            conn = await connect(server)
            start = time.monotonic()
            conn[1].write(sent)
            event = await reply(conn, 10)
            assert event is not None and event.type == "error", sent[:80]
            assert event.data["code"] == code and words in event.data["text"], event.data
            if ends:
                assert await closed(conn), sent[:80]
            else:
                conn[1].write(header("describe"))
                event = await reply(conn)
                assert event is not None and event.type == "info", sent[:80]
            # nothing waited for the declared gigabytes, nor for the client to go
            assert time.monotonic() - start < 5, sent[:80]
            conn[1].close()
        await served(server)
        assert server.service.errors == len(MALFORMED)
    no_errors_logged(caplog)


async def test_idle_slow_and_stalled_connections_are_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wyoming_server, "EVENT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(wyoming_server, "AUDIO_GAP_S", 0.5)
    async with voiced_wyoming(tmp_path) as server:
        idle = await connect(server)
        slow = await connect(server)
        start = time.monotonic()
        # a byte every 0.1 s: the deadline is for the whole event, not from the last byte
        for byte in header("describe")[:8]:
            slow[1].write(bytes([byte]))
            await asyncio.sleep(0.1)
        for conn in (idle, slow):
            event = await reply(conn, 10)
            assert event is not None and event.data["code"] == "timeout", event
            assert "no complete event within 1 s" in event.data["text"]
            assert await closed(conn)
        assert 0.9 < time.monotonic() - start < 1.7

        # an utterance whose audio stops: the stream (and its decoder) let go
        stalled = await connect(server)
        chunk = {"rate": 16000, "width": 2, "channels": 1}
        stalled[1].write(header("transcribe") + header("audio-start", data=chunk) +
                         header("audio-chunk", data=chunk, payload_length=3200) +
                         bytes(3200))
        event = await reply(stalled, 10)
        assert event is not None and event.data["code"] == "audio_timeout", event
        assert "more than 0.5 s" in event.data["text"]
        assert await closed(stalled)
        async with asyncio.timeout(5):
            while server.connections:
                await asyncio.sleep(0.05)
        await served(server)


async def test_connections_are_capped_and_a_client_that_never_reads_is_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(wyoming_server, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(wyoming_server, "WRITE_TIMEOUT_S", 0.5)
    async with voiced_wyoming(tmp_path) as server:
        first, second = await connect(server), await connect(server)
        for conn in (first, second):  # both served
            conn[1].write(header("describe"))
            assert (await reply(conn)) is not None
        third = await connect(server)
        event = await reply(third, 10)
        assert event is not None and event.data["code"] == "overloaded", event
        assert "serving 2 connections" in event.data["text"]
        assert await closed(third) and server.overloaded == 1
        second[1].close()
        async with asyncio.timeout(5):
            while server.connections > 1:
                await asyncio.sleep(0.05)

        # asks and asks, reads nothing: once its replies fill the sockets, it is dropped
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        asks = header("describe") * 20_000
        sent = 0
        async with asyncio.timeout(20):
            while server.connections < 2:
                await asyncio.sleep(0.01)
            while server.connections == 2:
                try:
                    sent += sock.send(asks[sent % len(asks):])
                except BlockingIOError:
                    await asyncio.sleep(0.05)
                except ConnectionError:
                    break
        sock.close()
        assert any("write_timeout" in r.getMessage() for r in caplog.records)
        first[1].write(header("describe"))  # the other client was never held up
        assert (await reply(first)) is not None
        first[1].close()
        await served(server)


async def test_a_client_hanging_up_is_one_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(wyoming_server, "LOG_INTERVAL_S", 0.0)  # each hang-up logged
    pcm = read_wav_file(FIXTURES / "commands" / "on_kitchen.wav")
    chunk = {"rate": 16000, "width": 2, "channels": 1}
    async with voiced_wyoming(tmp_path) as server:
        # gone in the middle of a payload
        conn = await connect(server)
        conn[1].write(header("audio-chunk", data=chunk, payload_length=1000) + bytes(10))
        await conn[1].drain()
        conn[1].close()
        # gone (reset) before its transcript is written
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(header("transcribe") + header("audio-start", data=chunk) +
                     header("audio-chunk", data=chunk, payload_length=len(pcm)) + pcm +
                     header("audio-stop"))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        async with asyncio.timeout(30):
            while server.connections or sum(
                    "hung_up" in r.getMessage() for r in caplog.records) < 2:
                await asyncio.sleep(0.05)
        await served(server)
    hung_up = [r for r in caplog.records if "hung_up" in r.getMessage()]
    assert len(hung_up) == 2 and all(r.levelno == logging.INFO for r in hung_up)
    assert not any(r.exc_info for r in caplog.records)
    no_errors_logged(caplog)


async def test_refused_events_are_logged_at_a_bounded_rate(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with voiced_wyoming(tmp_path) as server:
        conn = await connect(server)
        bad = header("audio-chunk", data={"rate": 16000, "width": 2, "channels": 1},
                     payload_length=3) + b"\0\0\0"
        conn[1].write(bad * 500)
        for _ in range(500):
            event = await reply(conn)
            assert event is not None and event.data["code"] == "audio_partial_frame"
        conn[1].close()
        assert server.service.errors == 500
    lines = [r for r in caplog.records if "audio_partial_frame" in r.getMessage()]
    assert 1 <= len(lines) <= 3, len(lines)
    assert server.service.logs_suppressed >= 497
