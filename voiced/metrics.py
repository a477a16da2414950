"""Prometheus metrics of one daemon, in a registry of its own (never the global one, so
several daemons in one process, as in the tests, never share a counter).

Two sources. `Metrics` is an event subscriber: it observes the stage timings of every
utterance's OUTCOME event into histograms and counts outcomes, events, errors and handler
results as they happen. `DaemonCollector` reads the daemon's counters (`Daemon.stats()`,
the same numbers as `voiced/status`) when Prometheus scrapes: frames, drops and queue
depths per site, MQTT connections, plugin states, model load times, batch sizes.

Label values are bounded: at most `MAX_SITE_LABELS` sites and `MAX_LABELS` values of any
other label get their own series; later ones share `_other`. Names are in the README
("Metrics") and docs/grafana-dashboard.json charts them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from voiced.events import Subscriber
from voiced.models import EventType, PipelineEvent, Stage

MAX_SITE_LABELS = 200
"""Sites with series of their own; the rest are summed under `site="_other"`."""
MAX_LABELS = 100
"""Distinct values of any other label (error codes, plugins) before `_other`."""
OTHER = "_other"
LABEL_MAX_CHARS = 64
STAGES = (*(str(s) for s in Stage if s != Stage.INGEST), "processing")
"""Timings observed: vad (endpoint wait), asr, speaker, nlu, handler, processing."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0,
                   5.0, 10.0, 30.0)
AUDIO_BUCKETS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0, 30.0)


class LabelCap:
    """Keeps a label's values bounded: the first `limit` distinct values are kept, later
    ones become `_other`; values are cut to printable ASCII of LABEL_MAX_CHARS."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: object) -> str:
        text = "" if value is None else str(value)
        if not (text.isascii() and text.isprintable()) or len(text) > LABEL_MAX_CHARS:
            text = "".join(c if c.isascii() and c.isprintable() else "?"
                           for c in text[:LABEL_MAX_CHARS])
        if text in self.seen:
            return text
        if len(self.seen) < self.limit:
            self.seen.add(text)
            return text
        return OTHER


class Metrics(Subscriber):
    """The daemon's metrics; subscribe it to the event sink, serve `exposition()`."""

    name = "metrics"

    def __init__(self, daemon: Any, live: Callable[[], dict[str, float]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.sites = LabelCap(MAX_SITE_LABELS)
        self._labels: dict[str, LabelCap] = {}
        r = self.registry
        self.stage_seconds = Histogram(
            "voiced_stage_seconds", "Time spent per pipeline stage: vad is the endpoint wait "
            "(last speech to end of utterance), processing is endpoint to intent",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Histogram(
            "voiced_utterance_audio_seconds", "Length of the audio of each utterance",
            buckets=AUDIO_BUCKETS, registry=r)
        self.utterances = Counter("voiced_utterances", "Utterances by site and outcome",
                                  ["site", "outcome"], registry=r)
        self.events = Counter("voiced_events", "Pipeline events emitted, by type", ["type"],
                              registry=r)
        self.errors = Counter("voiced_errors", "Error events by component and code",
                              ["component", "code"], registry=r)
        self.handler_results = Counter(
            "voiced_handler_results", "Intents handed to plugins, by plugin and outcome "
            "(error and timeout are plugin failures)", ["plugin", "outcome"], registry=r)
        self.arbitrations = Counter(
            "voiced_arbitrations", "Arbitration decisions (which satellite of a room group "
            "answers), by group and reason", ["group", "reason"], registry=r)
        for stage in STAGES:
            self.stage_seconds.labels(stage)  # every stage's series exists from the start
        ProcessCollector(registry=r)
        r.register(DaemonCollector(daemon, self.sites, live))

    def label(self, name: str, value: object) -> str:
        """`value` bounded for the label `name`."""
        cap = self._labels.get(name)
        if cap is None:
            cap = self._labels[name] = LabelCap(MAX_LABELS)
        return cap(value)

    async def handle(self, event: PipelineEvent) -> None:
        """Count one event; observe an OUTCOME's timings."""
        self.events.labels(self.label("type", event.type)).inc()
        if event.type == EventType.OUTCOME:
            self.utterances.labels(self.sites(event.site),
                                   self.label("outcome", event.data.get("outcome"))).inc()
            for stage, ms in event.timings_ms.items():
                if stage in STAGES and ms >= 0:
                    self.stage_seconds.labels(stage).observe(ms / 1000)
            utt = event.utterance
            if utt is not None and utt.pcm:
                self.audio_seconds.observe(utt.duration_s)
        elif event.type == EventType.ERROR:
            self.errors.labels(self.label("component", event.data.get("component")),
                               self.label("code", event.data.get("code"))).inc()
        elif event.type == EventType.HANDLED:
            self.handler_results.labels(self.label("plugin", event.data.get("plugin") or "none"),
                                        self.label("outcome", event.data.get("outcome"))).inc()
        elif event.type == EventType.ARBITRATION:
            self.arbitrations.labels(self.label("group", event.data.get("group")),
                                     self.label("reason", event.data.get("reason"))).inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], value)
    return family


def _counter(name: str, doc: str, value: float | None) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], value)
    return family


