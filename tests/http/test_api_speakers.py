"""Speakers over HTTP against a real daemon with resemblyzer: enroll from uploaded flite
recordings of real speakers (quality checked, all or nothing), list, identify, speak a
command and be identified, remove."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from support import Mosquitto, make_config, running_daemon

from voiced.audio.wav import build_wav
from voiced.const import SAMPLE_RATE
from voiced.speakers import voices

pytestmark = pytest.mark.slow


def _form(files: list[Path | tuple[str, bytes]], **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    for f in files:
        name, data = (f.name, f.read_bytes()) if isinstance(f, Path) else f
        form.add_field("file", data, filename=name, content_type="audio/wav")
    return form


async def _call(http: aiohttp.ClientSession, method: str, url: str,
                **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json()


def _recordings(tmp_path: Path) -> tuple[list[Path], Path, Path, Path]:
    """Alice (flite awb): 3 enrollment sentences, a test sentence and a command; a
    stranger (flite slt): a test sentence."""
    cache = tmp_path / "voices"
    awb, awb_test = voices.enrollment_and_test(voices.ALL_VOICES["flite-awb"], cache, 3, 1)
    _, slt_test = voices.enrollment_and_test(voices.ALL_VOICES["flite-slt"], cache, 1, 1)
    command = tmp_path / "command.wav"
    subprocess.run(["flite", "-voice", "awb", "-t", "turn on the kitchen lights", "-o",
                    str(command)], check=True, timeout=60)
    return awb, awb_test[0], slt_test[0], command


async def test_enroll_list_identify_remove(mosquitto: Mosquitto, tmp_path: Path) -> None:
    awb, awb_probe, slt_probe, command = await asyncio.to_thread(_recordings, tmp_path)
    config = make_config(tmp_path, mosquitto.port, asr={"processes": 1},
                         speakers={"backend": "resemblyzer"})
    async with running_daemon(config) as daemon, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{daemon.http.port}/api/speakers"
        status, body = await _call(http, "GET", base)
        assert status == 200 and body["speakers"] == []
        assert body["model"].startswith("resemblyzer") and 0 < body["threshold"] < 1
        assert len(body["prompts"]) >= 3 and body["recommended_samples"] == 3

        # a bad sample refuses the whole enrollment, with each sample's verdict
        quiet = np.zeros(SAMPLE_RATE * 2, dtype="<i2").tobytes()
        status, body = await _call(http, "POST", base, data=_form(
            [awb[0], ("silence.wav", build_wav(quiet))], name="alice"))
        assert status == 422, body
        assert body["error"]["code"] == "quality_check_failed" and body["stored"] == 0
        assert "silence.wav" in body["error"]["message"]
        good, bad = body["samples"]
        assert good["ok"] and good["file"] == awb[0].name and good["problems"] == []
        assert not bad["ok"] and bad["problems"][0]["code"] == "too_little_speech"
        assert bad["speech_dbfs"] is None  # no speech: -inf is not JSON
        status, body = await _call(http, "GET", base)
        assert body["speakers"] == []
        for form, field in ((_form(awb[:1], name="unknown"), "name"),
                            (_form(awb[:1], name="a/b"), "name"),
                            (_form(awb[:1]), "name"),
                            (_form(awb[:1], name="alice", force="sometimes"), "force")):
            status, body = await _call(http, "POST", base, data=form)
            assert status == 400 and body["error"]["field"] == field, body

        status, body = await _call(http, "POST", base, data=_form(awb, name="alice"))
        assert status == 201, body
        assert (body["name"], body["stored"], body["total"]) == ("alice", 3, 3)
        assert body["warning"] is None and all(s["ok"] for s in body["samples"])
        status, body = await _call(http, "GET", base)
        [alice] = body["speakers"]
        assert alice["name"] == "alice" and alice["samples"] == 3
        assert not alice["needs_reenrollment"] and alice["enrolled_at"] > 0

        status, body = await _call(http, "POST", base + "/identify",
                                   data=_form([awb_probe, slt_probe]))
        assert status == 200, body
        me, stranger = body["results"]
        assert me["file"] == awb_probe.name and me["speaker"] == "alice"
        assert stranger["speaker"] == "unknown" and "alice" in stranger["scores"]
        # the daemon's pipeline knows her at once: a spoken command is hers
        status, body = await _call(http, "POST", base.replace("speakers", "speech-to-intent"),
                                   data=command.read_bytes(),
                                   headers={"Content-Type": "audio/wav"})
        assert status == 200, body
        assert body["speaker"]["name"] == "alice" and body["speaker"]["claimed"] is False
        assert body["intent"] == "HassTurnOn"

        status, body = await _call(http, "DELETE", base + "/alice")
        assert status == 200 and body["name"] == "alice" and body["vectors"] >= 3
        status, body = await _call(http, "DELETE", base + "/alice")
        assert status == 404 and body["error"]["field"] == "name"
        status, body = await _call(http, "GET", base)
        assert body["speakers"] == []
