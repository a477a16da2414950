"""The processes a benchmark measures: a mosquitto and a `voiced serve` on free ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO


def free_port() -> int:
    """A TCP port nothing listens on (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(tmp: Path, port: int, extra: str = "") -> subprocess.Popen[bytes]:
    """A mosquitto for anonymous loopback clients on `port`."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = tmp / "mosquitto.conf"
    # each frame and answer sent at once, as config/mosquitto/voiced.conf recommends
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    f"set_tcp_nodelay true\n{extra}")
    return subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def start_voiced(args: list[str], log: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """`voiced -q serve ARGS` as a separate process (logs to `log`, else inherited)."""
    cmd = [sys.executable, "-m", "voiced.cli", "-q", "serve", *args]
    return subprocess.Popen(cmd, stdout=log, stderr=log,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
