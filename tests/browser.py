"""Headless Chromium for the web page tests: Debian's `chromium`, driven by Playwright.

Playwright only drives the browser at CHROMIUM (`playwright install` is never run: no
browser is downloaded). The fake microphone plays a WAV file made by `fake_mic_wav` on a
loop; Chromium restarts it when a page opens the microphone. Screenshots go to
`$VOICED_ARTIFACTS/<test>/` when that is set, else the test's tmp folder, and every path is
printed so a reviewer can look.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, ConsoleMessage, Page, ViewportSize, async_playwright

from voiced.audio.wav import build_wav
from voiced.const import BYTES_PER_SECOND, SAMPLE_RATE

CHROMIUM = Path(os.environ.get("VOICED_CHROMIUM", "/usr/bin/chromium"))
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 860}
WAIT_MS = 60_000
"""The longest any one wait for the page may take (recognition on a busy machine)."""


def artifacts(tmp_path: Path, test: str) -> Path:
    """Where this test's screenshots go."""
    root = os.environ.get("VOICED_ARTIFACTS")
    folder = Path(root) / re.sub(r"[^\w.-]", "_", test) if root else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fake_mic_wav(pcm: bytes, out: Path, lead_s: float = 0.6, tail_s: float = 2.5) -> Path:
    """A 16 kHz mono 16-bit WAV for `--use-file-for-fake-audio-capture`: silence, the
    internal-format `pcm`, then silence long enough for the VAD to end the utterance."""
    silence = bytes(int(BYTES_PER_SECOND * lead_s) // 2 * 2)
    tail = bytes(int(BYTES_PER_SECOND * tail_s) // 2 * 2)
    out.write_bytes(build_wav(silence + pcm + tail, SAMPLE_RATE))
    return out


class PageUnderTest:
    """A page with the errors its scripts raised and a screenshot helper."""

    def __init__(self, page: Page, shots: Path) -> None:
        self.page = page
        self.shots = shots
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._console)
        page.set_default_timeout(WAIT_MS)

    def _console(self, msg: ConsoleMessage) -> None:
        # a refused request (a 4xx the page shows) is logged by Chromium; not a script error
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {msg.text}")

    async def shot(self, name: str) -> Path:
        """A full-page screenshot, its path printed."""
        path = self.shots / f"{name}.png"
        await self.page.evaluate("window.scrollTo(0, 0)")  # sticky header at the top
        await self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    async def fits_width(self) -> bool:
        """True when nothing makes the page scroll sideways (a phone screen)."""
        return bool(await self.page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth + 1"))


@asynccontextmanager
async def chromium(fake_audio: Path | None = None) -> AsyncIterator[Browser]:
    """Headless Chromium (with a fake microphone playing `fake_audio` when given)."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium "
                           "(make setup does, through .ci/system-deps)")
    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    if fake_audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_audio}")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=args,
                                           headless=True, timeout=WAIT_MS)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def open_page(browser: Browser, url: str, shots: Path,
                    viewport: ViewportSize | None = None, *,
                    ready: bool = True) -> AsyncIterator[PageUnderTest]:
    """`url` in a fresh context, once voiced's page script has started (`ready`)."""
    context = await browser.new_context(viewport=viewport or DESKTOP)
    try:
        page = PageUnderTest(await context.new_page(), shots)
        await page.page.goto(url)
        if ready:
            await page.page.wait_for_selector("body[data-ready='true']")
        yield page
    finally:
        await context.close()
