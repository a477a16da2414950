"""`voiced serve`: owns every task, wires the stages, starts and stops them in order.

Start: intents → models (loaded and warmed up) → history → plugins → broker → MQTT →
ready (sd_notify, retained `voiced/status`). Every long-lived task runs under the
supervisor: a site worker or the watcher that ends is restarted, the MQTT link ending is
fatal (`voiced serve` exits 1 so systemd restarts it). Stop (SIGTERM): stop taking audio,
let utterances in flight finish within `shutdown_grace_s`, flush outgoing messages, stop
plugins, close everything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from voiced import __version__, reloading, systemd
from voiced.arbiter_service import Arbitration
from voiced.asr.base import AsrStream, Transcriber
from voiced.asr.service import AsrService
from voiced.config import Config
from voiced.enrollment import VoiceEnrollment
from voiced.events import EventSink
from voiced.feeds import StreamingFeed
from voiced.inference import InferenceEngine
from voiced.ingest import Ingest
from voiced.intents.api import PluginContext
from voiced.intents.catalog import import_home_assistant_lists, load_catalog
from voiced.intents.plugins import PluginHost
from voiced.intents.recognizer import IntentRecognizer
from voiced.intents.router import Router, slots_of
from voiced.models import Termination, Utterance
from voiced.pipeline import Pipeline
from voiced.protect import Protector, warn_unknown_people
from voiced.recorder import HistoryWriter
from voiced.sessions import SiteWorker
from voiced.site_inbox import Control
from voiced.sites import SiteRegistry
from voiced.status import BROKER_DROPPED, Health, build_status, farewell
from voiced.storage import History
from voiced.supervise import Supervisor
from voiced.transport import hermes, native
from voiced.transport.broker import EmbeddedBroker
from voiced.transport.mqtt import MqttLink
from voiced.transport.outputs import AudioOut, HermesBridge, NativeEvents, builtin_tts
from voiced.transport.reader import MqttReader

log = logging.getLogger(__name__)

ENGINE_THREADS = 16
SPEAKER_THREADS = 4
"""Threads of the speaker service's own engine (streaming embeddings, enrollment)."""
STATS_INTERVAL_S = 2.0
"""How often the retained `voiced/status` is refreshed when something changed."""
LINK_DRAIN_S = 2.0
"""On stop, how long outgoing messages get to reach the broker."""


