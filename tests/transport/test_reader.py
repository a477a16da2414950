"""The inbound MQTT reader against a real mosquitto: order, sizes, credentials, restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
from support import Mosquitto

from voiced.config import MqttConfig
from voiced.transport.reader import MAX_PACKET, MqttReader


class Inbox:
    """Collects what the reader delivers; waits (bounded) for a count."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.oversized: list[tuple[str, int]] = []
        self._more = asyncio.Event()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        self._more.set()

    def too_big(self, topic: str, size: int) -> None:
        self.oversized.append((topic, size))
        self._more.set()

    async def wait(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) + len(self.oversized) < count:
                self._more.clear()
                await self._more.wait()


def _config(port: int, **extra: object) -> MqttConfig:
    return MqttConfig.model_validate({"host": "127.0.0.1", "port": port,
                                      "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, **extra})


async def test_every_message_in_order_whatever_its_size(mosquitto: Mosquitto) -> None:
    inbox = Inbox()
    reader = MqttReader(_config(mosquitto.port), ["hermes/audioServer/+/audioFrame",
                                                  "hermes/hotword/+/detected"],
                        inbox, inbox.too_big)
    task = asyncio.create_task(reader.run())
    try:
        await asyncio.wait_for(reader.connected.wait(), 10)
        sizes = [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 3_000_000]
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sat:
            await sat.publish("hermes/hotword/x/detected", b'{"siteId": "a"}')
            for i, size in enumerate(sizes):  # every remaining-length width
                await sat.publish(f"hermes/audioServer/s{i}/audioFrame", bytes([i]) * size)
            for n in range(2000):  # many small ones, parsed several to a read
                await sat.publish("hermes/audioServer/many/audioFrame", n.to_bytes(2, "big"))
            await sat.publish("unrelated/topic", b"not subscribed")
            await sat.publish("hermes/audioServer/huge/audioFrame", bytes(MAX_PACKET + 10))
            await sat.publish("hermes/audioServer/after/audioFrame", b"still here")
        await inbox.wait(1 + len(sizes) + 2000 + 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    topics = [t for t, _ in inbox.messages]
    assert topics[0] == "hermes/hotword/x/detected"
    assert [len(p) for t, p in inbox.messages[1:1 + len(sizes)]] == sizes
    many = [int.from_bytes(p, "big") for t, p in inbox.messages if t.endswith("many/audioFrame")]
    assert many == list(range(2000))
    # the huge one is skipped unread and reported; the stream goes on after it
    assert inbox.oversized == [("hermes/audioServer/huge/audioFrame", MAX_PACKET + 10 + 36)]
    assert inbox.messages[-1] == ("hermes/audioServer/after/audioFrame", b"still here")
    assert "unrelated/topic" not in topics and reader.received == len(inbox.messages)


async def test_refused_credentials_are_retried_and_named(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path, users={"voiced": "secret"})
    broker.start()
    inbox = Inbox()
    reader = MqttReader(_config(broker.port, username="voiced", password_env="NO_SUCH_VAR"),
                        ["#"], inbox)
    task = asyncio.create_task(reader.run())
    try:
        async with asyncio.timeout(10):
            while reader.failed_attempts < 2:
                await asyncio.sleep(0.05)
        assert not reader.connected.is_set()
        assert reader.last_error is not None and "refused" in reader.last_error
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        broker.stop()


async def test_reconnects_after_a_broker_restart_and_pauses(mosquitto: Mosquitto) -> None:
    inbox = Inbox()
    reader = MqttReader(_config(mosquitto.port), ["t/#"], inbox)
    task = asyncio.create_task(reader.run())
    try:
        await asyncio.wait_for(reader.connected.wait(), 10)
        mosquitto.stop()
        async with asyncio.timeout(10):
            while reader.connected.is_set():
                await asyncio.sleep(0.02)
        mosquitto.start()
        await asyncio.wait_for(reader.connected.wait(), 10)
        assert reader.connections == 2
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sat:
            await sat.publish("t/1", b"after the restart")
            await inbox.wait(1)
            reader.pause()
            await sat.publish("t/2", b"paused: not delivered")
            await sat.publish("t/3", b"nor this")
            async with asyncio.timeout(10):
                while reader.discarded < 2:
                    await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert inbox.messages == [("t/1", b"after the restart")]
