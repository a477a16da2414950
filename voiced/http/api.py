"""The REST API under /api/ (JSON; described by /api/openapi.json).

This module registers every REST route group (recognition, history, speakers) and holds
the small ones itself: GET /api/status, POST /api/reload and the OpenAPI document.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from voiced import __version__
from voiced.http import api_history, api_recognize, api_review, api_speakers
from voiced.http.errors import ApiError
from voiced.http.keys import AUTH, DAEMON
from voiced.http.openapi import spec
from voiced.vad.detectors import describe as describe_vad

HEARD_RECENTLY_S = 5.0
"""A satellite whose audio arrived within this many seconds counts as connected."""


async def status(request: web.Request) -> web.Response:
    """voiced/status's counters, with the models, the intents and every satellite."""
    daemon = request.app[DAEMON]
    body = daemon.stats()
    body.update(
        uptime_s=round(time.time() - daemon.started_at, 1) if daemon.started_at else 0.0,
        started_at=daemon.started_at or None,
        models=_models(daemon),
        intents=_intents(daemon),
        satellites=satellites(daemon),
        http={"url": daemon.http.url if daemon.http else None,
              "auth": "token" if request.app[AUTH].required else "loopback"},
    )
    return web.json_response(body)


def satellites(daemon: Any) -> list[dict[str, Any]]:
    """Every live site and every site named in the config, by id."""
    cfg = daemon.config.sites
    now = time.time()
    names = sorted({*daemon.sites, *cfg.allow, *cfg.overrides})
    out = []
    for site in names:
        worker = daemon.sites.get(site)
        entry: dict[str, Any] = {"site": site, "live": worker is not None,
                                 "mode": str(cfg.mode_for(site)), "area": cfg.area_for(site),
                                 "connected": False, "last_heard": None, "last_heard_s": None,
                                 "level_dbfs": None, "frames": 0, "dropped": 0}
        if worker is not None:
            heard = worker.last_audio_wall
            entry.update(worker.status())
            entry.update(
                mode=str(worker.mode),
                connected=heard is not None and now - heard <= HEARD_RECENTLY_S,
                last_heard=heard, last_heard_s=round(now - heard, 2) if heard else None,
                level_dbfs=round(worker.level_dbfs, 1) if heard else None)
        out.append(entry)
    return out


def _models(daemon: Any) -> dict[str, Any]:
    cfg = daemon.config
    asr: dict[str, Any] = {"backend": cfg.asr.backend, "language": cfg.asr.language,
                           "device": cfg.asr.device}
    if cfg.asr.backend == "pocketsphinx":
        asr["mode"] = cfg.asr.mode
    else:
        asr["model"] = cfg.asr.model
    speakers: dict[str, Any] = {"backend": cfg.speakers.backend}
    if daemon.speakers is not None:
        speakers["model"] = daemon.speakers.embedder.peek_model_id()
    return {"asr": asr, "speakers": speakers,
            "vad": {**describe_vad(cfg.vad),
                    "end_silence_ms": cfg.vad.silence_ms, "endpoint": cfg.vad.endpoint,
                    "min_silence_ms": cfg.vad.min_silence_ms}}


def _intents(daemon: Any) -> dict[str, Any]:
    recognizer = daemon.recognizer
    return {"count": len(recognizer.intent_names()) if recognizer else 0,
            "languages": [r.language for r in recognizer.languages()] if recognizer else [],
            "paths": [str(p) for p in daemon.config.intents.paths],
            "reloads": daemon.reloads, "reload_error": daemon.reload_error}


async def reload(request: web.Request) -> web.Response:
    """Reload intents, handlers and the recognizer's grammar (as SIGHUP does)."""
    daemon = api_recognize.daemon_of(request)
    ok = await daemon.reload()
    if not ok:
        raise ApiError(422, "reload_failed", f"the reload failed and the previous intents "
                       f"and handlers stay: {daemon.reload_error}")
    return web.json_response({"reloaded": True, "reloads": daemon.reloads,
                              "intents": _intents(daemon)["count"],
                              "handlers": len(daemon.router.statuses)})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 description of this API."""
    return web.json_response(spec(__version__))


def setup(app: web.Application) -> None:
    """Register every REST route."""
    app.router.add_get("/api/status", status)
    app.router.add_post("/api/reload", reload)
    app.router.add_get("/api/openapi.json", openapi)
    api_recognize.setup(app)
    api_history.setup(app)
    api_speakers.setup(app)
    api_review.setup(app)
