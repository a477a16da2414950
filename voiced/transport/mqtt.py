"""The MQTT connection: one client loop that reconnects, resubscribes and never loses
an accepted outgoing message.

The link owns its task. Incoming messages go to a synchronous callback on the event
loop (which only parses and enqueues). Outgoing messages go through a queue that
survives reconnects: a message published while the broker is down is sent after the
link is back.

Supervision: `run()` retries broker trouble forever (`aiomqtt.MqttError`, socket errors)
with a jittered exponential backoff that starts afresh after a connection that stayed up.
Anything else is a bug: it is logged once with its traceback and escapes `run()`, so the
daemon, which owns the task, notices and exits non-zero. With `mqtt.give_up_after_s` set,
a broker unreachable that long ends `run()` with `BrokerUnreachableError`.

Publishing never ends the link: `publish()` refuses a topic no broker accepts with
`InvalidTopicError` (nothing is queued), and a message the client still refuses is logged,
counted and dropped by the sender, which goes on with the next one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.enums import MQTTProtocolVersion

from voiced.config import MqttConfig
from voiced.errors import TransportError
from voiced.transport.mqtt_wire import (
    NO_DELAY,
    Payload,
    backoff_ceiling,
    backoff_delay,
    default_client_id,
    encode_payload,
    topic_problem,
)

log = logging.getLogger(__name__)

SEND_WINDOW = 64
"""Queued messages handed to the MQTT client at once (in order) before waiting for them."""
MAX_OUTGOING = 10_000
"""Outgoing messages held while the broker is unreachable; beyond this the oldest go."""
STABLE_MAX_S = 10.0
"""A connection up this long resets the backoff (a shorter one does when it outlasted the
wait before it), so one broker restart does not slow the reconnects after the next."""
class InvalidTopicError(TransportError):
    """`publish()` was given a topic that no broker accepts; nothing was queued."""


class BrokerUnreachableError(TransportError):
    """The broker stayed unreachable for `mqtt.give_up_after_s`."""


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    seq: int
    """Its place in the queue's order (consecutive: the queue only loses its head)."""


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
        self._seq = 0
        self._has_outgoing = asyncio.Event()
        self._protocol = MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311
        self._protocol_settled = False
        self._rng = random.Random()
        self._attempt = 0
        self._was_up = False
        self._down_since = time.monotonic()
        self.client_id = config.client_id or default_client_id()
        """The id this link connects with (the same for every reconnect)."""
        self.connected = asyncio.Event()
        """Set while the link is connected and subscribed."""
        self.connections = 0
        """How many times the link has connected (reconnects count)."""
        self.failed_attempts = 0
        """Connection attempts that failed since the link was last connected."""
        self.last_error: str | None = None
        """Why the last connection failed or ended (None: it never did)."""
        self.disconnected_since: float | None = time.time()
        """Wall-clock time (epoch seconds) since when the link is down; None while up."""
        self.dropped = 0
        """Outgoing messages dropped because the queue was full."""
        self.rejected = 0
        """Messages refused: invalid topics in `publish()`, messages the client refused."""
        self._paused = False

    async def publish(self, topic: str, payload: Payload, qos: int = 0,
                      retain: bool = False) -> None:
        """Queue a message; it is sent as soon as the broker is reachable.

        Raises InvalidTopicError (code `mqtt_topic_invalid`; nothing queued) for a topic no
        broker accepts: empty, with a wildcard or a control character, not UTF-8, or longer
        than 65535 bytes; and for a QoS other than 0, 1 or 2.
        """
        problem = topic_problem(topic)
        if problem is None and qos not in (0, 1, 2):
            problem = f"has an invalid QoS {qos!r}"
        if problem is not None:
            self.rejected += 1
            shown = ascii(topic[:80] if isinstance(topic, str) else topic)
            log.warning("MQTT: not publishing to topic %s: it %s", shown, problem)
            raise InvalidTopicError("mqtt_topic_invalid", f"MQTT topic {shown} {problem}")
        data = encode_payload(payload)
        if len(self._outgoing) >= MAX_OUTGOING:
            self._outgoing.popleft()
            self.dropped += 1
            log.warning("MQTT outgoing queue full: dropped the oldest message")
        self._outgoing.append(_Outgoing(topic, data, qos, retain, self._seq))
        self._seq += 1
        self._has_outgoing.set()

    def pause_ingest(self) -> None:
        """Stop delivering incoming messages (shutdown: stop taking audio)."""
        self._paused = True

    @property
    def pending(self) -> int:
        """Outgoing messages not yet handed to the broker."""
        return len(self._outgoing)

    @property
    def backoff_attempt(self) -> int:
        """The exponent of the next reconnect wait (0: the shortest, `reconnect_min_s`)."""
        return self._attempt

    def status(self) -> dict[str, Any]:
        """The link's state, for /api/status and the log."""
        return {"connected": self.connected.is_set(), "client_id": self.client_id,
                "protocol": "5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1",
                "connections": self.connections, "failed_attempts": self.failed_attempts,
                "last_error": self.last_error, "disconnected_since": self.disconnected_since,
                "pending": self.pending, "dropped": self.dropped, "rejected": self.rejected}

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
        """Connect, serve, and reconnect until cancelled.

        Raises BrokerUnreachableError after `give_up_after_s` without a broker (when set),
        and any unexpected exception (a bug), after logging it once.
        """
        try:
            await self._run()
        except BrokerUnreachableError as exc:
            log.error("%s", exc.message)
            raise
        except Exception:
            log.exception("MQTT link stopped by an unexpected error")
            raise

    async def _run(self) -> None:
        cfg = self._config
        while True:
            self._was_up = False
            try:
                await self._session()
            except (aiomqtt.MqttError, OSError) as exc:
                self._went_down(exc)
                if not self._protocol_settled:
                    # until one connection succeeds, alternate MQTT 5 and 3.1.1: some brokers
                    # refuse 5 cleanly, others (amqtt) just drop the connection
                    v5 = self._protocol == MQTTProtocolVersion.MQTTv5
                    self._protocol = (MQTTProtocolVersion.MQTTv311 if v5
                                      else MQTTProtocolVersion.MQTTv5)
                    if v5 and _protocol_refused(exc):
                        log.info("MQTT broker does not speak MQTT 5; using 3.1.1")
                        continue
                delay = backoff_delay(self._attempt, cfg.reconnect_min_s, cfg.reconnect_max_s,
                                      self._rng)
                if cfg.give_up_after_s:
                    down_for = time.monotonic() - self._down_since
                    if down_for >= cfg.give_up_after_s:
                        raise BrokerUnreachableError(
                            "mqtt_unreachable",
                            f"MQTT broker {cfg.host}:{cfg.port} unreachable for "
                            f"{down_for:.0f} s (mqtt.give_up_after_s): {exc}") from exc
                    delay = min(delay, cfg.give_up_after_s - down_for)
                if self.connections:
                    log.warning("MQTT connection to %s:%d lost or refused (%s); retrying in %.1f s",
                                cfg.host, cfg.port, exc, delay)
                else:
                    log.warning("MQTT broker %s:%d unreachable (%s); retrying in %.1f s",
                                cfg.host, cfg.port, exc, delay)
                self._attempt += 1
                await asyncio.sleep(delay)

    def _went_down(self, exc: BaseException) -> None:
        self.connected.clear()
        self.last_error = str(exc) or type(exc).__name__
        if self._was_up:
            self.failed_attempts = 0
            self.disconnected_since = time.time()
            self._down_since = time.monotonic()
        else:
            self.failed_attempts += 1

    def _stable(self) -> None:
        if self._attempt:
            log.debug("MQTT connection stable: reconnect backoff reset")
        self._attempt = 0

    async def _session(self) -> None:
        cfg = self._config
        will = None
        if self._will:
            will = aiomqtt.Will(self._will[0], self._will[1], qos=1, retain=True)
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=self.client_id,
            username=cfg.username,
            password=cfg.password(),
            keepalive=cfg.keepalive_s,
            protocol=aiomqtt.ProtocolVersion(int(self._protocol)),
            will=will,
            timeout=10,
            tls_context=cfg.tls.context() if cfg.tls is not None else None,
            socket_options=NO_DELAY,
        )
        async with client:
            self.connections += 1
            self._was_up = True
            self._protocol_settled = True
            for topic in self._subscriptions:
                await client.subscribe(topic)
            log.info("MQTT connected to %s:%d as %s (%s), subscribed to %d topics", cfg.host,
                     cfg.port, self.client_id,
                     "MQTT 5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "MQTT 3.1.1",
                     len(self._subscriptions))
            self.disconnected_since = None
            self.failed_attempts = 0
            self.connected.set()
            # the backoff starts afresh once this connection outlasts the wait before it
            stable_after = min(STABLE_MAX_S, backoff_ceiling(
                max(self._attempt - 1, 0), cfg.reconnect_min_s, cfg.reconnect_max_s))
            timer = asyncio.get_running_loop().call_later(stable_after, self._stable)
            tasks = {
                asyncio.create_task(self._receive(client), name="mqtt-receiver"),
                asyncio.create_task(self._send(client), name="mqtt-publisher"),
            }
            try:
                if self._on_connect:
                    self._on_connect()
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # re-raises the MqttError that ended the connection
            finally:
                timer.cancel()
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
        """Hand queued messages to the client in order, up to SEND_WINDOW not yet written
        at a time (a QoS 1 or 2 message alone, as the client would reorder it); a message
        leaves the queue once the client wrote (or refused) it.

        Each publish waits until its packet is written, a turn of the event loop or more;
        one at a time the queue fell behind when 20 satellites ended together (an intent
        waited up to ~90 ms). A connection that fails leaves every message not yet written
        queued for the next one (they may arrive twice, never not at all)."""
        inflight: deque[tuple[_Outgoing, asyncio.Future[None]]] = deque()
        handed = -1  # the sequence number of the last message handed over
        try:
            while True:
                self._has_outgoing.clear()
                while inflight and inflight[0][1].done():
                    item, done = inflight.popleft()
                    self._settle(item, done)
                if self._outgoing:
                    first = max(0, handed + 1 - self._outgoing[0].seq)
                    for index in range(first, len(self._outgoing)):
                        if len(inflight) >= SEND_WINDOW:
                            break
                        item = self._outgoing[index]
                        if inflight and (item.qos or inflight[-1][0].qos):
                            break  # QoS 1/2 goes alone: the client may send it after later QoS 0
                        inflight.append((item, asyncio.ensure_future(client.publish(
                            item.topic, item.payload, qos=item.qos, retain=item.retain))))
                        handed = item.seq
                if inflight and inflight[0][1].done():
                    continue
                more: asyncio.Future[Any] = asyncio.ensure_future(self._has_outgoing.wait())
                waiting = [more, inflight[0][1]] if inflight else [more]
                try:
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    more.cancel()
        finally:
            for _, pending in inflight:
                pending.cancel()

    def _settle(self, item: _Outgoing, done: asyncio.Future[None]) -> None:
        failure = done.exception() if not done.cancelled() else asyncio.CancelledError()
        if isinstance(failure, aiomqtt.MqttError | asyncio.CancelledError):
            raise failure  # the connection is in trouble: this message stays queued
        if failure is not None:
            # one message the client refuses (paho raises ValueError) must not end the link:
            # it is dropped, and the next one goes
            self.rejected += 1
            log.error("MQTT: dropped a message to %s that the client refused: %r",
                      ascii(item.topic[:80]), failure)
        if self._outgoing and self._outgoing[0] is item:
            self._outgoing.popleft()


def _protocol_refused(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "protocol" in text and ("version" in text or "unsupported" in text)
