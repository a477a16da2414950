"""`voiced satellite` behind config/mosquitto/voiced.acl: a real mosquitto with that ACL,
TLS certificates made here with openssl and a mosquitto_passwd file; a real voiced logged
in as `voiced`; the real satellite client, in-process and as `python -m voiced.cli`.

The satellite logs in as its site, speaks a command, and hears its own answer (the
intent, its session's end, the spoken answer as playBytes) on the only topics the ACL
grants it. Another satellite's login hears none of it. Absence is proved by order, as in
test_acl.py: mosquitto queues a message for every subscriber when it routes it, and each
subscriber gets its queue in order, so whatever a client did not get before a barrier
message published later was dropped by the broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from support import FIXTURES, REPO, Mosquitto, free_port, make_config, running_daemon

from voiced.audio.wav import read_wav_file
from voiced.config import MqttTlsConfig
from voiced.satellite import Satellite, Topics

ACL = REPO / "config" / "mosquitto" / "voiced.acl"
USERS = {"voiced": "voiced-pw", "kitchen": "kitchen-pw", "den": "den-pw"}
COMMAND = FIXTURES / "commands" / "on_kitchen.wav"
ANSWER = "Turning on the light"
EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
"""Keys for the test PKI: P-256 is made in milliseconds, RSA in tenths of a second."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    """mosquitto whose only listener is TLS (a certificate for "localhost" from a CA made
    here), a password per client, and the shipped ACL."""
    pki = tmp_path / "pki"
    pki.mkdir()
    _openssl("req", "-x509", *EC, "-nodes", "-days", "2", "-subj",
             "/CN=voiced test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
    _openssl("req", *EC, "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=pki)
    (pki / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
             cwd=pki)
    # the kitchen's client certificate: its CN is its site id, the user on a listener
    # with use_identity_as_username
    _openssl("req", *EC, "-nodes", "-subj", "/CN=kitchen",
             "-keyout", "kitchen.key", "-out", "kitchen.csr", cwd=pki)
    _openssl("x509", "-req", "-in", "kitchen.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "kitchen.crt", cwd=pki)
    broker = Mosquitto(tmp_path, users=USERS)
    tls = (f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\n"
           f"keyfile {pki / 'server.key'}\n")
    broker.cert_port = free_port()  # type: ignore[attr-defined]
    broker.conf.write_text(
        broker.conf.read_text() + f"{tls}acl_file {ACL}\n"
        f"listener {broker.cert_port} 127.0.0.1\n{tls}"  # type: ignore[attr-defined]
        "require_certificate true\nuse_identity_as_username true\n")
    broker.start()
    try:
        yield broker, pki / "ca.crt"
    finally:
        broker.stop()


@pytest.fixture
async def voiced(acl_broker: tuple[Mosquitto, Path], tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """The daemon logged in as `voiced` over TLS, as config/mosquitto/voiced.conf says:
    Hermes control off, the kitchen wake-gated, answers spoken by the built-in TTS."""
    mosquitto, ca = acl_broker
    monkeypatch.setenv("VOICED_TEST_MQTT_PASSWORD", USERS["voiced"])
    config = make_config(
        tmp_path, mosquitto.port,
        mqtt={"host": "localhost", "tls": {"ca_file": str(ca)}, "username": "voiced",
              "password_env": "VOICED_TEST_MQTT_PASSWORD", "hermes_control": False},
        sites={"overrides": {"kitchen": {"mode": "wake"}}}, vad={"wake_timeout_s": 60},
        tts={"mode": "builtin"},
        handlers=[{"intent": "HassTurnOn", "plugin": "say", "options": {"text": ANSWER}}])
    async with running_daemon(config) as daemon:
        yield daemon


@asynccontextmanager
async def login(broker: tuple[Mosquitto, Path], user: str,
                *subscriptions: str) -> AsyncIterator[aiomqtt.Client]:
    """A plain MQTT client of `user` over TLS, subscribed (QoS 1)."""
    mosquitto, ca = broker
    async with aiomqtt.Client("localhost", mosquitto.port, username=user,
                              password=USERS[user], timeout=10,
                              tls_context=ssl.create_default_context(cafile=str(ca))) as client:
        for topic in subscriptions:
            await client.subscribe(topic, qos=1)
        yield client


async def received_until(client: aiomqtt.Client, barrier: str) -> list[str]:
    """The topics of every message `client` gets, up to and including `barrier`."""
    got: list[str] = []
    async with asyncio.timeout(15):
        async for message in client.messages:
            got.append(message.topic.value)
            if message.topic.value == barrier:
                return got
    raise AssertionError(f"no message on {barrier}")


def kitchen(broker: tuple[Mosquitto, Path], **kwargs: Any) -> Satellite:
    """The kitchen's satellite as a Raspberry Pi behind the ACL runs it: its password
    (the username defaults to the site), TLS checking the broker's name."""
    mosquitto, ca = broker
    settings: dict[str, Any] = {"password": USERS["kitchen"],
                                "tls": MqttTlsConfig(ca_file=ca), **kwargs}
    return Satellite("localhost", mosquitto.port, "kitchen", **settings)


