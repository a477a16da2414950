"""The inbound MQTT connection: every message satellites send, read at wire speed.

voiced receives tens of thousands of tiny messages a second (a 20 ms WAV per satellite), and
the general-purpose client stack (paho's MQTT 5 property objects, aiomqtt's per-message
task) cost more than everything voiced does with a frame. This is a small MQTT 3.1.1
subscriber on an `asyncio.Protocol`: each read is parsed whole and every PUBLISH in it is
handed to the synchronous `on_message(topic, payload)` callback (ingest routing, which only
parses headers and enqueues), in order, on the event loop. It subscribes with QoS 0, so
the broker never asks for acknowledgements; it connects, subscribes, pings, and reconnects
with the same backoff as the outgoing link (voiced.transport.mqtt), which publishes.

When voiced reads too slowly, TCP pushes back and the broker drops (mosquitto counts it in
`$SYS/broker/publish/messages/dropped`); voiced reports that and its own per-site drops.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from voiced.config import MqttConfig
from voiced.transport.mqtt_wire import backoff_delay, default_client_id

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
MAX_PACKET = 4 * 1024 * 1024
"""Larger packets are skipped as they stream in (never buffered) and reported."""

_CONNACK_CODES = {1: "unacceptable protocol version", 2: "client id rejected",
                  3: "server unavailable", 4: "bad user name or password",
                  5: "not authorized"}


class ReaderError(Exception):
    """The connection failed or was refused (retried with backoff)."""


def _string(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def _packet(kind: int, body: bytes) -> bytes:
    """A fixed header (type/flags byte, remaining length) and the body."""
    length, out = len(body), bytearray([kind])
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + body


def connect_packet(client_id: str, keepalive: int, username: str | None,
                   password: str | None) -> bytes:
    """MQTT 3.1.1 CONNECT with a clean session."""
    flags = 0x02
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    return _packet(0x10, _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
                   + payload)


def subscribe_packet(packet_id: int, topics: Sequence[str]) -> bytes:
    """SUBSCRIBE every topic filter at QoS 0."""
    return _packet(0x82, struct.pack("!H", packet_id)
                   + b"".join(_string(t) + b"\x00" for t in topics))


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


class _Protocol(asyncio.Protocol):
    """Parses the byte stream; hands PUBLISH packets to the reader."""

    def __init__(self, reader: MqttReader) -> None:
        self.reader = reader
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.skip = 0
        """Bytes still to discard of an oversized packet."""
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.suback: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.last_heard = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(str(exc) if exc else "connection closed by the broker")
        # whoever waits for these learns the connection is gone (no exception is left
        # unretrieved when nobody waits any more)
        if not self.connack.done():
            self.connack.set_result(-1)
        if not self.suback.done():
            self.suback.set_result(b"\x80")

    def data_received(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        if self.skip:
            dropped = min(self.skip, len(data))
            self.skip -= dropped
            data = data[dropped:]
        self.buffer += data
        try:
            self._parse()
        except ReaderError as exc:
            log.error("MQTT reader: %s; reconnecting", exc)
            if self.transport is not None:
                self.transport.close()

    def _parse(self) -> None:
        buffer = self.buffer
        start, end = 0, len(buffer)
        on_publish = self.reader.deliver
        while end - start >= 2:
            kind = buffer[start]
            length, shift, pos = 0, 0, start + 1
            while True:
                if pos >= end:
                    del buffer[:start]
                    return
                byte = buffer[pos]
                length |= (byte & 0x7F) << shift
                pos += 1
                if not byte & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ReaderError("malformed remaining length")
            if length > MAX_PACKET:
                # report it, discard it as it streams in; never buffer it
                self.reader.oversized(bytes(buffer[pos:min(end, pos + 2 + 512)]), length)
                available = end - pos
                if available >= length:
                    start = pos + length
                    continue
                self.skip = length - available
                buffer.clear()
                return
            if end - pos < length:
                break
            body_start, start = pos, pos + length
            packet_type = kind >> 4
            if packet_type == 3:
                topic_len = (buffer[body_start] << 8) | buffer[body_start + 1]
                topic_end = body_start + 2 + topic_len
                topic = buffer[body_start + 2:topic_end].decode("utf-8", "replace")
                qos = (kind >> 1) & 3
                if qos:
                    packet_id = bytes(buffer[topic_end:topic_end + 2])
                    topic_end += 2
                    self._ack(qos, packet_id)
                on_publish(topic, bytes(buffer[topic_end:start]), bool(kind & 1))
            elif packet_type == 2:
                if not self.connack.done():
                    self.connack.set_result(buffer[body_start + 1] if length >= 2 else 255)
            elif packet_type == 9:
                if not self.suback.done():
                    self.suback.set_result(bytes(buffer[body_start + 2:start]))
            elif packet_type == 6 and self.transport is not None:  # PUBREL → PUBCOMP
                self.transport.write(b"\x70\x02" + bytes(buffer[body_start:body_start + 2]))
        del buffer[:start]

    def _ack(self, qos: int, packet_id: bytes) -> None:
        """Only when a broker ignores the QoS 0 subscription."""
        if self.transport is not None:
            self.transport.write((b"\x40\x02" if qos == 1 else b"\x50\x02") + packet_id)


class MqttReader:
    """Subscribes to the inbound topics and delivers each message synchronously."""

    def __init__(self, config: MqttConfig, subscriptions: Sequence[str],
                 on_message: Callable[[str, bytes], None],
                 on_oversized: Callable[[str, int], None] | None = None,
                 client_id: str | None = None,
                 on_connect: Callable[[], None] | None = None,
                 on_retained: Callable[[str, bytes], None] | None = None) -> None:
        """`on_retained`: where messages the broker replays from its retained store (the
        RETAIN flag: sent before this subscription) go instead of `on_message`."""
        self._config = config
        self._subscriptions = list(subscriptions)
        self._on_message = on_message
        self._on_oversized = on_oversized
        self._on_connect = on_connect
        self._on_retained = on_retained
        self.client_id = client_id or f"{config.client_id or default_client_id()}-in"
        self._rng = random.Random()
        self._paused = False
        self._protocol: _Protocol | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self.received = 0
        """Messages delivered to voiced since start."""
        self.discarded = 0
        """Messages read while paused (shutdown), not delivered."""
        self.failed_attempts = 0
        self.last_error: str | None = None

    def deliver(self, topic: str, payload: bytes, retained: bool = False) -> None:
        """One PUBLISH from the broker (called by the protocol, on the loop)."""
        if self._paused:
            self.discarded += 1
            return
        self.received += 1
        try:
            if retained and self._on_retained is not None:
                self._on_retained(topic, payload)
            else:
                self._on_message(topic, payload)
        except Exception:
            log.exception("error handling message on %s", ascii(topic[:120]))

    def oversized(self, head: bytes, size: int) -> None:
        """A packet over MAX_PACKET was skipped; tell whoever reports errors."""
        topic = ""
        if len(head) >= 2:
            topic = head[2:2 + ((head[0] << 8) | head[1])].decode("utf-8", "replace")
        log.warning("MQTT reader: skipped a %d-byte message on %s", size, ascii(topic[:120]))
        if self._on_oversized is not None:
            self._on_oversized(topic, size)

    def pause(self) -> None:
        """Stop delivering (shutdown: stop taking audio)."""
        self._paused = True

    def status(self) -> dict[str, Any]:
        """State for voiced/status."""
        return {"connected": self.connected.is_set(), "client_id": self.client_id,
                "connections": self.connections, "received": self.received,
                "failed_attempts": self.failed_attempts, "last_error": self.last_error}

    async def run(self) -> None:
        """Connect, read, and reconnect until cancelled (broker errors are retried)."""
        cfg = self._config
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except (OSError, ReaderError, TimeoutError) as exc:  # ssl.SSLError is an OSError
                self.last_error = str(exc) or type(exc).__name__
            finally:
                self.connected.clear()
            if time.monotonic() - started > 10.0:
                attempt = 0  # it was up a while: start the backoff afresh
            self.failed_attempts += 1
            delay = backoff_delay(attempt, cfg.reconnect_min_s, cfg.reconnect_max_s, self._rng)
            attempt += 1
            log.warning("MQTT reader: %s:%d: %s; retrying in %.1f s", cfg.host, cfg.port,
                        self.last_error, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        cfg = self._config
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            tls = cfg.tls.context() if cfg.tls is not None else None
            transport, protocol = await loop.create_connection(
                lambda: _Protocol(self), cfg.host, cfg.port, ssl=tls,
                server_hostname=cfg.host if tls is not None else None)
            self._protocol = protocol
            transport.write(connect_packet(self.client_id, cfg.keepalive_s, cfg.username,
                                           cfg.password()))
            code = await protocol.connack
            if code == -1:
                raise ReaderError("the broker closed the connection before accepting it")
            if code != 0:
                transport.close()
                raise ReaderError(f"broker refused the connection: "
                                  f"{_CONNACK_CODES.get(code, code)}")
            transport.write(subscribe_packet(1, self._subscriptions))
            granted = await protocol.suback
            if 0x80 in granted:
                transport.close()
                raise ReaderError("broker refused a subscription (check its ACL)")
        self.connections += 1
        self.failed_attempts = 0
        self.connected.set()
        log.info("MQTT reader connected to %s:%d, subscribed to %d topics", cfg.host, cfg.port,
                 len(self._subscriptions))
        if self._on_connect is not None:
            self._on_connect()
        try:
            await self._keepalive(protocol, transport)
        finally:
            if not transport.is_closing():
                transport.write(DISCONNECT)
                transport.close()

    async def _keepalive(self, protocol: _Protocol, transport: asyncio.Transport) -> None:
        """Ping every half keepalive; a broker silent for 1.5 keepalives is gone."""
        interval = max(1.0, self._config.keepalive_s / 2)
        while True:
            done, _ = await asyncio.wait({protocol.closed}, timeout=interval)
            if done:
                raise ReaderError(protocol.closed.result())
            if time.monotonic() - protocol.last_heard > self._config.keepalive_s * 1.5:
                transport.close()
                raise ReaderError("the broker stopped answering pings")
            transport.write(PINGREQ)
