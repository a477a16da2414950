"""A hostile or unlucky client against a real daemon's HTTP server, over real sockets.

Connections that send their headers or body too slowly are closed; bodies with a
Content-Encoding are refused before anything is inflated; a JSON body in an unknown
charset is a 415, not a 500; names with invisible format characters are refused; a
client that hangs up or speaks malformed HTTP leaves one quiet log line, not an ERROR
traceback.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import Mosquitto, make_config, running_daemon

from voiced.audio.wav import build_wav
from voiced.http import server

WAIT_S = 20


@pytest.fixture
async def daemon(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Any]:
    config = make_config(tmp_path, mosquitto.port, asr={"processes": 1})
    async with running_daemon(config) as running:
        yield running


def _base(daemon: Any) -> str:
    return f"http://127.0.0.1:{daemon.http.port}"


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    async with asyncio.timeout(WAIT_S):
        return await reader.read()


async def test_slow_headers_and_bodies_are_cut_off(mosquitto: Mosquitto, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "HEADERS_TIMEOUT_S", 1.0)  # read when the app is built
    monkeypatch.setattr(server, "BODY_TIMEOUT_S", 1.0)
    async with running_daemon(make_config(tmp_path, mosquitto.port)) as daemon:
        await _slow_clients(daemon)


async def _slow_clients(daemon: Any) -> None:
    port = daemon.http.port
    head = f"Host: 127.0.0.1:{port}\r\nContent-Length: 1000\r\n"
    sends = {
        "nothing": b"",
        "half a header block": b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A",
        "a partial JSON body": (f"POST /api/text-to-intent HTTP/1.1\r\n{head}"
                                "Content-Type: application/json\r\n\r\n").encode() + b'{"text": ',
        "a partial WAV body": (f"POST /api/transcribe HTTP/1.1\r\n{head}"
                               "Content-Type: audio/wav\r\n\r\n").encode() + build_wav(bytes(64)),
    }
    opened = {what: await asyncio.open_connection("127.0.0.1", port) for what in sends}
    for what, data in sends.items():
        opened[what][1].write(data)
    loop = asyncio.get_running_loop()
    started = loop.time()
    answers = {what: await _answer(reader) for what, (reader, _) in opened.items()}
    assert loop.time() - started < 10, "the slow connections were held"
    assert answers["nothing"] == answers["half a header block"] == b""
    for what in ("a partial JSON body", "a partial WAV body"):
        status, _, body = answers[what].partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 408"), (what, answers[what][:200])
        assert json.loads(body)["error"]["code"] == "body_timeout", what
    for _, writer in opened.values():
        writer.close()
    async with aiohttp.ClientSession() as http, http.get(_base(daemon) + "/api/status") as resp:
        assert resp.status == 200


async def test_encoded_bodies_and_unknown_charsets_are_refused(daemon: Any) -> None:
    base = _base(daemon)
    bomb = gzip.compress(json.dumps({"text": "a" * 30_000_000}).encode())  # 30 MB inflated
    deflated = zlib.compress(b'{"text": "what time is it"}')
    async with aiohttp.ClientSession() as http:
        for path, body, encoding, ctype in (
                ("/api/text-to-intent", bomb, "gzip", "application/json"),
                ("/api/text-to-intent", deflated, "deflate", "application/json"),
                ("/api/text-to-intent", b'{"text": "hi"}', "gzip", "application/json"),
                ("/api/transcribe", b"not gzip at all", "gzip", "audio/wav"),
                ("/api/speech-to-intent", b"not gzip at all", "deflate", "audio/wav"),
                ("/api/transcribe", b"junk", "br", "audio/wav")):
            async with http.post(base + path, data=body, headers={
                    "Content-Encoding": encoding, "Content-Type": ctype}) as resp:
                assert resp.status == 415, (path, encoding, resp.status)
                error = (await resp.json())["error"]
                assert error["field"] == "Content-Encoding", error
                assert encoding in error["message"]
        async with http.post(base + "/api/text-to-intent", data=b'{"text": "hi"}', headers={
                "Content-Type": "application/json; charset=bogus-xyz"}) as resp:
            assert resp.status == 415
            error = (await resp.json())["error"]
            assert error["field"] == "Content-Type" and "bogus-xyz" in error["message"]
        # identity is no encoding at all
        async with http.post(base + "/api/text-to-intent", json={"text": "what time is it",
                                                                 "handle": False},
                             headers={"Content-Encoding": "identity"}) as resp:
            assert resp.status == 200, await resp.text()


async def test_names_with_invisible_format_characters_are_refused(daemon: Any) -> None:
    base = _base(daemon)
    async with aiohttp.ClientSession() as http:
        for name in ("\u202egnp.exe", "ali\u200bce", "bob\u2066"):
            async with http.post(base + "/api/text-to-intent", json={
                    "text": "what time is it", "speaker": name, "handle": False}) as resp:
                assert resp.status == 400, name
                error = (await resp.json())["error"]
                assert error["field"] == "speaker", error
                assert "invisible format character U+" in error["message"], error
        async with http.post(base + "/api/text-to-intent", json={
                "text": "what time is it", "speaker": "Zoë O'Neil", "handle": False}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["speaker"]["name"] == "Zoë O'Neil"


async def test_hang_ups_and_malformed_http_are_one_quiet_line(
        daemon: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    port = daemon.http.port
    # a client that sends half a body and hangs up
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /api/transcribe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Content-Type: audio/wav\r\nContent-Length: 100000\r\n\r\n".encode()
                     + build_wav(bytes(640)))
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading the body
        writer.transport.abort()
    # malformed requests: a header too long, too many headers, a bad byte
    for bad in (f"X-Long: {'a' * 9000}\r\n",
                "".join(f"X-{i}: 1\r\n" for i in range(200)),
                "Cookie: a=\x01b\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{bad}\r\n"
                     .encode("latin-1"))
        assert (await _answer(reader)).split(b" ", 2)[1] == b"400"
        writer.close()
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/api/status") as resp:
        assert resp.status == 200  # and every line about the above is written by now
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [(r.name, r.levelname, r.getMessage()) for r in loud]
    quiet = [r.getMessage() for r in caplog.records if r.name == "aiohttp.server"]
    assert all("\n" not in m and len(m) < 400 for m in quiet), quiet
    assert sum("hung up" in m for m in quiet) == 3, quiet
    assert sum("malformed HTTP" in m for m in quiet) == 3, quiet