def assert_understood(answer: dict[str, Any]) -> None:
    assert answer["intent"] == "HassTurnOn", answer
    assert answer["slots"].get("area") == "kitchen", answer
    assert answer["text"] and "kitchen" in answer["text"], answer
    assert answer["termination"] == "nominal", answer
    assert answer["said"] == [ANSWER], answer
    assert answer["played"] == 1, answer  # the spoken answer, as audio on its playBytes
    assert answer["errors"] == [], answer


async def test_a_satellite_hears_its_own_answer_and_no_other_login_does(
        acl_broker: tuple[Mosquitto, Path], voiced: Any) -> None:
    sat = kitchen(acl_broker)
    assert sat.username == "kitchen" and sat.topics == Topics.NATIVE
    # den's login, asking for exactly what the kitchen's client reads, and everything
    async with login(acl_broker, "den", *sat.subscriptions, "#") as den, \
            login(acl_broker, "voiced") as server, sat:
        # the kitchen is wake-gated: --hotword opens its session on voiced/control/kitchen
        answer = await sat.command(read_wav_file(COMMAND), hotword=True, timeout=60)
        assert_understood(answer.as_dict())
        assert answer.session_id and answer.timings.get("processing", 0) > 0
        # ... and stops it again on voiced/control/kitchen/stop: a session it opened
        await sat.hotword()
        await sat.stop()
        stopped = await sat.next_answer()
        assert stopped.termination == "abortedByUser" and stopped.intent is None
        await server.publish("voiced/events/den", b'{"barrier": true}', qos=1)
        assert await received_until(den, "voiced/events/den") == ["voiced/events/den"]
    assert sat.ignored == 0


async def test_another_satellites_password_does_not_log_in_as_the_kitchen(
        acl_broker: tuple[Mosquitto, Path]) -> None:
    with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori[sz]ed"):
        async with kitchen(acl_broker, password=USERS["den"]):
            pass


async def test_a_client_certificate_is_the_login(acl_broker: tuple[Mosquitto, Path]) -> None:
    """On a listener that takes the certificate's CN as the user (no anonymous clients):
    no password, the kitchen's certificate and key, and the ACL's kitchen topics."""
    mosquitto, ca = acl_broker
    pki = ca.parent
    port: int = mosquitto.cert_port  # type: ignore[attr-defined]
    tls = MqttTlsConfig(ca_file=ca, cert_file=pki / "kitchen.crt", key_file=pki / "kitchen.key")
    async with Satellite("localhost", port, "kitchen", tls=tls) as sat, \
            login(acl_broker, "voiced") as server:
        assert sat.username is None and sat.topics == Topics.NATIVE
        await server.publish("hermes/audioServer/kitchen/playBytes/1", b"RIFF", qos=1)
        await server.publish("voiced/events/kitchen", json.dumps(
            {"type": "session_ended", "site": "kitchen", "sessionId": "s", "reason": "nominal"}),
            qos=1)
        async with asyncio.timeout(15):
            answer = await sat.next_answer()
        assert (answer.played, answer.termination) == (1, "nominal")


async def test_the_broker_certificate_must_name_the_host(
        acl_broker: tuple[Mosquitto, Path]) -> None:
    """The certificate names "localhost", not 127.0.0.1: refused unless told otherwise."""
    mosquitto, ca = acl_broker
    with pytest.raises(aiomqtt.MqttError, match="CERTIFICATE_VERIFY_FAILED"):
        async with Satellite("127.0.0.1", mosquitto.port, "kitchen",
                             password=USERS["kitchen"], tls=MqttTlsConfig(ca_file=ca)):
            pass
    loose = MqttTlsConfig(ca_file=ca, check_hostname=False)
    async with Satellite("127.0.0.1", mosquitto.port, "kitchen", password=USERS["kitchen"],
                         tls=loose) as sat:
        assert sat.topics == Topics.NATIVE


async def test_voiced_satellite_streams_a_wav_behind_the_acl(
        acl_broker: tuple[Mosquitto, Path], voiced: Any, tmp_path: Path) -> None:
    """`python -m voiced.cli satellite --config FILE --wav ...` as systemd would run it:
    its password from a credential, TLS files relative to its settings file."""
    mosquitto, _ = acl_broker
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "voiced-satellite-mqtt").write_text(USERS["kitchen"] + "\n")
    settings = tmp_path / "satellite.yaml"
    settings.write_text(f"site: kitchen\nmqtt:\n  host: localhost\n  port: {mosquitto.port}\n"
                        "  password_credential: voiced-satellite-mqtt\n"
                        "  tls: {ca_file: pki/ca.crt}\n")
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)}
    env.pop("VOICED_TEST_MQTT_PASSWORD", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiced.cli", "satellite", "--config", str(settings),
        "--wav", str(COMMAND), "--hotword", "--json", "--timeout", "60", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 1, out
    answer = json.loads(lines[0])
    assert answer["file"] == str(COMMAND)
    assert_understood(answer)
