"""MQTT over TLS against a real mosquitto with certificates the test makes (openssl)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from support import FIXTURES, Mosquitto, free_port, make_config, make_pki, running_daemon

from voiced.audio.wav import read_wav_file
from voiced.config import MqttConfig
from voiced.satellite import Satellite
from voiced.transport.reader import MqttReader


@pytest.fixture
def tls_broker(tmp_path: Path) -> tuple[Mosquitto, int, Path]:
    """mosquitto with a plain listener (for the satellites) and a TLS one (for voiced),
    its certificate for "localhost" signed by a CA made here."""
    pki = make_pki(tmp_path / "pki")
    broker = Mosquitto(tmp_path)
    tls_port = free_port()
    extra = (f"listener {tls_port} 127.0.0.1\ncafile {pki / 'ca.crt'}\n"
             f"certfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n")
    if os.geteuid() == 0:
        extra += "user root\n"  # as root mosquitto drops to a user who cannot read tmp_path
    broker.conf.write_text(broker.conf.read_text() + extra)
    return broker, tls_port, pki / "ca.crt"


async def test_voiced_speaks_tls_to_the_broker(tls_broker: tuple[Mosquitto, int, Path],
                                               tmp_path: Path) -> None:
    broker, tls_port, ca = tls_broker
    broker.start()
    try:
        config = make_config(tmp_path, tls_port, mqtt={"host": "localhost", "port": tls_port,
                                                       "tls": {"ca_file": str(ca)}})
        pcm = read_wav_file(FIXTURES / "commands" / "on_kitchen.wav")
        async with running_daemon(config) as daemon, \
                Satellite("127.0.0.1", broker.port, "den") as sat:
            answer = await sat.command(pcm, timeout=60)
            assert answer.intent == "HassTurnOn", answer
            assert daemon.link.connections == 1 and daemon.reader.connections == 1
    finally:
        broker.stop()


@pytest.mark.parametrize(("host", "tls", "fails_with"), [
    ("localhost", {}, "CERTIFICATE_VERIFY_FAILED"),  # the system CAs do not know ours
    ("127.0.0.1", {"ca_file": "CA"}, "CERTIFICATE_VERIFY_FAILED"),  # not the name it has
    ("127.0.0.1", {"ca_file": "CA", "check_hostname": False}, None),
    ("localhost", {"ca_file": "CA"}, None),
])
async def test_the_broker_certificate_is_checked(tls_broker: tuple[Mosquitto, int, Path],
                                                 host: str, tls: dict[str, object],
                                                 fails_with: str | None) -> None:
    broker, tls_port, ca = tls_broker
    broker.start()
    settings = {k: (str(ca) if v == "CA" else v) for k, v in tls.items()}
    config = MqttConfig.model_validate({"host": host, "port": tls_port, "tls": settings,
                                        "reconnect_min_s": 0.1, "reconnect_max_s": 0.3})
    heard: list[str] = []
    reader = MqttReader(config, ["#"], lambda topic, _payload: heard.append(topic))
    task = asyncio.create_task(reader.run())
    try:
        async with asyncio.timeout(15):
            while not reader.connected.is_set() and reader.failed_attempts < 2:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        broker.stop()
    if fails_with is None:
        assert reader.connections == 1, reader.last_error
    else:
        assert reader.connections == 0
        assert fails_with in (reader.last_error or ""), reader.last_error
