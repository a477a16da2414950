"""The MQTT link's supervision against a real mosquitto: the backoff starts afresh after
each restart, default client ids are unique, bad publishes never end the link, a bug
escapes `run()`, and `give_up_after_s` ends it."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable

import aiomqtt
import pytest
from support import Mosquitto, free_port

from voiced.config import MqttConfig
from voiced.transport.broker import EmbeddedBroker
from voiced.transport.mqtt import (
    BrokerUnreachableError,
    InvalidTopicError,
    MqttLink,
    _Outgoing,
)
from voiced.transport.mqtt_wire import default_client_id, encode_payload


async def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Wait (at most `timeout` s) until `condition()` holds; False if it never did."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        return False
    return True


def config(port: int, **extra: float) -> MqttConfig:
    """A link config without a client id (the default: a unique one)."""
    return MqttConfig(host="127.0.0.1", port=port, **{"reconnect_min_s": 0.1,
                                                      "reconnect_max_s": 0.5, **extra})


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_backoff_starts_afresh_after_each_restart(mosquitto: Mosquitto) -> None:
    """Each outage lasts until the link failed twice (its backoff grew); after each restart
    the link is back within the wait its own outage earned (under 1 s here). A backoff
    that kept growing over restarts (the old link) waits 3-6 s after the second restart
    and 4-8 s after the third."""
    link = MqttLink(config(mosquitto.port, reconnect_min_s=0.2, reconnect_max_s=8.0),
                    ["in/#"], lambda t, p: None)
    task = asyncio.create_task(link.run())
    try:
        assert await wait_until(link.connected.is_set, 10)
        took = []
        for _ in range(4):
            mosquitto.stop()
            assert await wait_until(lambda: link.failed_attempts >= 2, 20)
            mosquitto.start()
            started = time.monotonic()
            assert await wait_until(link.connected.is_set, 20)
            took.append(time.monotonic() - started)
            # stay up until the link counts the connection as stable (bounded; the
            # reconnect times above and below are what is checked)
            await wait_until(lambda: link.backoff_attempt == 0, 5)
        assert max(took) < 3.0, [round(t, 2) for t in took]
        assert link.connections == 5
        assert link.status()["failed_attempts"] == 0 and link.disconnected_since is None
    finally:
        await stop(task)


async def test_default_client_ids_are_unique(mosquitto: Mosquitto) -> None:
    """Two links with the default config share one broker: while one (re)connects, the
    other stays connected (one connection for its whole life) and gets every message.
    With one fixed id the broker would drop the older connection each time."""
    got_a: asyncio.Queue[bytes] = asyncio.Queue()
    got_b: asyncio.Queue[bytes] = asyncio.Queue()
    a = MqttLink(config(mosquitto.port), ["t/#"], lambda t, p: got_a.put_nowait(p))
    b = MqttLink(config(mosquitto.port), ["t/#"], lambda t, p: got_b.put_nowait(p))
    assert a.client_id != b.client_id
    for link in (a, b):
        assert re.fullmatch(r"voiced-[A-Za-z0-9-]{1,9}-[0-9a-f]{6}", link.client_id)
        assert len(link.client_id) <= 23
    assert default_client_id("my.home_server!").startswith("voiced-myhomeser-")
    task_a = asyncio.create_task(a.run())
    try:
        assert await wait_until(a.connected.is_set, 10)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
            for n in range(3):
                task_b = asyncio.create_task(b.run())
                try:
                    assert await wait_until(b.connected.is_set, 10)
                    await peer.publish("t/x", f"{n}".encode(), qos=1)
                    async with asyncio.timeout(5):
                        assert await got_a.get() == f"{n}".encode()
                        assert await got_b.get() == f"{n}".encode()
                finally:
                    await stop(task_b)
        assert (a.connections, b.connections) == (1, 3)
        assert a.connected.is_set()
    finally:
        await stop(task_a)


BAD_TOPICS = ["a/#", "+", "a/+/b", "", "a/\x00b", "a/\x01b", "a/\ud800", "t/" + "x" * 65_535]


async def test_bad_publishes_never_end_the_link(mosquitto: Mosquitto) -> None:
    """Invalid topics are refused at publish() with a clear error; a message that gets
    past that check anyway is dropped by the sender; the next message is delivered over
    the same connection."""
    link = MqttLink(config(mosquitto.port), [], lambda t, p: None)
    task = asyncio.create_task(link.run())
    try:
        assert await wait_until(link.connected.is_set, 10)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as peer:
            await peer.subscribe("ok/#", qos=1)
            for topic in BAD_TOPICS:
                with pytest.raises(InvalidTopicError) as info:
                    await link.publish(topic, b"x")
                assert info.value.code == "mqtt_topic_invalid"
            with pytest.raises(InvalidTopicError, match="QoS"):
                await link.publish("ok/qos", b"x", qos=3)
            assert link.pending == 0 and link.rejected == len(BAD_TOPICS) + 1
            # as if a caller had slipped past the check: the client refuses it
            link._outgoing.append(_Outgoing("a/#", b"x", 0, False, link._seq))
            link._seq += 1
            await link.publish("ok/1", {"text": "caf\u00e9 \udcff"}, qos=1)
            async with asyncio.timeout(5):
                msg = await anext(aiter(peer.messages))
            assert msg.topic.value == "ok/1"
            assert isinstance(msg.payload, bytes)
            assert json.loads(msg.payload) == {"text": "caf\u00e9 \udcff"}
        assert link.rejected == len(BAD_TOPICS) + 2
        assert link.connections == 1 and link.connected.is_set() and not task.done()
    finally:
        await stop(task)


def test_payloads_with_lone_surrogates_are_encoded() -> None:
    assert encode_payload("caf\u00e9") == "caf\u00e9".encode()
    assert encode_payload("a\ud800b") == b"a\\ud800b"
    data = encode_payload({"text": "\udcff", "ok": "caf\u00e9"})
    assert data.isascii() and json.loads(data) == {"text": "\udcff", "ok": "caf\u00e9"}
    assert json.loads(encode_payload(["\udc80"])) == ["\udc80"]


async def test_a_bug_escapes_run_and_is_logged_once(mosquitto: Mosquitto,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A programming error is not retried like a broker outage: it ends run() so the
    daemon that owns the task can exit non-zero."""
    def on_connect() -> None:
        raise RuntimeError("bug in on_connect")

    link = MqttLink(config(mosquitto.port), [], lambda t, p: None, on_connect=on_connect)
    with caplog.at_level(logging.ERROR, logger="voiced.transport.mqtt"):
        with pytest.raises(RuntimeError, match="bug in on_connect"):
            async with asyncio.timeout(10):
                await link.run()
    assert caplog.text.count("MQTT link stopped by an unexpected error") == 1
    assert "RuntimeError: bug in on_connect" in caplog.text  # with its traceback
    assert link.connections == 1 and not link.connected.is_set()


