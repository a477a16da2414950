"""What `voiced/status` tells: the daemon's counters, and the health monitors behind them.

`Health` watches what can go wrong with load rather than with code: the event loop falling
behind (lag), the MQTT broker dropping messages voiced read too slowly (mosquitto's `$SYS`
counter), and the satellites whose audio arrives slower than real time (their site
workers count that). `build_status` gathers everything for the retained status message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from voiced import __version__
from voiced.transport import native

if TYPE_CHECKING:
    from voiced.config import Config
    from voiced.daemon import Daemon

log = logging.getLogger(__name__)

BROKER_DROPPED = "$SYS/broker/publish/messages/dropped"
"""mosquitto's running count of messages it dropped (published every sys_interval)."""
LAG_INTERVAL_S = 0.1
OVERLOAD_LAG_MS = 250.0
"""An event loop this late is overloaded: idle sites shed their stale audio."""


class Health:
    """Loop lag and broker drops, measured while voiced runs."""

    def __init__(self) -> None:
        self.lag_ms = 0.0
        """The event loop's worst lateness in the last second (ms)."""
        self.lag_max_ms = 0.0
        self.overloaded_s = 0.0
        """Seconds spent overloaded since start."""
        self.broker_dropped = 0
        """Messages the broker dropped since voiced started ($SYS, mosquitto)."""
        self._broker_start: int | None = None
        self.behind = 0
        """Sites whose audio arrived slower than real time in their last window."""
        self._overloaded_since: float | None = None

    @property
    def overloaded(self) -> bool:
        """True while the event loop is more than OVERLOAD_LAG_MS late."""
        return self._overloaded_since is not None

    async def watch_loop(self) -> None:
        """Measure how late the loop wakes a 100 ms timer (runs as a supervised task)."""
        window: list[float] = []
        while True:
            planned = time.monotonic() + LAG_INTERVAL_S
            await asyncio.sleep(LAG_INTERVAL_S)
            late = max(0.0, (time.monotonic() - planned) * 1000)
            window.append(late)
            if len(window) >= 10:
                self.lag_ms = max(window)
                self.lag_max_ms = max(self.lag_max_ms, self.lag_ms)
                window.clear()
            self._overload(late)

    def _overload(self, late_ms: float) -> None:
        now = time.monotonic()
        if late_ms > OVERLOAD_LAG_MS and self._overloaded_since is None:
            self._overloaded_since = now
            log.warning("overloaded: the event loop is %.0f ms late; idle sites shed stale "
                        "audio until it catches up", late_ms)
        elif late_ms < OVERLOAD_LAG_MS / 2 and self._overloaded_since is not None:
            self.overloaded_s += now - self._overloaded_since
            self._overloaded_since = None
            log.info("no longer overloaded")

    def sites_behind(self, behind: int, total: int) -> None:
        """How many sites receive audio slower than real time; warned when it grows."""
        if behind > self.behind:
            log.warning("%d of %d sites receive their audio slower than real time: frames "
                        "are lost before voiced sees them (the network, the satellites, or "
                        "the broker dropping what voiced reads too slowly)", behind, total)
        elif behind == 0 and self.behind:
            log.info("every site receives its audio in real time again")
        self.behind = behind

    def on_broker_message(self, topic: str, payload: bytes) -> None:
        """mosquitto's count of dropped messages; logged when it grows."""
        if topic != BROKER_DROPPED:
            return
        try:
            total = int(payload)
        except ValueError:
            return
        if self._broker_start is None:
            self._broker_start = total
        grown = total - self._broker_start - self.broker_dropped
        self.broker_dropped = total - self._broker_start
        if grown > 0:
            log.warning("the MQTT broker dropped %d messages (%d since voiced started): a "
                        "client, maybe voiced, reads too slowly", grown, self.broker_dropped)

    def as_dict(self) -> dict[str, Any]:
        """For voiced/status."""
        return {"loop_lag_ms": round(self.lag_ms, 1), "loop_lag_max_ms": round(self.lag_max_ms, 1),
                "overloaded": self.overloaded, "overloaded_s": round(self.overloaded_s, 1),
                "broker_dropped": self.broker_dropped, "sites_behind": self.behind}


def build_status(daemon: Daemon) -> dict[str, Any]:
    """Counters for `voiced/status`, the HTTP API and benchmarks."""
    link, reader, pipeline = daemon.link, daemon.reader, daemon.pipeline
    return {
        "state": "ready" if daemon.connected else "starting",
        "version": __version__,
        "asr": daemon.config.asr.backend,
        "speakers": daemon.config.speakers.backend,
        "processed": pipeline.processed if pipeline else 0,
        "inflight": pipeline.inflight if pipeline else 0,
        "rejected": pipeline.rejected if pipeline else 0,
        "sites": {name: w.status() for name, w in daemon.sites.items()},
        "site_registry": daemon.site_registry.status(),
        "handlers": [s.as_dict() for s in daemon.router.statuses] if daemon.router else [],
        "plugins": [s.as_dict() for s in daemon.host.statuses.values()] if daemon.host else [],
        "tasks": daemon.supervisor.stats(),
        "ingest_failures": daemon.ingest.failures,
        "retained_refused": daemon.ingest.retained_refused,
        "events": {"emitted": daemon.sink.emitted, "subscriber_failures": daemon.sink.failures,
                   "errors_suppressed": daemon.sink.errors_suppressed},
        "health": daemon.health.as_dict(),
        "reloads": daemon.reloads,
        "arbitration": daemon.arbitration.status(),
        "mqtt": link.status() if link is not None else None,
        "mqtt_in": reader.status() if reader is not None else None,
        "asr_worker_restarts": getattr(daemon.transcriber, "restarts", 0),
        "asr_remote": _remote_status(daemon),
        "fuzzy_gave_up": daemon.recognizer.fuzzy_gave_up if daemon.recognizer else 0,
    }


def _remote_status(daemon: Daemon) -> dict[str, Any] | None:
    """asr.backend wyoming or ray: where transcripts came from (voiced.asr.remote)."""
    status = getattr(daemon.transcriber, "status", None)
    return status() if callable(status) else None


async def farewell(config: Config) -> None:
    """The link died: say `offline` on a fresh connection, so the retained status does not
    claim "ready" for a voiced that no longer hears anything (best effort, bounded)."""
    import aiomqtt

    try:
        tls = config.mqtt.tls.context() if config.mqtt.tls is not None else None
        async with asyncio.timeout(3.0), aiomqtt.Client(
                config.mqtt.host, config.mqtt.port, username=config.mqtt.username,
                password=config.mqtt.password(), tls_context=tls) as client:
            await client.publish(native.STATUS_TOPIC, json.dumps({"state": "offline"}),
                                 qos=1, retain=True)
    except Exception as exc:
        log.warning("could not publish the offline status: %r", exc)
