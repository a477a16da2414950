"""sd_notify against a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from voiced import systemd


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound datagram socket standing in for systemd, named in NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_ready_reaches_the_socket(notify_socket: socket.socket) -> None:
    assert systemd.ready()
    assert notify_socket.recv(4096) == b"READY=1"


def test_status_stopping_and_watchdog(notify_socket: socket.socket) -> None:
    assert systemd.status("3 sites,\nlistening")
    assert notify_socket.recv(4096) == b"STATUS=3 sites, listening"
    assert systemd.stopping("bye")
    assert notify_socket.recv(4096) == b"STOPPING=1\nSTATUS=bye"
    assert systemd.watchdog()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"voiced-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.notify("READY=1") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    assert systemd.watchdog_interval() == 20.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 20.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert systemd.watchdog_interval() is None


async def test_watchdog_pings_only_while_the_loop_runs(
        notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """WatchdogSec: pings at a third of the interval from the event loop; a deliberately
    stalled loop sends none, so systemd would restart voiced."""
    import asyncio
    import itertools
    import threading
    import time

    from support import Mosquitto, make_config, running_daemon

    monkeypatch.setenv("WATCHDOG_USEC", "600000")  # 0.6 s: a ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    pings: list[float] = []
    notify_socket.settimeout(0.2)
    listening = threading.Event()
    done = threading.Event()

    def listen() -> None:
        listening.set()
        while not done.is_set():
            try:
                if notify_socket.recv(4096) == b"WATCHDOG=1":
                    pings.append(time.monotonic())
            except TimeoutError:
                continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    listening.wait(5)
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        async with running_daemon(make_config(tmp_path, broker.port)) as daemon:
            async with asyncio.timeout(10):
                while len(pings) < 3:
                    await asyncio.sleep(0.05)
            assert daemon.healthy
            stalled_at = time.monotonic()
            time.sleep(1.5)  # noqa: ASYNC251 - the deliberate stall: no ping may go out
            resumed_at = time.monotonic()
            count = len(pings)
            async with asyncio.timeout(10):
                while len(pings) < count + 2:
                    await asyncio.sleep(0.05)
    finally:
        done.set()
        listener.join(5)
        broker.stop()
    assert not [t for t in pings if stalled_at + 0.05 < t < resumed_at]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) >= 1.4 and sorted(gaps)[len(gaps) // 2] < 0.4


@pytest.mark.parametrize("name", ["voiced.service", "voiced-satellite.service"])
def test_the_units_are_hardened(name: str) -> None:
    """`systemd-analyze security --offline=true` scores each unit as shipped (≤ 2.0)."""
    import re
    import shutil
    import subprocess

    from support import REPO

    unit = REPO / "systemd" / name
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (make test installs Debian's systemd)"
    out = subprocess.run([analyze, "security", "--offline=true", str(unit)],
                         capture_output=True, text=True, timeout=60).stdout
    score = re.search(rf"Overall exposure level for {re.escape(name)}: ([0-9.]+)", out)
    assert score is not None, out
    assert float(score.group(1)) <= 2.0, out
    text = unit.read_text()
    assert "UMask=0077" in text
    if name == "voiced.service":
        assert "WatchdogSec=" in text
