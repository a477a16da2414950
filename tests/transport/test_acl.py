"""config/mosquitto/voiced.acl in a real mosquitto with TLS and a password file: each
satellite (username = site id) reads and publishes only its own site's topics; only
voiced reads all audio and answers; a session is opened or stopped only by its site.

Absence is proved by order, never by waiting: mosquitto routes a QoS 1 message before it
acknowledges it, and delivers to each subscriber in the order it routed. So a message a
client did not get, published (and acknowledged) before a barrier message it did get, was
dropped by the broker.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest
from support import REPO, Mosquitto, make_config, make_pki, running_daemon

ACL = REPO / "config" / "mosquitto" / "voiced.acl"
USERS = {"voiced": "voiced-pw", "kitchen": "kitchen-pw", "den": "den-pw"}


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    """mosquitto whose only listener is TLS (a certificate for "localhost" from a CA made
    here), with a password per client and the shipped ACL file."""
    pki = make_pki(tmp_path / "pki")
    broker = Mosquitto(tmp_path, users=USERS)  # its one listener; the lines below make it TLS
    broker.conf.write_text(
        broker.conf.read_text() + f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\n"
        f"keyfile {pki / 'server.key'}\nacl_file {ACL}\n")
    broker.start()
    try:
        yield broker, pki / "ca.crt"
    finally:
        broker.stop()


@asynccontextmanager
async def login(broker: tuple[Mosquitto, Path], user: str,
                *subscriptions: str) -> AsyncIterator[aiomqtt.Client]:
    """A client of `user` over TLS (checking the broker's certificate), subscribed."""
    mosquitto, ca = broker
    context = ssl.create_default_context(cafile=str(ca))
    async with aiomqtt.Client("localhost", mosquitto.port, username=user,
                              password=USERS[user], tls_context=context,
                              identifier=f"test-{user}", timeout=10) as client:
        for topic in subscriptions:
            await client.subscribe(topic, qos=1)
        yield client


async def received_until(client: aiomqtt.Client, barrier: str) -> list[tuple[str, bytes]]:
    """Every message `client` gets, up to and including the first on `barrier`."""
    got: list[tuple[str, bytes]] = []
    async with asyncio.timeout(15):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            got.append((message.topic.value, message.payload))
            if message.topic.value == barrier:
                return got
    raise AssertionError(f"no message on {barrier}")


async def test_a_satellite_reads_only_its_own_answers(acl_broker: tuple[Mosquitto, Path]) -> None:
    async with login(acl_broker, "voiced") as voiced, \
            login(acl_broker, "kitchen", "#", "hermes/audioServer/den/audioFrame",
                  "voiced/audio/den/pcm", "hermes/audioServer/+/playBytes/#") as kitchen, \
            login(acl_broker, "den", "#") as den:
        # den speaks (both audio topics); voiced answers den every way there is
        await den.publish("hermes/audioServer/den/audioFrame", b"den's audio", qos=1)
        await den.publish("voiced/audio/den/pcm", b"den's pcm", qos=1)
        await voiced.publish("hermes/audioServer/den/playBytes/1", b"answer for den", qos=1)
        await voiced.publish("voiced/events/den", b'{"type": "transcript"}', qos=1)
        await voiced.publish("hermes/tts/say", json.dumps({"siteId": "den", "text": "hi"}),
                             qos=1)
        await voiced.publish("hermes/nlu/intentParsed", json.dumps({"siteId": "den"}), qos=1)
        await voiced.publish("hermes/audioServer/kitchen/playBytes/2", b"answer for kitchen",
                             qos=1)
        # kitchen gets its own answer and nothing of den's, though it asked for everything
        assert await received_until(kitchen, "hermes/audioServer/kitchen/playBytes/2") == [
            ("hermes/audioServer/kitchen/playBytes/2", b"answer for kitchen")]
        # den gets its own answer and events, not even its own audio back, nor the
        # payload-site topics (tts/say, intentParsed) that would show every site's answers
        assert await received_until(den, "voiced/events/den") == [
            ("hermes/audioServer/den/playBytes/1", b"answer for den"),
            ("voiced/events/den", b'{"type": "transcript"}')]


async def test_a_satellite_cannot_publish_as_another_site(
        acl_broker: tuple[Mosquitto, Path]) -> None:
    async with login(acl_broker, "voiced", "#") as voiced, \
            login(acl_broker, "kitchen") as kitchen, \
            login(acl_broker, "den", "#") as den:
        forged = [
            "hermes/audioServer/den/audioFrame",  # den's audio
            "voiced/audio/den/pcm",
            "voiced/audio/den/format",
            "voiced/control/den/listen",  # den's sessions
            "voiced/control/den/stop",
            "hermes/hotword/voiced/detected",  # the site only in the payload: any site
            "hermes/asr/startListening",
            "hermes/asr/stopListening",
            "hermes/audioServer/den/playBytes/x",  # answering den
            "hermes/tts/say",
            "hermes/dialogueManager/sessionEnded",
            "hermes/intent/HassTurnOn",
            "voiced/events/den",
            "voiced/status",
        ]
        for topic in forged:
            await kitchen.publish(topic, json.dumps({"siteId": "den", "forged": True}), qos=1)
        await kitchen.publish("hermes/audioServer/kitchen/audioFrame", b"kitchen's audio",
                              qos=1)
        await kitchen.publish("voiced/control/kitchen/listen", b"{}", qos=1)
        # voiced (reading everything) sees kitchen's own messages and none of the forged
        assert await received_until(voiced, "voiced/control/kitchen/listen") == [
            ("hermes/audioServer/kitchen/audioFrame", b"kitchen's audio"),
            ("voiced/control/kitchen/listen", b"{}")]
        # and den's speaker heard nothing kitchen sent it
        await voiced.publish("hermes/audioServer/den/playBytes/y", b"from voiced", qos=1)
        assert await received_until(den, "hermes/audioServer/den/playBytes/y") == [
            ("hermes/audioServer/den/playBytes/y", b"from voiced")]


async def test_only_a_sites_satellite_opens_or_stops_its_session(
        acl_broker: tuple[Mosquitto, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real daemon behind the ACL, with `mqtt.hermes_control: false`."""
    mosquitto, ca = acl_broker
    monkeypatch.setenv("VOICED_TEST_MQTT_PASSWORD", USERS["voiced"])
    config = make_config(
        tmp_path, mosquitto.port,
        mqtt={"host": "localhost", "tls": {"ca_file": str(ca)}, "username": "voiced",
              "password_env": "VOICED_TEST_MQTT_PASSWORD", "hermes_control": False},
        sites={"default_mode": "wake"}, vad={"wake_timeout_s": 60})
    async with running_daemon(config), \
            login(acl_broker, "kitchen", "voiced/events/kitchen") as kitchen, \
            login(acl_broker, "den") as den:
        # den tries to open kitchen's session, then kitchen opens it
        await den.publish("voiced/control/kitchen/listen",
                          json.dumps({"sessionId": "opened-by-den"}), qos=1)
        await den.publish("hermes/asr/startListening",
                          json.dumps({"siteId": "kitchen", "sessionId": "den-hermes"}), qos=1)
        await kitchen.publish("voiced/control/kitchen/listen",
                              json.dumps({"sessionId": "kitchen-1"}), qos=1)
        events = [json.loads(p) for _, p in
                  await received_until(kitchen, "voiced/events/kitchen")]
        assert [(e["type"], e["sessionId"]) for e in events] == [
            ("session_started", "kitchen-1")]
        # den tries to stop it; kitchen names a wrong session, then its own
        await den.publish("voiced/control/kitchen/stop", b"", qos=1)
        await den.publish("hermes/asr/stopListening", json.dumps({"siteId": "kitchen"}), qos=1)
        await kitchen.publish("voiced/control/kitchen/stop",
                              json.dumps({"sessionId": "not-this-one"}), qos=1)
        await kitchen.publish("voiced/control/kitchen/stop",
                              json.dumps({"sessionId": "kitchen-1", "siteId": "kitchen"}),
                              qos=1)
        seen: list[dict[str, object]] = []
        while not seen or seen[-1]["type"] != "session_ended":
            seen += [json.loads(p) for _, p in
                     await received_until(kitchen, "voiced/events/kitchen")]
        assert [(e["type"], e["sessionId"], e.get("code") or e.get("reason"))
                for e in seen] == [("error", "not-this-one", "session_mismatch"),
                                   ("session_ended", "kitchen-1", "abortedByUser")]

