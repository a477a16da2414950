"""The review queue end to end: a real daemon (pocketsphinx, real mosquitto, real SQLite,
kept FLAC audio), a satellite over MQTT and the HTTP API.

A spoken command the intents do not have lands in the queue with its audio; its correction
through the API is offered as a sentence; accepted, it is written to the learned intents
file and reloaded, and the same audio is then understood. "That's not what I said" right
after a command queues that command; the history's button does the same through the API.
A correction that names the speaker adds the audio to their voice profile only when the
voice is theirs (resemblyzer, flite voices).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import soundfile
from support import Mosquitto, make_config, running_daemon

from voiced.audio.wav import read_wav_file
from voiced.satellite import Satellite
from voiced.speakers import voices
from voiced.teach import learned_dir

pytestmark = pytest.mark.slow

HANDLERS = [{"intent": "HassTurnOn", "plugin": "say",
             "options": {"text": "Turning on the {area} lights"}},
            {"intent": "HassTurnOff", "plugin": "say",
             "options": {"text": "Turning off the {area} lights"}}]


def espeak(text: str, out: Path) -> bytes:
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(out), text], check=True, timeout=60)
    return read_wav_file(out)


async def call(http: aiohttp.ClientSession, method: str, url: str,
               **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        body = await resp.json() if "json" in resp.content_type else await resp.read()
        return resp.status, body


def row_of(daemon: Any, session_id: str) -> Any:
    """The history row of a session (rows sort by when their audio started)."""
    rows, _ = daemon.history.query(limit=50)
    return next(r for r in rows if r.session_id == session_id)


@asynccontextmanager
async def served(tmp_path: Path, port: int, **sections: Any) -> AsyncIterator[
        tuple[Any, str, aiohttp.ClientSession]]:
    sections.setdefault("history", {"keep_audio": True})
    config = make_config(tmp_path, port, asr={"processes": 1}, handlers=HANDLERS, **sections)
    async with running_daemon(config) as daemon, aiohttp.ClientSession() as http:
        yield daemon, f"http://127.0.0.1:{daemon.http.port}/api/review", http


async def test_a_correction_is_learned_and_the_same_audio_understood(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    bright = await asyncio.to_thread(espeak, "make the kitchen bright", tmp_path / "b.wav")
    async with served(tmp_path, mosquitto.port) as (daemon, base, http), \
            Satellite("127.0.0.1", mosquitto.port, "kitchen") as sat:
        answer = await sat.command(bright, timeout=60)
        assert answer.intent is None, answer
        status, page = await call(http, "GET", base)
        assert status == 200 and page["total"] == 1 and page["counts"]["pending"] == 1
        (item,) = page["items"]
        assert item["reason"] in ("no_match", "empty", "low_confidence"), item
        assert item["utterance"]["session_id"] == answer.session_id
        assert item["utterance"]["outcome"] == "not_recognized"
        # its audio is the command's
        status, flac = await call(http, "GET", f"http://127.0.0.1:{daemon.http.port}"
                                  + item["audio"])
        assert status == 200
        (tmp_path / "got.flac").write_bytes(flac)
        info = soundfile.info(str(tmp_path / "got.flac"))
        assert info.samplerate == 16000 and abs(info.duration - len(bright) / 32000) < 1.5

        status, known = await call(http, "GET", base + "/intents")
        slots = {i["name"]: i["slots"] for i in known["intents"]}
        assert slots["HassTurnOn"] == ["area", "domain"] and "VoicedNotWhatISaid" in slots

        correction = {"text": "make the kitchen bright", "intent": "HassTurnOn",
                      "slots": {"area": "kitchen", "domain": "light"}, "by": "ann"}
        status, done = await call(http, "POST", f"{base}/{item['id']}/correction",
                                  json=correction)
        assert status == 200, done
        assert done["item"]["status"] == "corrected" and done["item"]["decided_by"] == "ann"
        assert done["item"]["decided_via"].startswith("http 127.0.0.1")
        assert done["item"]["correction"]["slots"] == {"area": "kitchen", "domain": "light"}
        # the sentence is offered; what else is (an alias for a word the recognizer
        # misheard) depends on what it heard, so only the sentence is required here
        (proposal,) = [p for p in done["proposals"] if p["kind"] == "sentence"]
        assert (proposal["sentence"], proposal["status"]) == ("make the kitchen bright",
                                                              "pending")
        assert all(p["kind"] == "alias" for p in done["proposals"] if p is not proposal)
        status, page = await call(http, "GET", base)
        assert page["items"] == [] and page["counts"] == {"pending": 0, "corrected": 1,
                                                          "discarded": 0}
        status, offered = await call(http, "GET", base + "/proposals")
        assert {p["id"] for p in offered["proposals"]} == {p["id"] for p in done["proposals"]}

        reloads = daemon.reloads
        status, accepted = await call(http, "POST",
                                      f"{base}/proposals/{proposal['id']}/accept",
                                      json={"by": "ann"})
        assert status == 200, accepted
        assert accepted["proposal"]["status"] == "accepted" and daemon.reloads == reloads + 1
        assert (learned_dir(daemon.config.state_dir) / "sentences-en.yaml").is_file()
        status, again = await call(http, "POST", f"{base}/proposals/{proposal['id']}/accept")
        assert status == 409 and again["error"]["code"] == "already_decided"

        # the same audio, now understood: the grammar was rebuilt with the new sentence
        answer = await sat.command(bright, timeout=60)
        assert (answer.intent, answer.slots.get("area")) == ("HassTurnOn", "kitchen"), answer
        assert answer.said == ["Turning on the kitchen lights"]


async def test_marked_wrong_by_voice_and_by_the_history_button(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    off = await asyncio.to_thread(espeak, "turn off the kitchen lights", tmp_path / "off.wav")
    wrong = await asyncio.to_thread(espeak, "that's not what i said", tmp_path / "wrong.wav")
    async with served(tmp_path, mosquitto.port) as (daemon, base, http), \
            Satellite("127.0.0.1", mosquitto.port, "hall") as sat:
        # nothing before it on this site: said, refused, nothing queued
        answer = await sat.command(wrong, timeout=60)
        assert answer.said == ["I don't have a recent command from here to look at."], answer
        handled = await sat.command(off, timeout=60)
        assert handled.intent == "HassTurnOff"
        answer = await sat.command(wrong, timeout=60)
        assert answer.intent is None and answer.said == [
            "Sorry about that. I put it in the review queue."], answer
        status, page = await call(http, "GET", base)
        (item,) = page["items"]
        assert item["reason"] == "marked_wrong"
        assert item["utterance"]["session_id"] == handled.session_id
        rows, _ = daemon.history.query(site="hall", limit=1)
        assert rows[0].intent == "VoicedNotWhatISaid" and rows[0].outcome == "handled"

        # the history's button: a handled spoken command, then one already queued, a typed one
        status, run = await call(http, "POST", base.replace("/review", "/speech-to-intent"),
                                 data=(tmp_path / "off.wav").read_bytes(),
                                 headers={"Content-Type": "audio/wav"})
        assert run["intent"] == "HassTurnOff"
        uploaded = row_of(daemon, run["session_id"])
        status, body = await call(http, "POST", base, json={"utterance": uploaded.id,
                                                            "by": "ann"})
        assert status == 201 and body["reason"] == "marked_wrong", body
        status, body = await call(http, "POST", base, json={"utterance": uploaded.id})
        assert status == 200 and body["id"] != item["id"]
        _, run = await call(http, "POST", base.replace("/review", "/text-to-intent"),
                            json={"text": "turn on the office lights"})
        typed = row_of(daemon, run["session_id"])
        status, body = await call(http, "POST", base, json={"utterance": typed.id})
        assert status == 409 and body["error"]["code"] == "no_audio"

        # discarded: out of the queue, its audio deleted
        status, body = await call(http, "POST", f"{base}/{item['id']}/discard")
        assert status == 200 and body["status"] == "discarded" and body["audio"] is None
        status, body = await call(http, "GET", f"{base}/{item['id']}/audio")
        assert status == 404 and body["error"]["code"] == "no_audio"
        status, body = await call(http, "POST", f"{base}/{item['id']}/correction",
                                  json={"text": "x", "not_command": True})
        assert status == 409 and body["error"]["code"] == "discarded"

        # hostile input: each refused with the field named, nothing changes
        queued = (await call(http, "GET", base))[1]["items"][0]["id"]
        correction = f"{base}/{queued}/correction"
        for url, payload, field in (
                (correction, {"text": "x", "intent": "HassTurnOn", "slots": [1]}, "slots"),
                (correction, {"text": "x", "intent": "Nope"}, "intent"),
                (correction, {"text": "x", "intent": "HassTurnOn",
                              "slots": {"colour": "red"}}, "slots"),
                (correction, {"text": "x", "not_command": "perhaps"}, "not_command"),
                (correction, {"text": "x\u0000y", "not_command": True}, "text"),
                (correction, {"text": "x", "not_command": True, "extra": 1}, "extra"),
                (correction, {"intent": "HassTurnOn"}, "text"),
                (correction, {"text": "x", "not_command": True, "by": "b" * 65}, "by"),
                (base, {"utterance": "one"}, "utterance"),
                (base, {}, "utterance"),
                (base, {"utterance": 10**6}, "utterance")):
            status, body = await call(http, "POST", url, json=payload)
            assert status in (400, 404) and body["error"]["field"] == field, (payload, body)
        status, body = await call(http, "POST", correction, data=b"{",
                                  headers={"Content-Type": "application/json"})
        assert status == 400 and body["error"]["code"] == "json_invalid"
        for path in ("/0", "/abc", "/99999", "/99999/audio", "?status=maybe", "?limit=0"):
            status, body = await call(http, "GET", base + path)
            assert status in (400, 404) and "error" in body, path
        status, body = await call(http, "POST", f"{base}/proposals/123/reject")
        assert status == 404
        status, page = await call(http, "GET", base)
        assert [i["status"] for i in page["items"]] == ["pending"]


async def test_review_off_without_kept_audio(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with served(tmp_path, mosquitto.port, history={"keep_audio": False}) as (
            daemon, base, http):
        assert daemon.review is None
        for method, path in (("GET", ""), ("POST", ""), ("GET", "/1"),
                             ("GET", "/proposals"), ("POST", "/1/correction")):
            status, body = await call(http, method, base + path, json={})
            assert status == 409 and body["error"]["code"] == "review_off", path
        # "that's not what I said" is not an intent then
        result = await daemon.pipeline.handle_text("that's not what i said")
        assert result.intent.name is None


async def test_a_correction_adds_to_the_speakers_profile_only_in_their_voice(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    cache = tmp_path / "voices"
    awb, awb_test = await asyncio.to_thread(
        voices.enrollment_and_test, voices.ALL_VOICES["flite-awb"], cache, 3, 1)
    _, slt_test = await asyncio.to_thread(
        voices.enrollment_and_test, voices.ALL_VOICES["flite-slt"], cache, 1, 1)
    async with served(tmp_path, mosquitto.port, speakers={"backend": "resemblyzer"}) as (
            daemon, base, http):
        root = base.replace("/review", "")
        form = aiohttp.FormData()
        form.add_field("name", "alice")
        for path in awb:
            form.add_field("file", path.read_bytes(), filename=path.name,
                           content_type="audio/wav")
        status, body = await call(http, "POST", root + "/speakers", data=form)
        assert status == 201, body
        items = []
        for path in (awb_test[0], slt_test[0]):  # alice, then a stranger
            _, run = await call(http, "POST", root + "/speech-to-intent",
                                data=path.read_bytes(), headers={"Content-Type": "audio/wav"})
            row = row_of(daemon, run["session_id"])
            status, item = await call(http, "POST", base, json={"utterance": row.id})
            assert status in (200, 201), item  # not understood: it was queued already
            items.append(item["id"])
        results = []
        for item_id in items:
            status, done = await call(http, "POST", f"{base}/{item_id}/correction", json={
                "text": "a sentence for the profile", "not_command": True,
                "speaker": "alice", "add_to_profile": True})
            assert status == 200, done
            results.append(done["profile"])
            assert done["item"]["correction"]["profile"] == done["profile"]
        assert results[0] == "added to alice's profile (4 samples)", results
        assert results[1].startswith("refused: the voice was identified as "), results
        status, people = await call(http, "GET", root + "/speakers")
        assert people["speakers"][0]["samples"] == 4
