"""`voiced serve` as a real process logs the page's URL at start-up and, with `--demo` (what
`make run` runs), prints it again after the demo; the URL it prints answers."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from support import REPO, free_port

pytestmark = pytest.mark.slow

URL = re.compile(rb"web page and API[: at]+(http://localhost:\d+/)")


async def _lines(proc: asyncio.subprocess.Process, until: re.Pattern[bytes]) -> list[bytes]:
    assert proc.stdout is not None
    seen = []
    async with asyncio.timeout(120):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError(b"".join(seen).decode(errors="replace")[-3000:])
            seen.append(line)
            if until.search(line):
                return seen


async def test_serve_prints_the_page_url_after_the_demo(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    demo.mkdir()
    shutil.copy(REPO / "config" / "samples" / "4_time.wav", demo)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiced.cli", "serve", "--config", "config/voiced.yaml",
        "--embedded-broker", "--mqtt-port", str(free_port()), "--http-port", "0",
        "--state-dir", str(tmp_path / "state"), "--demo", str(demo),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        logged = await _lines(proc, URL)  # the log line at start-up
        first = URL.search(logged[-1])
        assert first is not None and b"INFO" in logged[-1]
        after = await _lines(proc, re.compile(rb"^web page and API: "))
        assert any(b"demo: done" in line for line in after)
        printed = URL.search(after[-1])
        assert printed is not None and printed.group(1) == first.group(1)
        async with aiohttp.ClientSession() as http, \
                http.get(printed.group(1).decode() + "api/status") as resp:
            assert resp.status == 200
            assert (await resp.json())["state"] == "ready"
    finally:
        proc.terminate()
        async with asyncio.timeout(30):
            await proc.wait()
