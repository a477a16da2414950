"""The REST API against a real daemon: real mosquitto, real pocketsphinx on the espeak-ng
fixtures, real SQLite history with kept audio, a real aiohttp server on a free port and a
real client. Every endpoint, the formats it decodes, the errors it gives for bad input,
and handlers that really act (a message seen on the broker)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import numpy as np
import pytest
import soundfile
from support import FIXTURES, REPO, Mosquitto, make_config, running_daemon

from voiced.asr.service import asr_intents, create_transcriber
from voiced.audio.wav import build_wav, read_wav_file
from voiced.commands.transcribe import transcribe_pcm
from voiced.const import SAMPLE_RATE
from voiced.http.openapi import spec
from voiced.satellite import Satellite

pytestmark = pytest.mark.slow

ON_KITCHEN = FIXTURES / "commands" / "on_kitchen.wav"
TIMER = FIXTURES / "commands" / "timer_5m.wav"
HANDLERS = [{"intent": "HassTurnOn", "plugin": "mqtt_publish",
             "options": {"topic": "home/{area}/light/set",
                         "payload": {"state": "on", "site": "{site}"}}}]


@asynccontextmanager
async def served(tmp_path: Path, port: int, **sections: Any
                 ) -> AsyncIterator[tuple[Any, str, aiohttp.ClientSession]]:
    """A daemon with the HTTP server on a free port, and a client for it."""
    sections.setdefault("handlers", HANDLERS)
    config = make_config(tmp_path, port, asr={"processes": 1}, **sections)
    async with running_daemon(config) as daemon, aiohttp.ClientSession() as http:
        yield daemon, f"http://127.0.0.1:{daemon.http.port}", http


async def call(http: aiohttp.ClientSession, method: str, url: str,
               **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json()


def encode(pcm: bytes, fmt: str, rate: int = SAMPLE_RATE, channels: int = 1,
           subtype: str | None = None) -> bytes:
    """Internal-format PCM as another file format, rate and channel count."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    if rate != SAMPLE_RATE:
        at = np.arange(int(len(samples) * rate / SAMPLE_RATE)) * SAMPLE_RATE / rate
        samples = np.interp(at, np.arange(len(samples)), samples)
    if channels > 1:
        samples = np.repeat(samples[:, None], channels, axis=1)
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def _cli_line(daemon: Any, pcm: bytes) -> dict[str, Any]:
    config = daemon.config
    transcriber = create_transcriber(config.asr, asr_intents(daemon.recognizer),
                                     config.state_dir)
    transcriber.load()
    try:
        return transcribe_pcm(transcriber, daemon.recognizer, pcm, config.asr.min_confidence,
                              {"site": "default", "speaker": "unknown"})
    finally:
        transcriber.close()


