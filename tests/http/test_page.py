"""The web page in real headless Chromium against a real daemon and a real mosquitto.

Chromium is Debian's package, driven by Playwright; its fake microphone plays a spoken
fixture. Try it hears the command through the browser microphone and /api/stream and
shows the intent (and understands typed text and an uploaded file); Live shows a
satellite's command streamed over MQTT as it happens; History finds it and plays its
kept audio; a person is enrolled from sentences recorded in the browser, identified,
refused when a recording fails the quality check, and removed; Status shows handlers,
plugins and errors as they happen; off loopback the page works after /login. Without a
daemon: the page's files and headers, and its 16 kHz resampler run in Chromium.
Screenshots are kept (their paths are printed; `VOICED_ARTIFACTS=DIR` keeps them there).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import numpy as np
import pytest
import yaml
from aiohttp import web
from browser import (
    DESKTOP,
    PHONE,
    WAIT_MS,
    PageUnderTest,
    artifacts,
    chromium,
    fake_mic_wav,
    open_page,
)
from playwright.async_api import expect
from support import FIXTURES, Mosquitto, make_config, running_daemon
from yarl import URL

from voiced.audio.wav import parse_wav, read_wav_file
from voiced.const import BYTES_PER_SECOND, SAMPLE_RATE
from voiced.http import page as page_routes
from voiced.satellite import Satellite
from voiced.speakers import voices

MANIFEST = yaml.safe_load((FIXTURES / "commands.yaml").read_text())
COMMANDS = {e["file"]: e for e in MANIFEST["commands"]}
KITCHEN = COMMANDS["commands/on_kitchen.wav"]
OFFICE_OFF = COMMANDS["commands/off_office.wav"]
HANDLERS = [{"intent": "HassTurnOn", "plugin": "say",
             "options": {"text": "Turning on the {area} lights"}},
            {"intent": "HassTurnOff", "plugin": "say",
             "options": {"text": "Turning off the {area} lights"}}]


def _url(daemon: Any, view: str = "") -> str:
    return f"http://127.0.0.1:{daemon.http.port}/{'#' + view if view else ''}"


def _shots(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    return artifacts(tmp_path, request.node.name)


@pytest.mark.slow
async def test_try_it_hears_the_microphone_text_and_files(
        mosquitto: Mosquitto, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # a patient endpoint: letting go (below) always comes before the VAD's end of speech
    config = make_config(tmp_path, mosquitto.port, handlers=HANDLERS,
                         vad={"end_silence_ms": 1500})
    mic = fake_mic_wav(read_wav_file(FIXTURES / KITCHEN["file"]), tmp_path / "mic.wav")
    async with running_daemon(config) as daemon, chromium(mic) as browser, \
            open_page(browser, _url(daemon, "try"), _shots(tmp_path, request), PHONE) as p:
        page = p.page
        site = await page.input_value("#try-site")
        assert site.startswith("browser-")
        # a tap: listen until the VAD hears the end of the command
        await page.click("#talk")
        voice = page.locator("#try-result .utt[data-kind='voice']")
        await expect(voice.locator(".outcome")).to_have_text("handled", timeout=WAIT_MS)
        await expect(voice.locator(".intent")).to_have_text("HassTurnOn")
        await expect(voice.locator(".chip[data-slot='area']")).to_have_text("area=kitchen")
        await expect(voice.locator(".heard")).to_contain_text("kitchen")
        await expect(voice.locator(".answer")).to_have_text("Turning on the kitchen lights")
        await expect(page.locator("#talk")).to_have_attribute("data-state", "idle")
        await p.shot("try-voice")

        # held down: letting go mid-sentence stops listening and what was said is processed
        talk = await page.locator("#talk").bounding_box()
        assert talk is not None
        await page.mouse.move(talk["x"] + talk["width"] / 2, talk["y"] + talk["height"] / 2)
        await page.mouse.down()
        await expect(page.locator("#talk")).to_have_attribute("data-state", "listening")
        await expect(voice).to_have_count(2)
        # let go once the recognizer has heard a word (a blip shorter than vad.min_speech_ms
        # would be dropped as no speech at all)
        await expect(voice.first.locator(".heard.partial")).to_have_text(
            re.compile(r"^(?!listening)\S+"), timeout=WAIT_MS)
        await page.mouse.up()
        await expect(voice.first.locator(".outcome")).to_have_count(1, timeout=WAIT_MS)
        await expect(page.locator("#talk")).to_have_attribute("data-state", "idle")

        await page.fill("#text-input", "turn off the office lights")
        await page.press("#text-input", "Enter")
        typed = page.locator("#try-result .utt[data-kind='text']")
        await expect(typed.locator(".intent")).to_have_text("HassTurnOff")
        await expect(typed.locator(".chip[data-slot='area']")).to_have_text("area=office")
        await expect(typed.locator(".answer")).to_have_text("Turning off the office lights")

        await page.set_input_files("#file-input", str(FIXTURES / OFFICE_OFF["file"]))
        await page.click("#file-transcribe")
        transcribed = page.locator("#try-result .utt[data-kind='file']")
        await expect(transcribed.locator(".heard")).to_have_text(OFFICE_OFF["text"])
        await page.uncheck("#try-handle")
        await page.click("#file-command")
        await expect(transcribed).to_have_count(2)
        await expect(transcribed.first.locator(".intent")).to_have_text("HassTurnOff")
        await expect(transcribed.first.locator(".outcome")).to_contain_text(
            "not handled (would run HassTurnOff)")
        await p.shot("try-text-and-files")
        assert await p.fits_width(), "the Try it view scrolls sideways on a phone"
        assert not p.errors, p.errors
        # the tab was a satellite: its spoken command is in the history under its site,
        # after the typed one (text entry uses the same site)
        records, _ = daemon.history.query(site=site)
        assert [(r.outcome, r.end_reason) for r in records] == [
            ("handled", "text"), (records[1].outcome, "stop_listening"), ("handled", "silence")]
        assert [records[0].intent, records[2].intent] == ["HassTurnOff", "HassTurnOn"]


@pytest.mark.slow
async def test_live_shows_a_satellite_and_history_plays_it(
        mosquitto: Mosquitto, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    config = make_config(tmp_path, mosquitto.port, handlers=HANDLERS,
                         history={"keep_audio": True},
                         sites={"overrides": {"hall": {"area": "hallway"}}})
    async with running_daemon(config) as daemon, chromium() as browser, \
            open_page(browser, _url(daemon), _shots(tmp_path, request), DESKTOP) as p:
        page = p.page
        await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        # a satellite named in the config has its card before it is heard
        card = page.locator(".card.site[data-site='hall']")
        await expect(card.locator(".badge.area")).to_have_text("hallway")
        async with Satellite("127.0.0.1", mosquitto.port, "hall") as sat:
            answer = await sat.command(read_wav_file(FIXTURES / KITCHEN["file"]), timeout=60)
        assert answer.intent == "HassTurnOn", answer
        utt = card.locator(f".utt[data-session='{answer.session_id}']")
        await expect(utt.locator(".heard")).to_have_text(answer.text or "")
        await expect(utt.locator(".intent")).to_have_text("HassTurnOn")
        await expect(utt.locator(".answer")).to_have_text(answer.said[0])
        await expect(utt.locator(".outcome")).to_have_text("handled")
        await expect(card.locator(".badge.mode")).to_have_text("always")
        await p.shot("live")

        # one that matches nothing, typed: the history says why
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{_url(daemon)}api/text-to-intent",
                                 json={"text": "what a lovely day", "site": "hall"}) as r:
                assert r.status == 200, await r.text()
        await page.click("nav a[href='#history']")
        rows = page.locator("#history-rows .history-row")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0).locator(".outcome")).to_have_text("no match")
        outcome = page.locator("#history-form select[name='outcome']")
        await outcome.select_option("not_recognized")
        await expect(rows).to_have_count(1)
        await expect(rows.first.locator(".col-text")).to_have_text("what a lovely day")
        await outcome.select_option("")
        await expect(rows).to_have_count(2)
        await page.fill("#history-form input[name='q']", "kitchen")
        await page.press("#history-form input[name='q']", "Enter")
        await expect(rows).to_have_count(1)
        row = rows.first
        await expect(row.locator(".intent")).to_contain_text("HassTurnOn")
        await expect(row.locator(".outcome")).to_have_text("handled")
        await row.click()
        detail = page.locator(".history-detail")
        for stage in ("vad", "asr", "nlu", "handler", "processing"):
            await expect(detail.locator(f".chart-row[data-stage='{stage}']")).to_have_count(1)
        audio = detail.locator("audio.utterance-audio")
        await expect(audio).to_have_count(1)
        await page.wait_for_function(
            "() => { const a = document.querySelector('audio.utterance-audio');"
            " return a.readyState >= 1 && a.duration > 0; }", timeout=WAIT_MS)
        duration = await audio.evaluate("a => a.duration")
        spoken = len(read_wav_file(FIXTURES / KITCHEN["file"])) / BYTES_PER_SECOND
        assert 0.5 * spoken < duration < spoken + 3, (duration, spoken)
        await audio.evaluate("a => a.play()")
        await page.wait_for_function(
            "() => document.querySelector('audio.utterance-audio').currentTime > 0.2",
            timeout=WAIT_MS)
        await p.shot("history")
        await page.set_viewport_size(PHONE)
        await p.shot("history-phone")
        assert await p.fits_width(), "the History view scrolls sideways on a phone"
        await page.click("nav a[href='#live']")
        # the satellite is quiet now: its meter falls back to nothing
        await expect(card.locator(".meter-bar")).to_have_attribute(
            "style", re.compile(r"width: 0%"))
        await p.shot("live-phone")
        assert await p.fits_width(), "the Live view scrolls sideways on a phone"
        assert not p.errors, p.errors


@pytest.mark.slow
async def test_live_shows_claimed_names_and_odd_site_ids_as_they_are(
        mosquitto: Mosquitto, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    config = make_config(tmp_path, mosquitto.port)
    async with running_daemon(config) as daemon, chromium() as browser, \
            open_page(browser, _url(daemon, "live"), _shots(tmp_path, request), DESKTOP) as p, \
            aiohttp.ClientSession() as http:
        page = p.page
        await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        # a name given with the text is claimed, never shown as recognised by voice;
        # sites named after Object.prototype keys are sites like any other
        for site in ("constructor", "toString"):
            async with http.post(f"{_url(daemon)}api/text-to-intent", json={
                    "text": "what time is it", "site": site, "speaker": "alice"}) as r:
                assert r.status == 200, await r.text()
        claimed = page.locator(".card.site[data-site='constructor'] .speaker")
        await expect(claimed).to_have_text("claimed: alice")
        await expect(claimed).to_have_attribute("title", "claimed, not identified by voice")
        # audio from another site: only that one is "audio arriving"
        rng = np.random.default_rng(1)
        async with http.ws_connect(f"{_url(daemon)}api/stream") as ws:
            await ws.send_json({"site": "lvl-1"})
            assert (await ws.receive_json(timeout=20))["type"] == "ready"
            streaming = page.locator(".card.site[data-site='lvl-1'] .dot")
            for _ in range(30):
                await ws.send_bytes((rng.normal(0, 3000, 1600)).astype("<i2").tobytes())
                await asyncio.sleep(0.1)
                if await streaming.get_attribute("title") == "audio arriving":
                    break
            await expect(streaming).to_have_attribute("title", "audio arriving")
            # (the same level message set every card)
            for site in ("constructor", "toString"):
                card = page.locator(f".card.site[data-site='{site}']")
                await expect(card).to_have_count(1)
                await expect(card.locator(".dot[title='audio arriving']")).to_have_count(0)
        await p.shot("live-claimed")
        assert not p.errors, p.errors


def _flite_voice(tmp_path: Path) -> bytes:
    """A flite voice reading the enrollment sentences, with pauses between them."""
    wavs, _ = voices.enrollment_and_test(voices.ALL_VOICES["flite-awb"], tmp_path / "voices", 3, 0)
    pause = bytes(int(BYTES_PER_SECOND * 0.4) // 2 * 2)
    return pause.join(read_wav_file(w) for w in wavs)


async def _record(page: Any, take: Any, seconds: float) -> None:
    """Record `seconds` with one take's button (start, wait for the length, stop)."""
    await take.locator("button.record").click()
    await page.wait_for_function(
        "([el, s]) => Number(el.dataset.seconds || 0) >= s",
        arg=[await take.locator(".take-length").element_handle(), seconds], timeout=WAIT_MS)
    await take.locator("button.record").click()
    await expect(take).to_have_attribute("data-recorded", "true")


