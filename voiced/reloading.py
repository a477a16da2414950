"""Reloading a running daemon (SIGHUP, a changed intent file): intents, handlers, the ASR
grammar and the sites' arbitration groups, all or nothing; MQTT and plugins keep running.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from voiced.errors import VoicedError
from voiced.intents.router import Router, slots_of
from voiced.protect import Protector
from voiced.watch import snapshot

if TYPE_CHECKING:
    from voiced.daemon import Daemon

log = logging.getLogger("voiced.daemon")

WATCH_INTERVAL_S = 1.0
"""How often intent files are checked for changes."""


async def reload(daemon: Daemon) -> bool:
    """Reload intents, handlers and the ASR grammar without touching MQTT or plugins.

    All-or-nothing: a broken file, or a grammar the recognizer cannot build, keeps the
    previous intents and grammar; the error is logged and published on hermes/error/nlu.
    Plugins keep running; only those no handler uses any more are stopped.
    """
    async with daemon.reload_lock:
        cfg = daemon.config
        assert daemon.asr and daemon.pipeline and daemon.router and daemon.host
        try:
            handlers, protector = cfg.handlers, daemon.router.protector
            sites = None
            if daemon.config_path is not None:
                from voiced.config import load_config

                fresh = load_config(daemon.config_path)
                handlers, protector = fresh.handlers, Protector.from_config(fresh)
                sites = fresh.sites
            await daemon.import_home_assistant()
            recognizer = await daemon.engine.run(daemon.load_intents)
            await daemon.asr.reload(recognizer)
        except Exception as exc:
            code = exc.code if isinstance(exc, VoicedError) else "reload_failed"
            message = exc.message if isinstance(exc, VoicedError) else repr(exc)
            log.error("reload failed, keeping the previous intents: %s", message,
                      exc_info=not isinstance(exc, VoicedError))
            daemon.reload_error = message
            await daemon.sink.error("nlu", code, message, None)
            return False
        # a new routing table starts with no confirmation waiting (fail closed)
        router = Router(handlers, daemon.host.context, slots_of(recognizer), host=daemon.host,
                        protector=protector)
        await router.start()
        old_recognizer = daemon.recognizer
        daemon.recognizer = daemon.pipeline.recognizer = recognizer
        daemon.router = daemon.pipeline.router = router
        await daemon.host.release(router.plugins_used)
        if sites is not None:  # room groups and their arbitration (README "Arbitration")
            await daemon.arbitration.regroup(sites)
            for site, worker in daemon.sites.items():
                worker.contender = daemon.arbitration.rebind(site, worker.contender)
        daemon.reloads += 1
        daemon.reload_error = None
        log.info("reloaded %d intents (was %d) and %d handlers",
                 len(recognizer.intent_names()),
                 len(old_recognizer.intent_names()) if old_recognizer else 0, len(handlers))
        return True


async def watch_intents(daemon: Daemon) -> None:
    """Reload when an intent file is added, removed or changed; an error in one check
    is logged and the watcher goes on."""
    paths = daemon.config.intents.paths
    last = await asyncio.to_thread(snapshot, paths)
    while True:
        await asyncio.sleep(WATCH_INTERVAL_S)
        try:
            current = await asyncio.to_thread(snapshot, paths)
            if current != last:
                last = current
                log.info("intent files changed; reloading")
                await daemon.reload()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("intent-file watcher: check failed; still watching")