def files_form(files: list[tuple[str, bytes, str]], **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    for name, data, ctype in files:
        form.add_field("file", data, filename=name, content_type=ctype)
    return form


async def next_message(peer: aiomqtt.Client) -> tuple[str, Any]:
    async with asyncio.timeout(10):
        async for msg in peer.messages:
            return msg.topic.value, json.loads(msg.payload)  # type: ignore[arg-type]
    raise AssertionError("no message")


async def test_transcribe_is_the_cli_result_for_every_format(mosquitto: Mosquitto,
                                                             tmp_path: Path) -> None:
    pcm = read_wav_file(ON_KITCHEN)
    async with served(tmp_path, mosquitto.port) as (daemon, base, http):
        status, body = await call(http, "POST", base + "/api/transcribe",
                                  data=ON_KITCHEN.read_bytes(),
                                  headers={"Content-Type": "audio/wav"})
        assert status == 200
        [result] = body["results"]
        # `voiced transcribe`'s own path on a recognizer loaded as the CLI loads it (a
        # fresh one: pocketsphinx adapts its cepstral mean from one utterance to the next,
        # and this was the daemon's first)
        cli = await asyncio.to_thread(_cli_line, daemon, pcm)
        assert set(result) == {"file", *cli}
        assert {k: result[k] for k in cli if k != "timings"} == \
            {k: v for k, v in cli.items() if k != "timings"}
        assert result["intent"] == "HassTurnOn"
        assert result["slots"] == {"area": "kitchen", "domain": "light"}
        assert set(result["timings"]) == {"asr_ms", "nlu_ms"}

        # several files in one multipart request, in other formats, rates and channels
        timer = read_wav_file(TIMER)
        form = files_form([
            ("kitchen.flac", encode(pcm, "FLAC", 44100, 2), "audio/flac"),
            ("kitchen.ogg", encode(pcm, "OGG", 48000, subtype="VORBIS"), "audio/ogg"),
            ("kitchen.mp3", encode(pcm, "MP3", 22050), "audio/mpeg"),
            ("timer.wav", build_wav(timer), "audio/wav"),
            ("timer.opus", encode(timer, "OGG", 48000, subtype="OPUS"),
             "application/octet-stream"),
        ])
        status, body = await call(http, "POST", base + "/api/transcribe", data=form)
        assert status == 200, body
        got = [(r["file"], r["intent"], r["slots"].get("area")) for r in body["results"]]
        assert got == [("kitchen.flac", "HassTurnOn", "kitchen"),
                       ("kitchen.ogg", "HassTurnOn", "kitchen"),
                       ("kitchen.mp3", "HassTurnOn", "kitchen"),
                       ("timer.wav", "HassStartTimer", None),
                       ("timer.opus", "HassStartTimer", None)]

        # raw PCM: big-endian as RFC 3551 defines L16, or little-endian when it says so
        big = np.frombuffer(pcm, dtype="<i2").astype(">i2").tobytes()
        status, body = await call(http, "POST", base + "/api/transcribe?intents=false",
                                  data=big, headers={"Content-Type": "audio/L16;rate=16000"})
        assert status == 200
        [text_only] = body["results"]
        assert text_only["text"].endswith("kitchen lights") and text_only["is_speech"]
        assert "intent" not in text_only and "slots" not in text_only
        status, body = await call(http, "POST", base + "/api/transcribe", data=pcm, headers={
            "Content-Type": "audio/L16; rate=16000; channels=1; endian=little"})
        assert status == 200 and body["results"][0]["intent"] == "HassTurnOn"
        # nothing acted and nothing was recorded
        assert daemon.writer.rows == 0
        assert daemon.pipeline.processed == 0


async def test_bad_uploads_get_clear_errors(mosquitto: Mosquitto, tmp_path: Path) -> None:
    wav = ON_KITCHEN.read_bytes()
    silence = np.zeros(SAMPLE_RATE * 30, dtype="<i2").tobytes()
    async with served(tmp_path, mosquitto.port,
                      http={"max_upload_mb": 0.5, "max_audio_s": 20}) as (_, base, http):
        url = base + "/api/transcribe"

        async def error(status: int, **kwargs: Any) -> dict[str, Any]:
            got, body = await call(http, "POST", kwargs.pop("url", url), **kwargs)
            assert got == status, body
            return body["error"]  # type: ignore[no-any-return]

        e = await error(400, data=b"\x00garbage bytes", headers={"Content-Type": "audio/wav"})
        assert e["code"] == "audio_unreadable" and e["field"] == "body"
        assert "not a WAV, FLAC, OGG or MP3 file" in e["message"]
        e = await error(400, data=wav[:60] + b"\xff" * 10,
                        headers={"Content-Type": "audio/wav"})
        assert e["code"] == "audio_unreadable", e
        e = await error(400, data=b"", headers={"Content-Type": "audio/wav"})
        assert e == {"code": "audio_empty", "field": "body",
                     "message": "body: the file is empty; expected WAV, FLAC, OGG or MP3 audio"}
        odd_rate = bytearray(build_wav(b"\x00\x01" * 100))
        odd_rate[24:32] = struct.pack("<II", 12345, 12345 * 2)
        e = await error(400, data=bytes(odd_rate), headers={"Content-Type": "audio/wav"})
        assert "12345 Hz is not supported" in e["message"]
        e = await error(415, data=wav, headers={"Content-Type": "text/plain"})
        assert e["field"] == "Content-Type" and "multipart/form-data" in e["message"]
        e = await error(415, json={"file": "on_kitchen.wav"})
        assert e["code"] == "unsupported_media_type"
        e = await error(400, data=wav, headers={"Content-Type": "audio/L16"})
        assert e["code"] == "audio_format" and "rate=" in e["message"]
        e = await error(400, data=files_form([("notes.txt", b"shopping list", "text/plain")]))
        assert e["field"] == "file" and e["message"].startswith("notes.txt: not a WAV")
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("site", "kitchen")
        e = await error(400, data=form)
        assert e["code"] == "audio_missing"
        e = await error(400, url=url + "?intents=maybe", data=wav,
                        headers={"Content-Type": "audio/wav"})
        assert e["field"] == "intents" and "expected true or false" in e["message"]
        e = await error(400, url=url + "?site=a/b", data=wav,
                        headers={"Content-Type": "audio/wav"})
        assert e["field"] == "site"
        e = await error(400, url=url + "?lang=en", data=wav,
                        headers={"Content-Type": "audio/wav"})
        assert e["code"] == "field_unknown" and e["field"] == "lang"
        # size limits: the body (declared or streamed) and the decoded audio
        big = build_wav(silence[: 600 * 1024])
        limit = 512 * 1024
        e = await error(413, data=big, headers={"Content-Type": "audio/wav"})
        assert e["code"] == "too_large" and e["limit_bytes"] == limit
        assert "0.5 MB limit (http.max_upload_mb)" in e["message"]

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 65536):
                yield big[i:i + 65536]

        e = await error(413, data=chunks(), headers={"Content-Type": "audio/wav"})
        assert e["limit_bytes"] == limit
        e = await error(413, data=files_form([("long.wav", big, "audio/wav")]))
        assert e["code"] == "too_large"
        flac = encode(silence, "FLAC")  # 30 s of silence: a tiny file, too long
        assert len(flac) < limit
        e = await error(413, data=flac, headers={"Content-Type": "audio/flac"})
        assert e["code"] == "audio_too_long" and e["limit_s"] == 20
        # the daemon is unharmed
        status, _ = await call(http, "GET", base + "/api/status")
        assert status == 200