class DaemonCollector(Collector):
    """The daemon's own counters, read at scrape time."""

    def __init__(self, daemon: Any, sites: LabelCap,
                 live: Callable[[], dict[str, float]] | None = None) -> None:
        self.daemon = daemon
        self.sites = sites
        self.live = live
        self.tasks = LabelCap(MAX_LABELS)
        self.plugins = LabelCap(MAX_LABELS)

    def describe(self) -> list[Metric]:
        """Nothing to check at registration (collect reads a running daemon)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every family, from `daemon.stats()` and the services."""
        d = self.daemon
        stats = d.stats()
        info = GaugeMetricFamily("voiced_info", "voiced's version and backends (always 1)",
                                 labels=["version", "asr", "speakers"])
        info.add_metric([str(stats["version"]), str(stats["asr"]), str(stats["speakers"])], 1)
        yield info
        yield _gauge("voiced_ready", "1 while voiced is connected and serving",
                     1 if stats["state"] == "ready" else 0)
        started = getattr(d, "started_at", 0.0)
        yield _gauge("voiced_uptime_seconds", "Seconds since voiced became ready",
                     time.time() - started if started else 0.0)
        yield _counter("voiced_utterances_processed", "Utterances run to their end",
                       stats["processed"])
        yield _gauge("voiced_utterances_inflight", "Utterances being recognized or handled",
                     stats["inflight"])
        yield _counter("voiced_utterances_rejected", "Utterances refused because too many "
                       "were in flight (max_utterances_in_flight)", stats["rejected"])
        yield from self._sites(stats)
        yield from self._health(stats)
        yield from self._mqtt(stats)
        yield from self._plugins(stats)
        yield from self._models()
        if self.live is not None:
            live = self.live()
            yield _gauge("voiced_websocket_clients", "Open /api/events and /api/stream "
                         "websockets", live.get("clients"))
            yield _counter("voiced_websocket_messages", "Messages fanned out to websockets "
                           "(once per message, however many clients took it)",
                           live.get("messages"))
            yield _counter("voiced_websocket_dropped", "Messages dropped for websocket "
                           "clients that read too slowly", live.get("dropped"))
            yield _counter("voiced_websocket_closed_slow", "Websocket clients closed because "
                           "they stopped reading", live.get("closed_slow"))

    def _sites(self, stats: dict[str, Any]) -> Iterator[Metric]:
        per_site: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "frames": CounterMetricFamily("voiced_site_frames", "20 ms audio frames received "
                                          "and processed, per site", labels=["site"]),
            "dropped": CounterMetricFamily("voiced_site_dropped_chunks", "Audio messages "
                                           "dropped because the site's queue was full",
                                           labels=["site"]),
            "shed": CounterMetricFamily("voiced_site_shed_chunks", "Stale audio messages an "
                                        "idle site dropped to catch up (overload)",
                                        labels=["site"]),
            "too_fast": CounterMetricFamily("voiced_site_too_fast_chunks", "Audio messages "
                                            "refused because the site sent far faster than "
                                            "real time", labels=["site"]),
            "queued": GaugeMetricFamily("voiced_site_queue_depth", "Messages waiting in the "
                                        "site's ingest queue", labels=["site"]),
            "crashes": CounterMetricFamily("voiced_site_crashes", "Times processing failed "
                                           "and the site was reset", labels=["site"]),
        }
        realtime = GaugeMetricFamily("voiced_site_realtime_ratio", "Audio seconds received "
                                     "per wall second while streaming (below 0.9: frames are "
                                     "lost before voiced)", labels=["site"])
        sums: dict[str, dict[str, float]] = {key: {} for key in per_site}
        for site, status in sorted(stats["sites"].items()):
            label = self.sites(site)
            for key in per_site:
                sums[key][label] = sums[key].get(label, 0) + float(status.get(key, 0))
            if label != OTHER:
                realtime.add_metric([label], float(status.get("realtime", 1.0)))
        for key, family in per_site.items():
            for label, value in sums[key].items():
                family.add_metric([label], value)
            yield family
        yield realtime
        registry = stats["site_registry"]
        yield _gauge("voiced_sites", "Sites being served", registry.get("live"))
        yield _gauge("voiced_sites_max", "Most sites served at once (sites.max)",
                     registry.get("max"))
        yield _counter("voiced_sites_refused", "Site creations refused (not allowed, full, "
                       "in use)", registry.get("refused"))
        yield _counter("voiced_sites_expired", "Sites forgotten after being idle",
                       registry.get("expired"))

    def _health(self, stats: dict[str, Any]) -> Iterator[Metric]:
        health = stats["health"]
        yield _gauge("voiced_sites_behind", "Sites whose audio arrives slower than real time",
                     health.get("sites_behind"))
        yield _counter("voiced_broker_dropped_messages", "Messages the MQTT broker dropped "
                       "since voiced started (mosquitto $SYS)", health.get("broker_dropped"))
        yield _gauge("voiced_loop_lag_seconds", "Worst event-loop lateness in the last second",
                     float(health.get("loop_lag_ms", 0.0)) / 1000)
        yield _gauge("voiced_overloaded", "1 while the event loop is overloaded",
                     1 if health.get("overloaded") else 0)
        yield _counter("voiced_overloaded_seconds", "Seconds spent overloaded",
                       health.get("overloaded_s"))
        events = stats["events"]
        yield _counter("voiced_event_subscriber_failures", "Event subscriber calls that "
                       "raised", events.get("subscriber_failures"))
        yield _counter("voiced_errors_suppressed", "Error events not sent because of the "
                       "per-site rate limit", events.get("errors_suppressed"))
        yield _counter("voiced_reloads", "Successful intent reloads", stats.get("reloads"))
        yield _counter("voiced_asr_worker_restarts", "Speech recognition worker processes "
                       "restarted", stats.get("asr_worker_restarts"))
        yield _counter("voiced_fuzzy_gave_up", "Fuzzy intent matches abandoned for time",
                       stats.get("fuzzy_gave_up"))
        yield self._tasks(stats, "failures", "Supervised tasks that ended unexpectedly")
        yield self._tasks(stats, "restarts", "Supervised tasks restarted")

    def _tasks(self, stats: dict[str, Any], key: str, doc: str) -> Metric:
        """Per task name; the site workers (`site-<id>`) together as `site`."""
        family = CounterMetricFamily(f"voiced_task_{key}", doc, labels=["task"])
        totals: dict[str, float] = {}
        for task, count in stats["tasks"].get(key, {}).items():
            name = self.tasks("site" if str(task).startswith("site-") else task)
            totals[name] = totals.get(name, 0) + count
        for name, count in sorted(totals.items()):
            family.add_metric([name], count)
        return family

    def _mqtt(self, stats: dict[str, Any]) -> Iterator[Metric]:
        connected = GaugeMetricFamily("voiced_mqtt_connected", "1 while the MQTT connection "
                                      "is up", labels=["connection"])
        connections = CounterMetricFamily("voiced_mqtt_connections", "MQTT connections made",
                                          labels=["connection"])
        reconnects = CounterMetricFamily("voiced_mqtt_reconnects", "MQTT connections made "
                                         "after the first", labels=["connection"])
        failures = CounterMetricFamily("voiced_mqtt_connect_failures", "MQTT connection "
                                       "attempts that failed or connections that broke",
                                       labels=["connection"])
        for name, key in (("publish", "mqtt"), ("read", "mqtt_in")):
            status = stats.get(key)
            if not status:
                continue
            made = int(status.get("connections", 0))
            connected.add_metric([name], 1 if status.get("connected") else 0)
            connections.add_metric([name], made)
            reconnects.add_metric([name], max(0, made - 1))
            failures.add_metric([name], status.get("failed_attempts", 0))
        yield from (connected, connections, reconnects, failures)
        out, inbound = stats.get("mqtt") or {}, stats.get("mqtt_in") or {}
        yield _counter("voiced_mqtt_received_messages", "Messages read from the broker",
                       inbound.get("received"))
        yield _gauge("voiced_mqtt_outgoing_queue", "Messages waiting to be published",
                     out.get("pending"))
        yield _counter("voiced_mqtt_outgoing_dropped", "Outgoing messages dropped (queue "
                       "full while disconnected)", out.get("dropped"))
        yield _counter("voiced_mqtt_outgoing_rejected", "Outgoing messages the broker "
                       "rejected", out.get("rejected"))

    def _plugins(self, stats: dict[str, Any]) -> Iterator[Metric]:
        state = GaugeMetricFamily("voiced_plugin_state", "1 for each plugin's current state",
                                  labels=["plugin", "state"])
        for plugin in stats.get("plugins", []):
            state.add_metric([self.plugins(plugin.get("name")), str(plugin.get("state"))], 1)
        yield state
        handlers = GaugeMetricFamily("voiced_handlers", "Configured handlers by state",
                                     labels=["state"])
        rows = stats.get("handlers", [])
        handlers.add_metric(["ok"], sum(1 for h in rows if h.get("ok")))
        handlers.add_metric(["failed"], sum(1 for h in rows if not h.get("ok")))
        yield handlers

    def _models(self) -> Iterator[Metric]:
        d = self.daemon
        load = GaugeMetricFamily("voiced_model_load_seconds", "Seconds each model took to "
                                 "load and warm up at start", labels=["model"])
        for model, seconds in sorted(getattr(d, "load_seconds", {}).items()):
            load.add_metric([str(model)], seconds)
        yield load
        mean = GaugeMetricFamily("voiced_batch_size_recent_mean", "Mean size of the last "
                                 "(up to 100) micro-batches", labels=["service"])
        largest = GaugeMetricFamily("voiced_batch_size_recent_max", "Largest of the last "
                                    "(up to 100) micro-batches", labels=["service"])
        wait = GaugeMetricFamily("voiced_batch_wait_seconds_recent_mean", "Mean time the "
                                 "oldest request of the last (up to 100) micro-batches waited "
                                 "for its batch", labels=["service"])
        for service, batcher in _batchers(d):
            history = list(getattr(batcher, "history", []))
            if not history:
                continue
            mean.add_metric([service], sum(b.size for b in history) / len(history))
            largest.add_metric([service], max(b.size for b in history))
            wait.add_metric([service], sum(b.waited_ms for b in history) / len(history) / 1000)
        yield from (mean, largest, wait)


def _batchers(daemon: Any) -> Iterable[tuple[str, Any]]:
    asr = getattr(daemon, "asr", None)
    if asr is not None and getattr(asr, "batcher", None) is not None:
        yield "asr", asr.batcher
    speakers = getattr(daemon, "speakers", None)
    batcher = getattr(speakers, "_batcher", None) if speakers is not None else None
    if batcher is not None:
        yield "speakers", batcher