@pytest.mark.slow
async def test_enrollment_from_the_browser(
        mosquitto: Mosquitto, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    config = make_config(tmp_path, mosquitto.port, speakers={"backend": "resemblyzer"})
    voice = await asyncio.to_thread(_flite_voice, tmp_path)
    mic = fake_mic_wav(voice, tmp_path / "mic.wav", tail_s=0.4)
    async with running_daemon(config) as daemon, chromium(mic) as browser, \
            open_page(browser, _url(daemon, "speakers"), _shots(tmp_path, request), PHONE) as p:
        page = p.page
        await expect(page.locator("#speaker-list")).to_contain_text("Nobody is enrolled yet.")
        prompts = page.locator("#enroll-prompts .prompt")
        await expect(prompts).to_have_count(3)
        for i in range(3):
            await _record(page, prompts.nth(i).locator(".take"), 3.0)
        await page.fill("#enroll-form input[name='name']", "alice")
        await page.click("#enroll")
        await expect(page.locator("#enroll-result .enrolled")).to_contain_text("Enrolled alice")
        await expect(page.locator("#enroll-prompts .verdict .badge.ok")).to_have_count(3)
        await expect(page.locator("#enroll-prompts .verdict-text").first).to_contain_text(
            "s of speech at")
        await expect(page.locator("#speaker-list .person[data-name='alice']")).to_contain_text(
            "3 samples")
        await p.shot("enrolled")

        await _record(page, page.locator("#speakers .take").last, 2.5)
        await expect(page.locator("#identify-result .identified")).to_have_attribute(
            "data-speaker", "alice")

        # a sample far too short fails the quality check: its verdict says so, nothing stored
        await _record(page, prompts.nth(0).locator(".take"), 0.1)
        await page.fill("#enroll-form input[name='name']", "bob")
        await page.click("#enroll")
        await expect(page.locator("#enroll-result .enroll-failed")).to_contain_text(
            "nothing stored for bob")
        first = prompts.nth(0)
        await expect(first).to_have_attribute("data-ok", "false")
        await expect(first.locator(".verdict-text")).to_contain_text("speech")
        await p.shot("enrollment-refused")
        assert [p.name for p in daemon.speakers.store.people(daemon.speakers.model_id)] == [
            "alice"]

        remove = page.locator("#speaker-list .person[data-name='alice'] button")
        await remove.click()
        await expect(remove).to_have_text("Really remove alice?")
        await remove.click()
        await expect(page.locator("#speaker-list")).to_contain_text("Nobody is enrolled yet.")
        assert await p.fits_width(), "the Speakers view scrolls sideways on a phone"
        assert not p.errors, p.errors


@pytest.mark.slow
async def test_status_shows_handlers_plugins_models_and_errors(
        mosquitto: Mosquitto, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    handlers = [*HANDLERS, {"intent": "LockDoor", "plugin": "no_such_plugin"},
                {"intent": "UnlockDoor", "plugin": "home_assistant", "options": {}}]
    config = make_config(tmp_path, mosquitto.port, handlers=handlers)
    async with running_daemon(config) as daemon, chromium() as browser, \
            open_page(browser, _url(daemon, "status"), _shots(tmp_path, request), PHONE) as p:
        page = p.page
        body = page.locator("#status-body")
        await expect(body).to_contain_text("0.1.0")
        await expect(body).to_contain_text("pocketsphinx")
        await expect(body).to_contain_text("webrtcvad")
        failed = page.locator(".grid.handlers tr.failed")
        await expect(failed).to_have_count(2)
        await expect(failed.first).to_contain_text("unknown plugin 'no_such_plugin'")
        await expect(page.locator("#banner")).to_have_text("2 handler(s) disabled (see Status)")
        plugins = page.locator(".grid.plugins tbody tr")
        ha = plugins.filter(has_text="home_assistant")
        await expect(ha.locator("td").nth(1)).to_have_text("config_error")
        await expect(ha.locator("td").nth(2)).to_contain_text("options.service: Field required")
        await expect(plugins.filter(has_text="say")).to_have_count(1)
        await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        # garbage on a satellite's audio topic: the error appears as it happens
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
            await peer.publish("hermes/audioServer/den/audioFrame", b"not a wav file")
        errors = page.locator("#status-errors li")
        await expect(errors.filter(has_text="den")).to_contain_text(
            "audioServer/wav_header hermes/audioServer/den/audioFrame")
        await page.click("#reload")
        await expect(page.locator("#reload-result")).to_contain_text("Reloaded:")
        # the Live view makes no card for a site only heard as garbage
        await page.click("nav a[href='#live']")
        await expect(page.locator(".card.site[data-site='den']")).to_have_count(0)
        await page.click("nav a[href='#status']")
        await p.shot("status")
        assert await p.fits_width(), "the Status view scrolls sideways on a phone"
        assert not p.errors, p.errors


TOKEN_ENV = "VOICED_TEST_PAGE_TOKEN"


@pytest.mark.slow
async def test_page_behind_the_login(mosquitto: Mosquitto, tmp_path: Path, monkeypatch: Any,
                                     request: pytest.FixtureRequest) -> None:
    """Off loopback the browser logs in once; the page's API calls, its POSTs and its
    websockets then go with the session cookie."""
    token = "a-long-random-token-for-the-page-test-0123456789"
    monkeypatch.setenv(TOKEN_ENV, token)
    config = make_config(tmp_path, mosquitto.port, handlers=HANDLERS,
                         http={"host": "0.0.0.0", "port": 0, "token_env": TOKEN_ENV})
    async with running_daemon(config) as daemon, chromium() as browser:
        context = await browser.new_context(viewport=PHONE)
        p = PageUnderTest(await context.new_page(), _shots(tmp_path, request))
        page = p.page
        await page.goto(f"http://127.0.0.1:{daemon.http.port}/#try")
        await expect(page).to_have_url(re.compile(r"/login\?next=%2F(#try)?$"))
        await page.fill("input[name='token']", token)
        await page.click("button[type='submit']")
        await page.wait_for_selector("body[data-ready='true']")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        await page.goto(f"http://127.0.0.1:{daemon.http.port}/#try")
        await page.fill("#text-input", "turn on the kitchen lights")
        await page.press("#text-input", "Enter")
        typed = page.locator("#try-result .utt[data-kind='text']")
        await expect(typed.locator(".answer")).to_have_text("Turning on the kitchen lights")
        await page.click("nav a[href='#status']")
        await expect(page.locator("#status-body")).to_contain_text("token")
        await p.shot("logged-in")
        assert not p.errors, p.errors
        await context.close()


# ---- the page's own files, and the browser's audio path, without a daemon -----------------
@asynccontextmanager
async def _page_server() -> AsyncIterator[str]:
    """Only the page's routes (voiced.http.page), on a free loopback port, plus a blank
    page to run modules in."""
    app = web.Application()
    page_routes.setup(app)

    async def blank(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>blank</title>", content_type="text/html")

    app.router.add_get("/blank", blank)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_page_files_headers_and_nothing_from_elsewhere() -> None:
    static = page_routes.STATIC
    async with _page_server() as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            html = await r.text()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        # everything the page loads is one of its files, served with its type
        wanted = set(re.findall(r'(?:src|href)="/static/([^"]+)"', html))
        for path in static.iterdir():
            wanted.update(re.findall(r'from "\./([^"]+)"', path.read_text()))
        wanted.add("capture-worklet.js")
        assert {"app.js", "style.css", "audio.js", "tryit.js"} <= wanted
        for name in sorted(wanted):
            async with http.get(f"{base}/static/{name}") as r:
                assert r.status == 200, name
                kind = {".js": "text/javascript", ".css": "text/css",
                        ".svg": "image/svg+xml"}[Path(name).suffix]
                assert r.content_type == kind, (name, r.content_type)
        for bad in ("..%2Fpage.py", "%2E%2E/page.py", ".hidden.js", "missing.js", "../page.py",
                    "index.html%00.js"):
            async with http.get(URL(f"{base}/static/{bad}", encoded=True)) as r:
                assert r.status == 404, bad
    # no CDN, no external fonts or scripts: only this server's files
    for path in static.iterdir():
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), path.name


async def test_browser_audio_is_16k_pcm_and_wav(tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    """The page's resampler (static/audio.js) in Chromium: a tone keeps its pitch and level
    at 16 kHz from 48 and 44.1 kHz, a tone above 8 kHz is filtered out, and the WAV it
    uploads parses as 16 kHz 16-bit mono."""
    async with _page_server() as base, chromium() as browser, \
            open_page(browser, f"{base}/blank", _shots(tmp_path, request), ready=False) as p:
        got = await p.page.evaluate("""async () => {
            const { Resampler, wavBlob } = await import("/static/audio.js");
            const run = (freq, rate) => {
              const r = new Resampler(rate);
              const out = [];
              for (let start = 0; start < rate; start += 2048) {
                const block = new Float32Array(Math.min(2048, rate - start));
                for (let i = 0; i < block.length; i++) {
                  block[i] = 0.5 * Math.sin(2 * Math.PI * freq * (start + i) / rate);
                }
                out.push(...r.push(block));
              }
              return out;
            };
            const wav = await wavBlob([Int16Array.of(1, -2), Int16Array.of(32767)]).arrayBuffer();
            return { low48: run(1000, 48000), low44: run(1000, 44100),
                     high48: run(12000, 48000), wav: Array.from(new Uint8Array(wav)) };
        }""")
        assert not p.errors, p.errors
    for key in ("low48", "low44"):
        samples = np.array(got[key], dtype=np.float64)
        assert abs(len(samples) - SAMPLE_RATE) <= 2, (key, len(samples))
        steady = samples[200:-200]
        spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
        peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(steady)
        assert abs(peak_hz - 1000) < 5, (key, peak_hz)
        rms = np.sqrt(np.mean(steady ** 2)) / 32767
        assert abs(rms - 0.5 / np.sqrt(2)) < 0.02, (key, rms)
    high = np.array(got["high48"][200:-200], dtype=np.float64)
    assert np.sqrt(np.mean(high ** 2)) / 32767 < 0.5 / np.sqrt(2) / 100  # below -40 dB
    wav = parse_wav(bytes(got["wav"]))
    assert (wav.rate, wav.width, wav.channels) == (SAMPLE_RATE, 2, 1)
    assert np.frombuffer(wav.pcm, "<i2").tolist() == [1, -2, 32767]