async def test_gives_up_when_never_reachable() -> None:
    link = MqttLink(config(free_port(), give_up_after_s=1.0), [], lambda t, p: None)
    started = time.monotonic()
    with pytest.raises(BrokerUnreachableError) as info:
        async with asyncio.timeout(15):
            await link.run()
    assert info.value.code == "mqtt_unreachable"
    assert 1.0 <= time.monotonic() - started < 10
    assert link.connections == 0 and link.failed_attempts >= 2 and link.last_error


async def test_gives_up_after_an_outage_not_before(mosquitto: Mosquitto) -> None:
    """give_up_after_s counts from when the connection was lost, not from the start."""
    link = MqttLink(config(mosquitto.port, give_up_after_s=1.0), [], lambda t, p: None)
    task = asyncio.create_task(link.run())
    try:
        assert await wait_until(link.connected.is_set, 10)
        # a broker restart shorter than the limit is survived
        mosquitto.stop()
        assert await wait_until(lambda: link.failed_attempts >= 1, 10)
        mosquitto.start()
        assert await wait_until(link.connected.is_set, 10)
        assert not task.done() and link.connections == 2
        mosquitto.stop()
        lost = time.monotonic()
        with pytest.raises(BrokerUnreachableError):
            async with asyncio.timeout(15):
                await task
        assert 1.0 <= time.monotonic() - lost < 10
        assert link.disconnected_since is not None and link.last_error
    finally:
        await stop(task)


async def test_the_embedded_broker_gets_mqtt_311() -> None:
    """amqtt drops an MQTT 5 connection; the link falls back to 3.1.1 and works."""
    broker = EmbeddedBroker("127.0.0.1", free_port())
    await broker.start()
    got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    link = MqttLink(config(broker.port), ["in/#"], lambda t, p: got.put_nowait((t, p)))
    task = asyncio.create_task(link.run())
    try:
        assert await wait_until(link.connected.is_set, 30)
        assert link.status()["protocol"] == "3.1.1"
        await link.publish("in/x", b"round trip")  # through amqtt back to the link
        async with asyncio.timeout(10):
            assert await got.get() == ("in/x", b"round trip")
        assert link.connections == 1
    finally:
        await stop(task)
        await broker.stop()