class Daemon:
    """The running server. `await start()`, then `await stop()`."""

    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        """voiced.yaml, re-read on reload for its handlers (None: keep the handlers)."""
        # threads mostly wait on worker processes, the GPU or batches: enough of them that
        # an utterance's final decode never queues behind other sites' feeds
        self.engine = InferenceEngine(workers=ENGINE_THREADS)
        self.supervisor = Supervisor()
        self.sink = EventSink(config.error_rate_limit_s)
        self.recognizer: IntentRecognizer | None = None
        self.asr: AsrService | None = None
        self.speakers: Any = None
        self.speaker_engine: InferenceEngine | None = None
        self.stuck: list[str] = []
        """Model calls still running when `stop()` gave up waiting for them."""
        self.history: History | None = None
        self.writer: HistoryWriter | None = None
        self.review: Any = None
        """The review queue (voiced.review.ReviewQueue) while history audio is kept."""
        self.audio_out: AudioOut | None = None
        self.broker: EmbeddedBroker | None = None
        self.http: Any = None
        """The HTTP server (voiced.http.server.HttpServer) when `http.enabled`."""
        self.link: MqttLink | None = None
        self.reader: MqttReader | None = None
        self.health = Health()
        self.host: PluginHost | None = None
        self.router: Router | None = None
        self.pipeline: Pipeline | None = None
        self.site_registry = SiteRegistry(config.sites, self._worker, self.supervisor,
                                          error_interval_s=config.error_rate_limit_s)
        self.sites: dict[str, SiteWorker] = self.site_registry.workers  # owned by the registry
        self.ingest = Ingest(self.site_registry, self._error)
        self.arbitration = Arbitration(config.sites, config.vad, self.sink, self._utterance)
        """Which satellite of a room group answers (voiced.arbiter_service)."""
        self.site_registry.observers.append(self.arbitration.site_changed)
        self.reload_lock = asyncio.Lock()
        self.reloads = 0
        self.reload_error: str | None = None
        """Why the last reload failed (None: it succeeded, or none was tried)."""
        self._ha_lists: dict[str, Any] = {}
        self.started_at = 0.0
        self.load_seconds: dict[str, float] = {}
        """Seconds each model took to load and warm up ("asr", "speakers"; /metrics)."""
        self.ready = asyncio.Event()

    @property
    def transcriber(self) -> Transcriber | None:
        """The speech recognizer backend (inside the ASR service)."""
        return self.asr.transcriber if self.asr is not None else None

    @property
    def fatal(self) -> asyncio.Event:
        """Set when voiced cannot go on (the MQTT link died): exit non-zero."""
        return self.supervisor.fatal

    # ---- start -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load everything and connect; raises VoicedError when start-up cannot succeed."""
        cfg = self.config
        cfg.mqtt.password()  # an unreadable credential stops start-up here, clearly
        # the state folder holds recordings and voiceprints: only voiced's user may read it
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        protector = Protector.from_config(cfg)  # secrets first: a missing one stops start-up
        if cfg.http.enabled:  # off loopback without its token: stop before loading models
            from voiced.http.server import HttpServer

            self.http = HttpServer(self)
        systemd.status("loading intents")
        await self.import_home_assistant()
        self.recognizer = await self.engine.run(self.load_intents)
        log.info("loaded %d intents (languages: %s) from %s",
                 len(self.recognizer.intent_names()),
                 ", ".join(r.language for r in self.recognizer.languages()),
                 ", ".join(str(p) for p in cfg.intents.paths))
        systemd.status("loading speech recognition")
        self.asr = AsrService.from_config(cfg.asr, self.recognizer, cfg.state_dir, self.engine)
        window_ms = cfg.asr.encoder_window_s * 1000
        if cfg.asr.backend == "whisper" and window_ms < cfg.vad.max_utterance_ms:
            log.warning("asr.encoder_window_s is %d s but vad.max_utterance_ms allows %.0f ms: "
                        "Whisper will not hear the end of longer commands",
                        cfg.asr.encoder_window_s, cfg.vad.max_utterance_ms)
        loading = time.monotonic()
        await self.asr.load()
        self.load_seconds["asr"] = time.monotonic() - loading
        if cfg.speakers.backend != "none":
            from voiced.speakers.service import create_speaker_service

            systemd.status("loading speaker identification")
            # their own threads: 20 satellites' speaker streams must not hold every
            # engine thread while recognition and intents wait (docs/speakers.md)
            self.speaker_engine = InferenceEngine(workers=SPEAKER_THREADS)
            self.speakers = create_speaker_service(cfg.speakers, cfg.state_dir,
                                                   self.speaker_engine)
            if self.speakers is not None:
                loading = time.monotonic()
                await self.engine.run(self.speakers.load)
                self.load_seconds["speakers"] = time.monotonic() - loading
        if cfg.broker.embedded:
            self.broker = EmbeddedBroker(cfg.broker.host, cfg.mqtt.port,
                                         cfg.broker.password_file)
            await self.broker.start()
        offline = json.dumps({"state": "offline"}).encode()
        # two connections: the link publishes (and hears the broker's own counters); the
        # reader takes every inbound message at wire speed, audio and control in one
        # connection so their order is kept (a hotword before the audio that follows it)
        self.link = MqttLink(cfg.mqtt, [BROKER_DROPPED], self.health.on_broker_message,
                             will=(native.STATUS_TOPIC, offline),
                             on_connect=self._on_connect, mqtt5=not cfg.broker.embedded)
        if not cfg.mqtt.hermes_control:
            log.info("mqtt.hermes_control is off: sessions open and stop only on "
                     "voiced/control/<site>/listen|stop")
        subscriptions = hermes.subscriptions(cfg.mqtt.hermes_control) + native.SUBSCRIPTIONS
        self.reader = MqttReader(cfg.mqtt, subscriptions,
                                 self._on_message, self._on_oversized,
                                 client_id=f"{self.link.client_id}-in",
                                 on_connect=self._on_connect,
                                 on_retained=self.ingest.retained)
        self._subscribe_outputs(self.link)
        context = PluginContext(publish=self.link.publish, state_dir=cfg.state_dir,
                                say=self._say_simple, people=cfg.speakers.people)
        self.host = PluginHost(context)
        warn_unknown_people(cfg, self.speakers)
        self.router = Router(cfg.handlers, context, slots_of(self.recognizer), host=self.host,
                             protector=protector)
        await self.router.start()
        enrollment = None
        if self.speakers is not None:
            enrollment = VoiceEnrollment(self.speakers, cfg.speakers.voice_enrollment,
                                         allow_add=cfg.speakers.voice_enrollment_add)
        self.pipeline = Pipeline(cfg, self.engine, self.asr, self.recognizer, self.router,
                                 self.sink, self.speakers,
                                 continue_session=self._continue_session, enrollment=enrollment)
        self.pipeline.review = self.review
        link, reader = self.link, self.reader
        self.supervisor.start("mqtt-link", link.run, critical=True)
        self.supervisor.start("mqtt-reader", reader.run, critical=True)
        self.supervisor.start("stats", self._publish_stats, restart=True)
        self.supervisor.start("loop-lag", self.health.watch_loop, restart=True)
        self.supervisor.start("timeouts", lambda: self.site_registry.run_ticks(self.health),
                              restart=True)
        interval = systemd.watchdog_interval()
        if interval is not None:
            self.supervisor.start("watchdog", lambda: self._watchdog(interval), restart=True)
        self.supervisor.start("intent-watch", lambda: reloading.watch_intents(self),
                              restart=True)
        if self.http is not None:
            await self.http.start()
        self.started_at = time.time()
        self.ready.set()
        systemd.ready()
        systemd.status("serving")
        log.info("voiced %s ready (asr: %s, speakers: %s, mqtt: %s:%d)", __version__,
                 cfg.asr.backend, cfg.speakers.backend, cfg.mqtt.host, cfg.mqtt.port)

    def _subscribe_outputs(self, link: MqttLink) -> None:
        """The event sink's subscribers: history first (its row exists before anyone hears
        `sessionEnded`), then the wires."""
        cfg = self.config
        if cfg.history.enabled:
            self.history = History(cfg.state_dir / "voiced.db")
            self.writer = HistoryWriter(self.history, cfg.history, cfg.state_dir, self.engine)
            from voiced.teach import review_active

            if review_active(cfg):
                from voiced.review import ReviewQueue

                self.review = ReviewQueue(cfg, self.history)
                self.writer.listeners.append(self.review.on_row)
            self.sink.subscribe(self.writer)
        self.sink.subscribe(HermesBridge(link.publish))
        self.sink.subscribe(NativeEvents(link.publish))
        self.audio_out = AudioOut(link.publish, builtin_tts(cfg), cfg.tts.voice)
        self.sink.subscribe(self.audio_out)

    def load_intents(self) -> IntentRecognizer:
        """The intent catalog, with the lists imported from Home Assistant."""
        return load_catalog(self.config, imported_lists=self._ha_lists)

    async def import_home_assistant(self) -> None:
        """Areas and entity names from Home Assistant; on failure keep what we had."""
        imported = await import_home_assistant_lists(self.config)
        if imported is not None:
            self._ha_lists = imported

    @property
    def connected(self) -> bool:
        """True while both MQTT connections (publishing and reading) are up."""
        return (self.link is not None and self.link.connected.is_set()
                and self.reader is not None and self.reader.connected.is_set())

    async def wait_connected(self) -> None:
        """Until both MQTT connections are up."""
        assert self.link is not None and self.reader is not None
        await self.link.connected.wait()
        await self.reader.connected.wait()

    def stats(self) -> dict[str, Any]:
        """Counters for `voiced/status`, the HTTP API and benchmarks."""
        return build_status(self)

    def _on_connect(self) -> None:
        assert self.link is not None
        if self.link.connected.is_set():
            self.supervisor.spawn(self.link.publish(native.STATUS_TOPIC, self.stats(), qos=1,
                                                    retain=True), name="status-on-connect")

    def _on_oversized(self, topic: str, size: int) -> None:
        self._error("transport", "payload_too_large",
                    f"{topic[:120]!a}: a {size}-byte message was skipped unread", None)

    async def _publish_stats(self) -> None:
        """Refresh the retained `voiced/status` while counters change."""
        assert self.link is not None
        last: dict[str, Any] | None = None
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            current = self.stats()
            if current != last and self.link.connected.is_set():
                await self.link.publish(native.STATUS_TOPIC, current, qos=1, retain=True)
                last = current

    @property
    def healthy(self) -> bool:
        """The loop runs (this is asked from it), the MQTT tasks live, nothing is fatal."""
        tasks = self.supervisor.tasks
        return (not self.fatal.is_set()
                and all(name in tasks and not tasks[name].done()
                        for name in ("mqtt-link", "mqtt-reader")))

    async def _watchdog(self, interval: float) -> None:
        """`WATCHDOG=1` at a third of `WatchdogSec`, only while healthy: a blocked event
        loop or a dead MQTT task stops the pings and systemd restarts voiced."""
        while True:
            await asyncio.sleep(interval / 3)
            if self.healthy:
                systemd.watchdog()

    # ---- ingest (synchronous, on the loop) -------------------------------------------------
    def _error(self, component: str, code: str, message: str, site: str | None) -> None:
        self.supervisor.spawn(self._report(component, code, message, site), name="error")

    async def _report(self, component: str, code: str, message: str, site: str | None) -> None:
        # logged only when not rate-limited: a flood of garbage must not flood the log
        if await self.sink.error(component, code, message, site):
            log.warning("%s", message)

    def _worker(self, site: str) -> SiteWorker:
        """A new worker for `site`; the site registry calls this for a valid message from
        an allowed site while under `sites.max`, and runs the worker as `site-<id>`."""
        assert self.asr is not None
        cfg = self.config
        return SiteWorker(site, cfg.sites.mode_for(site), cfg.vad, cfg.sites.queue_chunks,
                          self.engine, self.asr, self.sink, self._utterance,
                          speakers=self.speakers,
                          contender=self.arbitration.contender(site))

    def _on_message(self, topic: str, payload: bytes) -> None:
        self.ingest(topic, payload)

    # ---- pipeline hooks ----------------------------------------------------------------
    async def _utterance(self, utt: Utterance, decode: StreamingFeed[AsrStream] | None,
                         speaker: StreamingFeed[Any] | None) -> None:
        assert self.pipeline is not None
        await self.pipeline.submit(utt, decode, speaker)

    def _continue_session(self, site: str, session_id: str, intent_filter: tuple[str, ...],
                          custom_data: str | None, turn: str | None) -> None:
        worker = self.sites.get(site)
        if worker is not None and worker.offer(Control(
                "continue", session_id=session_id, custom_data=custom_data,
                intent_filter=intent_filter, turn=turn)):
            return
        # the site is gone (stopping, expired) or its queue holds only controls: the
        # session cannot go on, and must still end once
        why = (f"site {site}: the follow-up turn of session {session_id} could not be "
               "queued (the site is " + ("stopping or its queue is full)" if worker else
                                          "gone)"))
        self._error("dialogue", "queue_full" if worker else "site_gone", why, site)
        self.supervisor.spawn(self.sink.session_ended(site, session_id, Termination.ERROR,
                                                      custom_data, why), name="session-end")

    async def say(self, site: str, text: str, session_id: str | None, lang: str | None) -> None:
        """Speak on a satellite (built-in TTS as playBytes, or hermes/tts/say)."""
        await self.sink.say(site, text, session_id, lang)

    async def _say_simple(self, site: str, text: str) -> None:
        await self.say(site, text, None, self.config.intents.language)

    # ---- reload (SIGHUP, intent file changes): voiced.reloading ----------------------
    async def reload(self) -> bool:
        """Reload intents, handlers and the ASR grammar, all or nothing (False: the
        previous ones stay, the error is logged and published); `voiced.reloading`."""
        return await reloading.reload(self)

    # ---- stop --------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop taking audio, finish what is in flight (bounded), close everything."""
        cfg = self.config
        systemd.stopping()
        self.supervisor.stopping = True  # tasks ending from here on are not failures
        if self.link is not None:
            self.link.pause_ingest()
        if self.reader is not None:
            self.reader.pause()
        if self.http is not None:
            await self.http.stop()
        await self.site_registry.close()
        site_tasks = [t for n, t in self.supervisor.tasks.items() if n.startswith("site-")]
        for worker in self.sites.values():
            worker.request_shutdown()
        if site_tasks:
            # queued audio is processed and utterances in progress are ended, bounded
            _, late = await asyncio.wait(site_tasks, timeout=cfg.shutdown_grace_s)
            if late:
                log.warning("%d sites did not finish their queued audio in time", len(late))
        await self.arbitration.close()  # contests decided, winners run, losers released
        if self.pipeline is not None:
            await self.pipeline.drain(cfg.shutdown_grace_s)
        link_task = self.supervisor.tasks.pop("mqtt-link", None)
        await self.supervisor.stop()  # the reader with the rest: it is paused already
        if self.link is not None and link_task is not None and not link_task.done():
            await self.link.publish(native.STATUS_TOPIC, {"state": "offline"}, qos=1, retain=True)
            await self.link.drain(LINK_DRAIN_S)
            link_task.cancel()
            await asyncio.gather(link_task, return_exceptions=True)
        elif self.link is not None and self.fatal.is_set():
            await farewell(cfg)
        if self.host is not None:
            await self.host.stop()
        if self.speakers is not None:
            await self.speakers.close()
        if self.asr is not None:
            await self.asr.close()
        if self.history is not None:
            self.history.close()
        if self.review is not None:
            self.review.close()
        if self.broker is not None:
            await self.broker.stop()
        self.stuck = self.engine.close()
        if self.speaker_engine is not None:
            self.stuck += self.speaker_engine.close()
        log.info("voiced stopped")
