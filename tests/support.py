"""Test support: a real mosquitto on a free port, test configs, an in-process daemon."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from voiced.config import Config

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


class Mosquitto:
    """A real mosquitto broker that a test can stop and restart on the same port."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(exe):
            raise RuntimeError("mosquitto is not installed (make test installs it)")
        self.exe = exe
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        access = "allow_anonymous true\n"
        if users:
            # only these users, with these passwords (mosquitto_passwd hashes them)
            passwords = workdir / "mosquitto.passwd"
            passwords.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            subprocess.run([passwd, "-U", str(passwords)], check=True)
            passwords.chmod(0o600)
            access = f"allow_anonymous false\npassword_file {passwords}\n"
            if os.geteuid() == 0:
                # as root mosquitto drops to user mosquitto, who cannot read the test's folder
                access += "user root\n"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\n{access}persistence false\n"
                             "set_tcp_nodelay true\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None


def make_config(tmp_path: Path, port: int, **sections: Any) -> Config:
    """A Config for tests: example intents, state in tmp_path, fast error interval."""
    data: dict[str, Any] = {
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": f"voiced-test-{port}",
                 "reconnect_min_s": 0.1, "reconnect_max_s": 1.0},
        "state_dir": str(tmp_path / "state"),
        "intents": {"paths": [str(REPO / "config" / "intents")]},
        "tts": {"mode": "hermes"},
        "error_rate_limit_s": 0.0,
        "http": {"port": 0},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Config.model_validate(data)


@asynccontextmanager
async def running_daemon(config: Config, config_path: Path | None = None) -> AsyncIterator[Any]:
    """Start a daemon in this event loop, wait until MQTT is connected, stop it after.

    With `config_path`, a reload re-reads that file's handlers (as `voiced serve` does)."""
    from voiced.daemon import Daemon

    daemon = Daemon(config, config_path)
    await daemon.start()
    try:
        async with asyncio.timeout(30):
            await daemon.wait_connected()
        yield daemon
    finally:
        await daemon.stop()


@asynccontextmanager
async def voiced_wyoming(tmp_path: Path) -> AsyncIterator[Any]:
    """voiced's Wyoming server (pocketsphinx, example intents) on a free loopback port."""
    from voiced.asr.service import AsrService
    from voiced.inference import InferenceEngine
    from voiced.intents.catalog import load_catalog
    from voiced.wyoming_server import WyomingServer, WyomingService

    config = make_config(tmp_path, 1883, asr={"processes": 1})
    engine = InferenceEngine(workers=4)
    recognizer = await engine.run(load_catalog, config)
    asr = AsrService.from_config(config.asr, recognizer, config.state_dir, engine)
    await asr.load()
    server = WyomingServer(WyomingService(asr, recognizer, engine, "pocketsphinx"),
                           "127.0.0.1", 0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        await asr.close()
        engine.close()


def openssl(*args: str, cwd: Path) -> None:
    """Run openssl in `cwd` (the tests make their own certificates)."""
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(folder: Path) -> Path:
    """A CA (ca.crt/ca.key) and a server certificate for "localhost" signed by it
    (server.crt/server.key) in `folder`, which is created; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=voiced test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
            cwd=folder)
    return folder


def segment_with(detector: Any, pcm: bytes) -> tuple[list[Any], list[Any], list[Any]]:
    """Run a speech detector and a default segmenter over pcm (20 ms frames, stopped at
    the end): (started, ended, every event)."""
    from voiced.const import VAD_FRAME_BYTES
    from voiced.models import EndReason
    from voiced.vad.segmenter import Segmenter, SegmenterSettings, SpeechEnded, SpeechStarted

    seg = Segmenter(SegmenterSettings())
    events: list[Any] = []
    for i in range(0, len(pcm) - VAD_FRAME_BYTES + 1, VAD_FRAME_BYTES):
        frame = pcm[i:i + VAD_FRAME_BYTES]
        events += seg.process(frame, detector.is_speech(frame))
    events += seg.stop(EndReason.SHUTDOWN)
    return ([e for e in events if isinstance(e, SpeechStarted)],
            [e for e in events if isinstance(e, SpeechEnded)], events)
