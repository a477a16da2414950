"""The Review view in real headless Chromium (Debian's, through Playwright) against a real
daemon (pocketsphinx, kept audio) and a real mosquitto.

A satellite's command the intents do not have is in the queue; the history's "That's
wrong" button queues a handled one. Going through them with the keyboard: the first is
played, corrected (text, intent, slots) and saved with Enter; what it teaches is accepted;
the second is discarded with `d`. The same spoken command is then understood. Screenshots
are kept (paths printed; `VOICED_ARTIFACTS=DIR` keeps them there).
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
from browser import DESKTOP, PHONE, WAIT_MS, artifacts, chromium, open_page
from playwright.async_api import expect
from support import Mosquitto, make_config, running_daemon

from voiced.audio.wav import read_wav_file
from voiced.satellite import Satellite

HANDLERS = [{"intent": "HassTurnOn", "plugin": "say",
             "options": {"text": "Turning on the {area} lights"}},
            {"intent": "HassTurnOff", "plugin": "say",
             "options": {"text": "Turning off the {area} lights"}}]


def _espeak(text: str, out: Path) -> bytes:
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(out), text], check=True, timeout=60)
    return read_wav_file(out)


@pytest.mark.slow
async def test_review_with_the_keyboard_and_learn(
        mosquitto: Mosquitto, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    bright = await asyncio.to_thread(_espeak, "make the kitchen bright", tmp_path / "b.wav")
    off = await asyncio.to_thread(_espeak, "turn off the kitchen lights", tmp_path / "o.wav")
    config = make_config(tmp_path, mosquitto.port, asr={"processes": 1}, handlers=HANDLERS,
                         history={"keep_audio": True})
    shots = artifacts(tmp_path, request.node.name)
    async with running_daemon(config) as daemon, \
            Satellite("127.0.0.1", mosquitto.port, "kitchen") as sat:
        missed = await sat.command(bright, timeout=60)
        assert missed.intent is None, missed
        handled = await sat.command(off, timeout=60)
        assert handled.intent == "HassTurnOff", handled
        async with chromium() as browser, open_page(
                browser, f"http://127.0.0.1:{daemon.http.port}/#history", shots,
                DESKTOP) as p:
            page = p.page
            rows = page.locator("#history-rows .history-row")
            await expect(rows).to_have_count(2)
            await rows.filter(has_text="HassTurnOff").click()
            await page.click(".history-detail button.wrong")
            await expect(page.locator(".history-detail .wrong-result")).to_contain_text(
                "In the review queue")

            await page.click("nav a[href='#review']")
            await expect(page.locator("#review-count")).to_have_text("2")
            items = page.locator("#review-list .review-item")
            await expect(items).to_have_count(2)
            await expect(items.nth(0).locator(".reason")).to_have_text("marked wrong")
            # the editor opens on the newest; j moves to the command voiced did not get
            await page.locator("#review-list").click(position={"x": 5, "y": 5})
            await page.keyboard.press("Escape")
            await page.keyboard.press("j")
            await expect(items.nth(1)).to_have_attribute("aria-current", "true")
            form = page.locator("#review-editor .review-form")
            await expect(form.locator("dd").first).to_contain_text(missed.text or "(nothing)")
            await page.wait_for_function(
                "() => { const a = document.querySelector('audio.review-audio');"
                " return a && a.readyState >= 1 && a.duration > 0.5; }", timeout=WAIT_MS)
            await page.keyboard.press("p")
            await page.wait_for_function(
                "() => document.querySelector('audio.review-audio').currentTime > 0.1",
                timeout=WAIT_MS)
            await page.fill("#review-by", "ann")
            await page.dispatch_event("#review-by", "change")
            await form.locator("select.review-intent").select_option("HassTurnOn")
            await form.locator("input[data-slot='area']").fill("kitchen")
            await form.locator("input[data-slot='domain']").fill("light")
            text = form.locator("input.review-text")
            await text.fill("make the kitchen bright")
            await p.shot("review-editing")
            await text.press("Enter")
            await expect(items).to_have_count(1)
            await expect(page.locator("#review-count")).to_have_text("1")
            proposal = page.locator("#proposal-list .proposal[data-kind='sentence']")
            await expect(proposal).to_contain_text("Add “make the kitchen bright” as a sentence")
            await expect(proposal.locator(".chip[data-slot='area']")).to_have_text(
                "area=kitchen")
            await p.shot("review-proposal")
            reloads = daemon.reloads
            await proposal.locator("button.proposal-accept").click()
            await expect(page.locator("#proposal-list")).to_contain_text("Nothing yet")
            assert daemon.reloads == reloads + 1

            # the other one: not worth keeping, discarded from the keyboard
            await page.locator("#review-list").click(position={"x": 5, "y": 5})
            await page.keyboard.press("d")
            await expect(page.locator("#review-list")).to_contain_text("Nothing to review")
            await page.select_option("#review-status", "corrected")
            await expect(items).to_have_count(1)
            await expect(items.first).to_contain_text("→ make the kitchen bright")
            await page.set_viewport_size(PHONE)
            await items.first.click()
            await p.shot("review-phone")
            assert await p.fits_width(), "the Review view scrolls sideways on a phone"
            assert not p.errors, p.errors
        corrected, _ = daemon.review.store.items("corrected")
        assert [(c.corrected_by, c.intent) for c in corrected] == [("ann", "HassTurnOn")]
        assert daemon.review.store.counts()["discarded"] == 1
        # what was learned: the same spoken command is now understood
        answer: Any = await sat.command(bright, timeout=60)
        assert (answer.intent, answer.slots.get("area")) == ("HassTurnOn", "kitchen"), answer
