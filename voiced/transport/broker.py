"""The embedded MQTT broker (amqtt), for a zero-setup first run.

It is pure Python and slow (about 2k messages/s): fine for trying voiced with a few
satellites, not for production, where mosquitto runs as its own service.
"""

from __future__ import annotations

import logging
from typing import Any

from voiced.errors import TransportError

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """An amqtt broker listening on host:port inside the daemon's event loop."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._broker: Any = None

    async def start(self) -> None:
        """Start listening; raises TransportError when the port is taken."""
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        broker = Broker(config)
        try:
            await broker.start()
        except Exception as exc:
            raise TransportError(
                "broker_start",
                f"embedded broker could not listen on {self.host}:{self.port}: {exc}",
            ) from exc
        self._broker = broker
        log.info("embedded MQTT broker (amqtt) listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Stop the broker and close its connections."""
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()
