"""The MQTT connection: one client loop that reconnects, resubscribes and never loses
an accepted outgoing message.

The link owns its task. Incoming messages go to a synchronous callback on the event
loop (which only parses and enqueues). Outgoing messages go through a queue that
survives reconnects: a message published while the broker is down is sent after the
link is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.enums import MQTTProtocolVersion

from voiced.config import MqttConfig

log = logging.getLogger(__name__)

Payload = bytes | str | Mapping[str, Any] | list[Any]

MAX_OUTGOING = 10_000
"""Outgoing messages held while the broker is unreachable; beyond this the oldest go."""


def encode_payload(payload: Payload) -> bytes:
    """bytes pass through, text is UTF-8, mappings and lists become JSON."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, ensure_ascii=False).encode()


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Jittered exponential backoff: between half and all of min(high, low * 2**attempt)."""
    ceiling = min(high, low * (2 ** min(attempt, 30)))
    return ceiling * rng.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttLink:
    """A resilient MQTT client: call `run()` as a task, `publish()` from anywhere."""

    def __init__(
        self,
        config: MqttConfig,
        subscriptions: Sequence[str],
        on_message: Callable[[str, bytes], None],
        *,
        will: tuple[str, bytes] | None = None,
        on_connect: Callable[[], None] | None = None,
        mqtt5: bool = True,
    ) -> None:
        self._config = config
        self._subscriptions = list(subscriptions)
        self._on_message = on_message
        self._on_connect = on_connect
        self._will = will
        self._outgoing: deque[_Outgoing] = deque()
        self._has_outgoing = asyncio.Event()
        self._protocol = MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311
        self._protocol_settled = False
        self._rng = random.Random()
        self.connected = asyncio.Event()
        self.connections = 0
        """How many times the link has connected (reconnects count)."""
        self.dropped = 0
        """Outgoing messages dropped because the queue was full."""
        self._paused = False

    async def publish(self, topic: str, payload: Payload, qos: int = 0,
                      retain: bool = False) -> None:
        """Queue a message; it is sent as soon as the broker is reachable."""
        if len(self._outgoing) >= MAX_OUTGOING:
            self._outgoing.popleft()
            self.dropped += 1
            log.warning("MQTT outgoing queue full: dropped the oldest message")
        self._outgoing.append(_Outgoing(topic, encode_payload(payload), qos, retain))
        self._has_outgoing.set()

    def pause_ingest(self) -> None:
        """Stop delivering incoming messages (shutdown: stop taking audio)."""
        self._paused = True

    @property
    def pending(self) -> int:
        """Outgoing messages not yet handed to the broker."""
        return len(self._outgoing)

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued message is sent or `timeout` passes."""
        try:
            async with asyncio.timeout(timeout):
                while self._outgoing:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Connect, serve, and reconnect forever (until cancelled)."""
        cfg = self._config
        attempt = 0
        while True:
            try:
                await self._session()
                attempt = 0
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                if not self._protocol_settled:
                    # until one connection succeeds, alternate MQTT 5 and 3.1.1: some brokers
                    # refuse 5 cleanly, others (amqtt) just drop the connection
                    v5 = self._protocol == MQTTProtocolVersion.MQTTv5
                    self._protocol = (MQTTProtocolVersion.MQTTv311 if v5
                                      else MQTTProtocolVersion.MQTTv5)
                    if v5 and _protocol_refused(exc):
                        log.info("MQTT broker does not speak MQTT 5; using 3.1.1")
                        continue
                delay = backoff_delay(attempt, cfg.reconnect_min_s, cfg.reconnect_max_s, self._rng)
                if self.connections:
                    log.warning("MQTT connection to %s:%d lost or refused (%s); retrying in %.1f s",
                                cfg.host, cfg.port, exc, delay)
                else:
                    log.warning("MQTT broker %s:%d unreachable (%s); retrying in %.1f s",
                                cfg.host, cfg.port, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def _session(self) -> None:
        cfg = self._config
        will = None
        if self._will:
            will = aiomqtt.Will(self._will[0], self._will[1], qos=1, retain=True)
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=cfg.client_id,
            username=cfg.username,
            password=cfg.password(),
            keepalive=cfg.keepalive_s,
            protocol=aiomqtt.ProtocolVersion(int(self._protocol)),
            will=will,
            timeout=10,
        )
        async with client:
            self.connections += 1
            self._protocol_settled = True
            for topic in self._subscriptions:
                await client.subscribe(topic)
            log.info("MQTT connected to %s:%d (%s), subscribed to %d topics", cfg.host, cfg.port,
                     "MQTT 5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "MQTT 3.1.1",
                     len(self._subscriptions))
            self.connected.set()
            if self._on_connect:
                self._on_connect()
            tasks = {
                asyncio.create_task(self._receive(client), name="mqtt-receiver"),
                asyncio.create_task(self._send(client), name="mqtt-publisher"),
            }
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # re-raises the MqttError that ended the connection
            finally:
                self.connected.clear()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            raise aiomqtt.MqttError("message stream ended")

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if self._paused:
                continue
            payload = message.payload
            if not isinstance(payload, bytes):
                payload = str(payload).encode() if payload is not None else b""
            try:
                self._on_message(message.topic.value, payload)
            except Exception:
                log.exception("error handling message on %s", message.topic.value)

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            if not self._outgoing:
                self._has_outgoing.clear()
                await self._has_outgoing.wait()
                continue
            item = self._outgoing[0]
            # the message leaves the queue only once the client accepted it
            await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
            if self._outgoing and self._outgoing[0] is item:
                self._outgoing.popleft()


def _protocol_refused(exc: aiomqtt.MqttError) -> bool:
    text = str(exc).lower()
    return "protocol" in text and ("version" in text or "unsupported" in text)
