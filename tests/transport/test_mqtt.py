"""The MQTT link against a real mosquitto: reconnect, resubscribe, nothing lost."""

from __future__ import annotations

import asyncio
import random

import aiomqtt
from support import Mosquitto

from voiced.config import MqttConfig
from voiced.transport.mqtt import MqttLink, backoff_delay


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(a, 0.5, 8.0, rng) for a in range(10)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert delays[-1] >= 4.0  # capped ceiling 8, jitter keeps at least half
    assert len({round(d, 6) for d in delays}) == len(delays)


async def test_reconnects_resubscribes_and_delivers_queued(mosquitto: Mosquitto) -> None:
    got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    cfg = MqttConfig(host="127.0.0.1", port=mosquitto.port, client_id="link-test",
                     reconnect_min_s=0.1, reconnect_max_s=0.5)
    link = MqttLink(cfg, ["in/#"], lambda t, p: got.put_nowait((t, p)))
    task = asyncio.create_task(link.run())
    try:
        async with asyncio.timeout(10):
            await link.connected.wait()
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
            await peer.subscribe("out/#")
            await link.publish("out/1", {"n": 1})
            async with asyncio.timeout(5):
                msg = await anext(aiter(peer.messages))
            assert msg.payload == b'{"n": 1}'
            await peer.publish("in/a", b"hello")
            async with asyncio.timeout(5):
                assert await got.get() == ("in/a", b"hello")

        mosquitto.stop()
        async with asyncio.timeout(5):
            while link.connected.is_set():
                await asyncio.sleep(0.05)
        await link.publish("out/2", b"while down")  # accepted while the broker is away
        mosquitto.start()
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
            await peer.subscribe("out/#")
            async with asyncio.timeout(10):
                await link.connected.wait()
                while link.pending:
                    await asyncio.sleep(0.05)
            # resubscribed: a message to in/# reaches the link again
            await asyncio.sleep(0.2)
            await peer.publish("in/b", b"again")
            async with asyncio.timeout(10):
                assert await got.get() == ("in/b", b"again")
        assert link.connections == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