async def test_text_to_intent_runs_real_handlers(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with served(tmp_path, mosquitto.port) as (daemon, base, http), \
            aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
        await peer.subscribe("home/#")
        url = base + "/api/text-to-intent"
        status, body = await call(http, "POST", url, json={
            "text": "turn on the garage lights", "site": "hall", "handle": False})
        assert status == 200, body
        assert body["intent"] == "HassTurnOn" and body["slots"]["area"] == "garage"
        assert body["outcome"] is None and body["handler"] is None
        assert body["session_id"] is None and body["handle"] is False
        status, body = await call(http, "POST", url, json={
            "text": "turn on the kitchen lights", "site": "hall", "speaker": "alice"})
        assert status == 200, body
        assert body["outcome"] == "handled" and body["termination"] == "nominal"
        assert body["handler"]["plugin"] == "mqtt_publish"
        assert body["speaker"] == {"name": "alice", "confidence": 0.0, "claimed": True}
        assert body["transcript"] == {"text": "turn on the kitchen lights", "confidence": 1.0,
                                      "language": "en", "is_speech": True}
        assert "nlu" in body["timings"] and "handler" in body["timings"]
        # the first message on the broker is the handled command's: recognizing only
        # (handle=false) published nothing
        assert await next_message(peer) == ("home/kitchen/light/set",
                                            {"state": "on", "site": "hall"})
        status, body = await call(http, "POST", url, json={"text": "open the pod bay doors"})
        assert status == 200
        assert body["outcome"] == "not_recognized" and body["reason"] == "no_match"
        assert body["intent"] is None and body["termination"] == "intentNotRecognized"

        bad: list[tuple[dict[str, Any], str, str]] = [
            ({"site": "hall"}, "field_missing", "text"),
            ({"text": "   "}, "field_missing", "text"),
            ({"text": 5}, "field_invalid", "text"),
            ({"text": "x" * 2001}, "field_invalid", "text"),
            ({"text": "hi", "hanlde": False}, "field_unknown", "hanlde"),
            ({"text": "hi", "handle": "perhaps"}, "field_invalid", "handle"),
            ({"text": "hi", "site": "#"}, "field_invalid", "site"),
            ({"text": "hi", "language": "!!"}, "field_invalid", "language"),
            ({"text": "hi", "speaker": ["alice"]}, "field_invalid", "speaker"),
        ]
        for payload, code, field in bad:
            status, body = await call(http, "POST", url, json=payload)
            assert status == 400, payload
            assert (body["error"]["code"], body["error"]["field"]) == (code, field), body
        for data in (b"{not json", b"[1, 2]", b"NaN", b"\xff\xfe"):
            status, body = await call(http, "POST", url, data=data,
                                      headers={"Content-Type": "application/json"})
            assert status == 400 and body["error"]["code"] == "json_invalid", data
        status, body = await call(http, "POST", url, data="text=hi",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 415 and body["error"]["field"] == "Content-Type"
        assert daemon.writer.rows == 2  # the handled command and the unrecognized one


async def test_speech_to_intent_history_and_kept_audio(mosquitto: Mosquitto,
                                                       tmp_path: Path) -> None:
    pcm = read_wav_file(ON_KITCHEN)
    async with served(tmp_path, mosquitto.port, history={"keep_audio": True}) as \
            (daemon, base, http), aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
        await peer.subscribe("home/#")
        url = base + "/api/speech-to-intent"
        status, body = await call(http, "POST", url + "?handle=false", data=ON_KITCHEN.read_bytes(),
                                  headers={"Content-Type": "audio/wav"})
        assert status == 200 and body["intent"] == "HassTurnOn" and body["outcome"] is None
        form = files_form([("kitchen.flac", encode(pcm, "FLAC"), "audio/flac")], site="porch")
        status, spoken = await call(http, "POST", url, data=form)
        assert status == 200, spoken
        assert spoken["outcome"] == "handled" and spoken["site"] == "porch"
        assert spoken["transcript"]["text"] == "turn on the kitchen lights"
        assert spoken["speaker"] is None  # speaker identification is off
        assert {"asr", "nlu", "handler"} <= set(spoken["timings"])
        assert await next_message(peer) == ("home/kitchen/light/set",
                                            {"state": "on", "site": "porch"})
        status, body = await call(http, "POST", url + "?speaker=bob", data=ON_KITCHEN.read_bytes(),
                                  headers={"Content-Type": "audio/wav"})
        assert status == 400 and body["error"]["field"] == "speaker"
        two = files_form([("a.wav", build_wav(pcm), "audio/wav"),
                          ("b.wav", build_wav(pcm), "audio/wav")])
        status, body = await call(http, "POST", url, data=two)
        assert status == 400 and body["error"]["code"] == "too_many_files"
        status, typed = await call(http, "POST", base + "/api/text-to-intent",
                                   json={"text": "set a timer for five minutes",
                                         "site": "kitchen"})
        assert status == 200 and typed["intent"] == "HassStartTimer"

        # the history: two rows (recognizing only records nothing), newest first
        status, page = await call(http, "GET", base + "/api/history")
        assert status == 200 and page["total"] == 2 and page["limit"] == 50
        by_session = {item["session_id"]: item for item in page["items"]}
        row = by_session[spoken["session_id"]]
        assert row["site"] == "porch" and row["intent"] == "HassTurnOn"
        assert row["slots"] == {"area": "kitchen", "domain": "light"}
        assert row["outcome"] == "handled" and row["end_reason"] == "upload"
        assert row["audio"] == f"/api/history/{row['id']}/audio" and row["audio_bytes"] > 0
        text_row = by_session[typed["session_id"]]
        assert text_row["audio"] is None and text_row["end_reason"] == "text"

        async def ids(query: str) -> list[int]:
            status, found = await call(http, "GET", base + "/api/history?" + query)
            assert status == 200, found
            return [item["id"] for item in found["items"]]

        assert await ids("site=porch") == [row["id"]]
        assert await ids("intent=HassStartTimer") == [text_row["id"]]
        assert await ids("q=KITCHEN") == [row["id"]]
        assert await ids("outcome=no_handler&site=kitchen") == [text_row["id"]]
        assert await ids("outcome=handled") == [row["id"]]
        assert await ids(f"since={row['started_at'] + 3600}") == []
        assert sorted(await ids("until=2999-01-01T00:00:00")) == sorted(by_session[s]["id"]
                                                                        for s in by_session)
        assert len(await ids("limit=1")) == 1
        status, second = await call(http, "GET", base + "/api/history?limit=1&offset=1")
        assert second["total"] == 2 and len(second["items"]) == 1
        for query, field in (("outcome=great", "outcome"), ("limit=0", "limit"),
                             ("limit=many", "limit"), ("since=yesterday", "since"),
                             ("offset=-1", "offset"), ("color=red", "color")):
            status, body = await call(http, "GET", base + "/api/history?" + query)
            assert status == 400 and body["error"]["field"] == field, (query, body)

        status, one = await call(http, "GET", base + f"/api/history/{row['id']}")
        assert status == 200 and one == row
        async with http.get(base + row["audio"]) as resp:
            assert resp.status == 200 and resp.content_type == "audio/flac"
            kept, rate = soundfile.read(io.BytesIO(await resp.read()), dtype="int16")
        assert rate == SAMPLE_RATE and kept.tobytes() == pcm
        async with http.get(base + row["audio"], headers={"Range": "bytes=0-99"}) as resp:
            assert resp.status == 206 and len(await resp.read()) == 100
        for path, status_code, code in (
                (f"/api/history/{text_row['id']}/audio", 404, "no_audio"),
                ("/api/history/999999", 404, "not_found"),
                ("/api/history/999999/audio", 404, "not_found"),
                ("/api/history/abc", 400, "field_invalid")):
            status, body = await call(http, "GET", base + path)
            assert (status, body["error"]["code"]) == (status_code, code), (path, body)
        # a deleted file is a 404, not a 500
        (daemon.config.state_dir / row_audio_path(daemon, row["id"])).unlink()
        status, body = await call(http, "GET", base + row["audio"])
        assert status == 404 and body["error"]["code"] == "no_audio"


def row_audio_path(daemon: Any, row_id: int) -> str:
    record = daemon.history.get(row_id)
    assert record is not None and record.audio_path
    return str(record.audio_path)


async def test_status_reload_openapi_and_unknown_routes(mosquitto: Mosquitto,
                                                        tmp_path: Path) -> None:
    intents = tmp_path / "intents"
    shutil.copytree(REPO / "config" / "intents", intents)
    async with served(tmp_path, mosquitto.port, intents={"paths": [str(intents)]},
                      sites={"overrides": {"porch": {"area": "porch", "mode": "wake"}}}) as \
            (daemon, base, http):
        async with Satellite("127.0.0.1", mosquitto.port, "kitchen") as sat:
            answer = await sat.command(read_wav_file(ON_KITCHEN), timeout=60)
            assert answer.intent == "HassTurnOn"
            status, body = await call(http, "GET", base + "/api/status")
        assert status == 200
        assert body["state"] == "ready" and body["version"]
        assert body["models"]["asr"]["backend"] == "pocketsphinx"
        assert body["models"]["speakers"] == {"backend": "none"}
        assert body["intents"]["count"] > 5 and body["intents"]["languages"] == ["en"]
        assert body["handlers"] == [{"intent": "HassTurnOn", "plugin": "mqtt_publish",
                                     "ok": True, "error": None}]
        assert body["plugins"][0]["name"] == "mqtt_publish"
        assert body["plugins"][0]["state"] == "running"
        sats = {s["site"]: s for s in body["satellites"]}
        kitchen, porch = sats["kitchen"], sats["porch"]
        assert kitchen["live"] and kitchen["connected"] and kitchen["mode"] == "always"
        assert kitchen["frames"] > 100 and kitchen["dropped"] == 0
        assert -96 <= kitchen["level_dbfs"] < 0 and kitchen["last_heard_s"] < 5
        assert porch == {"site": "porch", "live": False, "connected": False, "mode": "wake",
                         "area": "porch", "last_heard": None, "last_heard_s": None,
                         "level_dbfs": None, "frames": 0, "dropped": 0}
        assert body["arbitration"]["groups"] == {} and body["arbitration"]["decisions"] == 0

        status, body = await call(http, "POST", base + "/api/reload")
        assert status == 200 and body["reloaded"] is True and body["reloads"] == 1
        (intents / "broken.yaml").write_text("language: en\nintents: [oops\n")
        status, body = await call(http, "POST", base + "/api/reload")
        assert status == 422 and body["error"]["code"] == "reload_failed"
        assert "broken.yaml" in body["error"]["message"]
        status, body = await call(http, "GET", base + "/api/status")
        assert "broken.yaml" in body["intents"]["reload_error"]

        # the OpenAPI document lists exactly the registered /api routes
        status, document = await call(http, "GET", base + "/api/openapi.json")
        assert status == 200 and document == json.loads(json.dumps(spec(document["info"]
                                                                          ["version"])))
        app = daemon.http._runner.app
        registered = {(r.resource.canonical, r.method.lower()) for r in app.router.routes()
                      if r.resource is not None and r.resource.canonical.startswith("/api/")
                      and r.method not in ("HEAD", "OPTIONS")}
        described = {(path, method) for path, ops in document["paths"].items()
                     for method in ops}
        assert registered == described
        outcome = document["components"]["schemas"]["HistoryItem"]["properties"]["outcome"]
        assert "arbitration_lost" in outcome["enum"]

        status, body = await call(http, "GET", base + "/api/nothing-here")
        assert status == 404 and body["error"]["code"] == "not_found"
        status, body = await call(http, "DELETE", base + "/api/status")
        assert status == 405 and body["error"]["allowed"] == ["GET", "HEAD"]
        status, body = await call(http, "GET", base + "/api/speakers")
        assert status == 409 and body["error"]["code"] == "speakers_off"
        status, body = await call(http, "POST", base + "/api/speakers/identify",
                                  data=ON_KITCHEN.read_bytes(),
                                  headers={"Content-Type": "audio/wav"})
        assert status == 409


async def test_history_off(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with served(tmp_path, mosquitto.port, history={"enabled": False}) as (_, base, http):
        for path in ("/api/history", "/api/history/1", "/api/history/1/audio"):
            status, body = await call(http, "GET", base + path)
            assert status == 409 and body["error"]["code"] == "history_off", path
