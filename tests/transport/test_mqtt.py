"""The MQTT link against a real mosquitto: reconnect, resubscribe, nothing lost."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
from pathlib import Path

import aiomqtt
from support import Mosquitto

from voiced.config import MqttConfig
from voiced.satellite import Satellite
from voiced.transport.mqtt import MqttLink
from voiced.transport.mqtt_wire import backoff_delay


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(a, 0.5, 8.0, rng) for a in range(10)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert delays[-1] >= 4.0  # capped ceiling 8, jitter keeps at least half
    assert len({round(d, 6) for d in delays}) == len(delays)


def persistent_mosquitto(tmp_path: Path) -> Mosquitto:
    """A mosquitto that keeps sessions (and their queued messages) over a restart."""
    broker = Mosquitto(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    conf = broker.conf.read_text()
    assert "persistence false\n" in conf
    conf = conf.replace("persistence false\n",
                        f"persistence true\npersistence_location {store}/\n")
    if os.geteuid() == 0 and "user root" not in conf:
        conf += "user root\n"  # as root mosquitto would drop to a user who cannot write here
    broker.conf.write_text(conf)
    return broker


async def test_reconnects_resubscribes_and_delivers_queued(tmp_path: Path) -> None:
    """Messages published while the broker is down reach a real subscriber after it is
    back. The subscriber keeps a persistent session (QoS 1) that the broker saves over the
    restart, so whether it is back before or after the link flushes, what the link sent
    after the restart is delivered: the test proves delivery, not just an empty queue."""
    broker = persistent_mosquitto(tmp_path)
    broker.start()
    got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    cfg = MqttConfig(host="127.0.0.1", port=broker.port, reconnect_min_s=0.1,
                     reconnect_max_s=0.5)
    link = MqttLink(cfg, ["in/#"], lambda t, p: got.put_nowait((t, p)))

    def subscriber() -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", broker.port, identifier="test-subscriber",
                              clean_session=False, protocol=aiomqtt.ProtocolVersion.V311)

    task = asyncio.create_task(link.run())
    try:
        async with asyncio.timeout(10):
            await link.connected.wait()
        async with subscriber() as peer:
            await peer.subscribe("out/#", qos=1)
            await link.publish("out/0", {"n": 0}, qos=1)
            async with asyncio.timeout(5):
                msg = await anext(aiter(peer.messages))
            assert (msg.topic.value, msg.payload) == ("out/0", b'{"n": 0}')
            await peer.publish("in/a", b"hello")
            async with asyncio.timeout(5):
                assert await got.get() == ("in/a", b"hello")
        # the subscriber is away; its session (and subscription) stays on the broker

        broker.stop()
        async with asyncio.timeout(5):
            while link.connected.is_set():
                await asyncio.sleep(0.02)
        for n in (1, 2, 3):  # accepted while the broker is away
            await link.publish(f"out/{n}", f"while down {n}", qos=1)
        assert link.pending == 3
        broker.start()
        async with asyncio.timeout(10):
            await link.connected.wait()
            while link.pending:
                await asyncio.sleep(0.02)
        async with subscriber() as peer:
            received = []
            async with asyncio.timeout(10):
                async for msg in peer.messages:
                    received.append((msg.topic.value, msg.payload))
                    if len(received) == 3:
                        break
            assert received == [(f"out/{n}", f"while down {n}".encode()) for n in (1, 2, 3)]
            # resubscribed: a message to in/# reaches the link again (connected is set
            # only once the broker acknowledged the subscriptions)
            await peer.publish("in/b", b"again")
            async with asyncio.timeout(10):
                assert await got.get() == ("in/b", b"again")
        assert link.connections == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        broker.stop()


def _nodelay_of_sockets_to(port: int) -> list[int]:
    """TCP_NODELAY of every socket of this process connected to 127.0.0.1:`port`."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with sock:
            try:
                peer = sock.getpeername()
            except OSError:
                continue
            if sock.family == socket.AF_INET and peer == ("127.0.0.1", port):
                found.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return found


async def test_voiced_and_its_satellite_send_small_packets_at_once(tmp_path: Path) -> None:
    """The daemon's MQTT link and the satellite client turn Nagle's algorithm off: an
    audio frame or an answer is not held back for the previous packet's acknowledgement
    (measured: about 25 ms off the median answer of one satellite, README "Latency")."""
    broker = Mosquitto(tmp_path)
    broker.start()
    link = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port), ["in/#"],
                    lambda t, p: None)
    task = asyncio.create_task(link.run())
    try:
        async with asyncio.timeout(10):
            await link.connected.wait()
        assert _nodelay_of_sockets_to(broker.port) == [1]
        async with Satellite("127.0.0.1", broker.port, "hall"):
            assert sorted(_nodelay_of_sockets_to(broker.port)) == [1, 1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        broker.stop()


async def test_a_burst_of_messages_arrives_whole_and_in_order(tmp_path: Path) -> None:
    """Up to SEND_WINDOW messages are handed to the client before the first is written
    (20 satellites ending together queue hundreds): a burst larger than the window
    reaches a subscriber complete and in the order it was queued. The first part
    alternates QoS 0 and 1 (more QoS 1 than the client keeps in flight: handed over
    together, the client sent them after later QoS 0 ones), the rest are QoS 0 runs
    longer than the window."""
    from voiced.transport.mqtt import SEND_WINDOW

    broker = Mosquitto(tmp_path)
    broker.start()
    link = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port), [], lambda t, p: None)
    task = asyncio.create_task(link.run())
    count = 5 * SEND_WINDOW
    try:
        async with asyncio.timeout(10):
            await link.connected.wait()
        async with aiomqtt.Client("127.0.0.1", broker.port) as peer:
            await peer.subscribe("burst/#", qos=1)
            for i in range(count):
                qos = i % 2 if i < 2 * SEND_WINDOW else 0
                await link.publish(f"burst/{i % 7}", {"n": i}, qos=qos)
            assert link.pending > SEND_WINDOW  # queued faster than it is sent
            got = []
            async with asyncio.timeout(30):
                async for msg in peer.messages:
                    got.append(json.loads(msg.payload)["n"])  # type: ignore[arg-type]
                    if len(got) == count:
                        break
        assert got == list(range(count))
        assert link.pending == 0 and link.rejected == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        broker.stop()
