"""`voiced serve`: owns every task, wires the stages, starts and stops them in order.

Start: intents → models (loaded and warmed up) → history → plugins → broker → MQTT →
ready (sd_notify, retained `voiced/status`). Stop (SIGTERM): stop taking audio, let
utterances in flight finish within `shutdown_grace_s`, flush outgoing messages, stop
plugins, close everything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from voiced import __version__, systemd
from voiced.asr.base import AsrStream, Transcriber, create_transcriber
from voiced.config import Config
from voiced.enrollment import VoiceEnrollment
from voiced.errors import VoicedError
from voiced.feeds import StreamingFeed
from voiced.inference import InferenceEngine
from voiced.ingest import route
from voiced.intents.api import PluginContext
from voiced.intents.catalog import load_catalog
from voiced.intents.recognizer import IntentRecognizer
from voiced.intents.router import Router
from voiced.models import Utterance
from voiced.pipeline import Pipeline
from voiced.sessions import Control, SiteWorker
from voiced.storage import History
from voiced.transport import hermes, native
from voiced.transport.broker import EmbeddedBroker
from voiced.transport.mqtt import MqttLink
from voiced.transport.outputs import Outputs
from voiced.watch import snapshot

log = logging.getLogger(__name__)

ENGINE_THREADS = 16
WATCH_INTERVAL_S = 1.0
"""How often intent files are checked for changes."""
STATS_INTERVAL_S = 2.0
"""How often the retained `voiced/status` is refreshed when something changed."""


class Daemon:
    """The running server. `await start()`, then `await stop()`."""

    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        """voiced.yaml, re-read on reload for its handlers (None: keep the handlers)."""
        # threads mostly wait on worker processes, the GPU or batches: enough of them that
        # an utterance's final decode never queues behind other sites' feeds
        self.engine = InferenceEngine(workers=ENGINE_THREADS)
        self.recognizer: IntentRecognizer | None = None
        self.transcriber: Transcriber | None = None
        self.speakers: Any = None
        self.history: History | None = None
        self.broker: EmbeddedBroker | None = None
        self.link: MqttLink | None = None
        self.outputs: Outputs | None = None
        self.router: Router | None = None
        self.pipeline: Pipeline | None = None
        self.sites: dict[str, SiteWorker] = {}
        self._site_tasks: dict[str, asyncio.Task[None]] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._link_task: asyncio.Task[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self.reloads = 0
        self._tts: Any = None
        self._ha_lists: dict[str, Any] = {}
        self.started_at = 0.0
        self.ready = asyncio.Event()

    # ---- start -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load everything and connect; raises VoicedError when start-up cannot succeed."""
        cfg = self.config
        # the state folder holds recordings and voiceprints: only voiced's user may read it
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        systemd.status("loading intents")
        await self._import_home_assistant()
        self.recognizer = await self.engine.run(self._load_intents)
        log.info("loaded %d intents (languages: %s) from %s",
                 len(self.recognizer.intent_names()),
                 ", ".join(r.language for r in self.recognizer.languages()),
                 ", ".join(str(p) for p in cfg.intents.paths))
        systemd.status("loading speech recognition")
        self.transcriber = create_transcriber(cfg.asr, self.recognizer, cfg.state_dir)
        window_ms = cfg.asr.encoder_window_s * 1000
        if cfg.asr.backend == "whisper" and window_ms < cfg.vad.max_utterance_ms:
            log.warning("asr.encoder_window_s is %d s but vad.max_utterance_ms allows %.0f ms: "
                        "Whisper will not hear the end of longer commands",
                        cfg.asr.encoder_window_s, cfg.vad.max_utterance_ms)
        await self.engine.run(self.transcriber.load)
        if cfg.speakers.backend != "none":
            from voiced.speakers.service import create_speaker_service

            systemd.status("loading speaker identification")
            self.speakers = create_speaker_service(cfg.speakers, cfg.state_dir, self.engine)
            if self.speakers is not None:
                await self.engine.run(self.speakers.load)
        if cfg.history.enabled:
            self.history = await self.engine.run(History, cfg.state_dir / "voiced.db")
        self._tts = _find_tts(cfg)
        if cfg.broker.embedded:
            self.broker = EmbeddedBroker(cfg.broker.host, cfg.mqtt.port)
            await self.broker.start()
        offline = json.dumps({"state": "offline"}).encode()
        self.link = MqttLink(cfg.mqtt, hermes.SUBSCRIPTIONS + native.SUBSCRIPTIONS,
                             self._on_message, will=(native.STATUS_TOPIC, offline),
                             on_connect=self._on_connect, mqtt5=not cfg.broker.embedded)
        self.outputs = Outputs(self.link, cfg.error_rate_limit_s)
        context = PluginContext(publish=self.outputs.publish, state_dir=cfg.state_dir,
                                say=self._say_simple, people=cfg.speakers.people)
        self.router = Router(cfg.handlers, context, self._slot_names)
        await self.router.start()
        enrollment = None
        if self.speakers is not None:
            enrollment = VoiceEnrollment(self.speakers, cfg.speakers.voice_enrollment)
        self.pipeline = Pipeline(cfg, self.engine, self.transcriber, self.recognizer, self.router,
                                 self.outputs, self.history, self.speakers, say=self.say,
                                 continue_session=self._continue_session, enrollment=enrollment)
        self._link_task = asyncio.create_task(self.link.run(), name="mqtt-link")
        self._stats_task = asyncio.create_task(self._publish_stats(), name="stats")
        self._watch_task = asyncio.create_task(self._watch_intents(), name="intent-watch")
        self.started_at = time.time()
        self.ready.set()
        systemd.ready()
        systemd.status("serving")
        log.info("voiced %s ready (asr: %s, speakers: %s, mqtt: %s:%d)", __version__,
                 cfg.asr.backend, cfg.speakers.backend, cfg.mqtt.host, cfg.mqtt.port)

    def _load_intents(self) -> IntentRecognizer:
        """The intent catalog, with the lists imported from Home Assistant."""
        return load_catalog(self.config, imported_lists=self._ha_lists)

    async def _import_home_assistant(self) -> None:
        """Areas and entity names from Home Assistant; on failure keep what we had."""
        ha = self.config.intents.home_assistant
        if ha is None:
            return
        from voiced_plugins.home_assistant import import_home_assistant

        try:
            imported = await import_home_assistant(
                ha.url, token_env=ha.token_env, token_credential=ha.token_credential,
                domains=set(ha.domains), timeout_s=ha.timeout_s)
        except VoicedError as exc:
            log.error("could not import areas and devices from Home Assistant at %s (%s); "
                      "using the lists from voiced.yaml and the intent files", ha.url,
                      exc.message)
            return
        self._ha_lists = imported.to_hassil_lists()
        log.info("imported %d areas and %d devices from Home Assistant",
                 len(imported.areas), len(imported.entities))

    def _slot_names(self, intent: str) -> set[str] | None:
        assert self.recognizer is not None
        if intent not in self.recognizer.intent_names():
            return None
        return self.recognizer.slot_names(intent)

    def stats(self) -> dict[str, Any]:
        """Counters for `voiced/status`, the HTTP API and benchmarks."""
        return {
            "state": "ready",
            "version": __version__,
            "asr": self.config.asr.backend,
            "speakers": self.config.speakers.backend,
            "processed": self.pipeline.processed if self.pipeline else 0,
            "sites": {name: {"frames": w.frames, "dropped": w.dropped, "mode": str(w.mode)}
                      for name, w in self.sites.items()},
            "handlers": [s.as_dict() for s in self.router.statuses] if self.router else [],
        }

    def _on_connect(self) -> None:
        assert self.link is not None
        self._spawn(self.link.publish(native.STATUS_TOPIC, self.stats(), qos=1, retain=True))

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

    # ---- ingest (synchronous, on the loop) -------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _error(self, component: str, code: str, message: str, site: str | None) -> None:
        log.warning("%s", message)
        assert self.outputs is not None
        self._spawn(self.outputs.error(component, code, message, site))

    def _worker(self, site: str) -> SiteWorker | None:
        worker = self.sites.get(site)
        if worker is not None:
            return worker
        cfg = self.config
        if not cfg.sites.allowed(site):
            self._error("audioServer", "site_not_allowed",
                        f"site {site!r} is not in sites.allow; its audio is ignored", site)
            return None
        assert self.transcriber and self.outputs
        worker = SiteWorker(site, cfg.sites.mode_for(site), cfg.vad, cfg.sites.queue_chunks,
                            self.engine, self.transcriber, self.outputs, self._utterance,
                            streaming=self.transcriber.supports_streaming,
                            speakers=self.speakers)
        self.sites[site] = worker
        self._site_tasks[site] = asyncio.create_task(worker.run(), name=f"site-{site}")
        log.info("site %s connected (%s)", site, worker.mode)
        return worker

    def _on_message(self, topic: str, payload: bytes) -> None:
        route(topic, payload, self._worker, self._error)

    # ---- pipeline hooks ----------------------------------------------------------------
    async def _utterance(self, utt: Utterance, decode: StreamingFeed[AsrStream] | None,
                         speaker: StreamingFeed[Any] | None) -> None:
        assert self.pipeline is not None
        task = asyncio.create_task(self.pipeline.process(utt, decode, speaker),
                                   name=f"utt-{utt.site}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _continue_session(self, site: str, session_id: str, intent_filter: tuple[str, ...],
                          custom_data: str | None) -> None:
        worker = self.sites.get(site)
        if worker is not None:
            worker.offer(Control("continue", session_id=session_id, custom_data=custom_data,
                                 intent_filter=intent_filter))

    async def say(self, site: str, text: str, session_id: str | None, lang: str | None) -> None:
        """Speak on a satellite: built-in TTS as playBytes, or hermes/tts/say."""
        assert self.outputs is not None
        if self._tts is not None:
            try:
                wav = await self._tts.synthesize(text, self.config.tts.voice)
            except VoicedError as exc:
                log.warning("built-in TTS failed (%s); falling back to hermes/tts/say", exc)
            else:
                await self.outputs.play_bytes(site, str(uuid.uuid4()), wav)
                await self.outputs.say(site, text, session_id, lang)
                return
        await self.outputs.say(site, text, session_id, lang)

    async def _say_simple(self, site: str, text: str) -> None:
        await self.say(site, text, None, self.config.intents.language)

    # ---- reload (SIGHUP, intent file changes) -----------------------------------------
    async def reload(self) -> bool:
        """Reload intents, handlers and the ASR grammar without touching MQTT.

        A broken file keeps the previous set; the error is logged and published.
        """
        async with self._reload_lock:
            cfg = self.config
            assert self.outputs and self.transcriber and self.pipeline and self.router
            try:
                handlers = cfg.handlers
                if self.config_path is not None:
                    from voiced.config import load_config

                    handlers = load_config(self.config_path).handlers
                await self._import_home_assistant()
                recognizer = await self.engine.run(self._load_intents)
            except VoicedError as exc:
                log.error("reload failed, keeping the previous intents: %s", exc.message)
                await self.outputs.error("nlu", exc.code, exc.message, None)
                return False
            await self.engine.run(self.transcriber.reload, recognizer)
            old_router, old_recognizer = self.router, self.recognizer
            self.recognizer = recognizer
            context = PluginContext(publish=self.outputs.publish, state_dir=cfg.state_dir,
                                    say=self._say_simple, people=cfg.speakers.people)
            router = Router(handlers, context, self._slot_names)
            await router.start()
            self.router = router
            self.pipeline.recognizer = recognizer
            self.pipeline.router = router
            await old_router.stop()
            self.reloads += 1
            log.info("reloaded %d intents (was %d) and %d handlers",
                     len(recognizer.intent_names()),
                     len(old_recognizer.intent_names()) if old_recognizer else 0, len(handlers))
            return True

    async def _watch_intents(self) -> None:
        """Reload when an intent file is added, removed or changed."""
        paths = self.config.intents.paths
        last = await asyncio.to_thread(snapshot, paths)
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            current = await asyncio.to_thread(snapshot, paths)
            if current != last:
                last = current
                log.info("intent files changed; reloading")
                await self.reload()

    # ---- stop --------------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop taking audio, finish what is in flight (bounded), close everything."""
        cfg = self.config
        systemd.stopping()
        if self.link is not None:
            self.link.pause_ingest()
        for worker in self.sites.values():
            await worker.shutdown()
        if self._site_tasks:
            # queued audio is processed and utterances in progress are ended, bounded
            _, late = await asyncio.wait(set(self._site_tasks.values()),
                                         timeout=cfg.shutdown_grace_s)
            if late:
                log.warning("%d sites did not finish their queued audio in time", len(late))
        if self._inflight:
            log.info("waiting up to %.1f s for %d utterances in flight", cfg.shutdown_grace_s,
                     len(self._inflight))
            _, pending = await asyncio.wait(set(self._inflight), timeout=cfg.shutdown_grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for extra in (self._stats_task, self._watch_task):
            if extra is not None:
                extra.cancel()
        for task in self._site_tasks.values():
            task.cancel()
        await asyncio.gather(*self._site_tasks.values(), return_exceptions=True)
        if self.link is not None and self._link_task is not None:
            await self.link.publish(native.STATUS_TOPIC, {"state": "offline"}, qos=1, retain=True)
            await self.link.drain(2.0)
            self._link_task.cancel()
            await asyncio.gather(self._link_task, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.router is not None:
            await self.router.stop()
        if self.pipeline is not None:
            await self.pipeline.close()
        if self.speakers is not None:
            await self.speakers.close()
        if self.transcriber is not None:
            await self.engine.run(self.transcriber.close)
        if self.history is not None:
            self.history.close()
        if self.broker is not None:
            await self.broker.stop()
        self.engine.close()
        log.info("voiced stopped")


def _find_tts(config: Config) -> Any:
    """The built-in TTS module when configured and available, else None."""
    if config.tts.mode == "hermes":
        return None
    try:
        from voiced import tts  # type: ignore[attr-defined]
    except ImportError:
        return None
    if tts.find_tts(config.tts.voice) is None:
        if config.tts.mode == "builtin":
            log.warning("tts.mode is builtin but no TTS program (espeak-ng, piper) is installed; "
                        "answers go to hermes/tts/say")
        return None
    return tts
