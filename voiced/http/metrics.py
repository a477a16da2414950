"""`GET /metrics`: the daemon's Prometheus metrics (voiced.metrics), in a registry of its
own. Subscribed to the event sink while the server runs."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from voiced.http.keys import DAEMON
from voiced.http.live import HUB
from voiced.metrics import Metrics

METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


def setup(app: web.Application) -> None:
    """Register `/metrics` and the collectors' life."""
    app.router.add_get("/metrics", scrape)
    app.on_startup.append(_start)
    app.on_shutdown.append(_stop)


async def _start(app: web.Application) -> None:
    daemon = app[DAEMON]
    hub = app.get(HUB)
    metrics = Metrics(daemon, hub.stats if hub is not None else None)
    daemon.sink.subscribe(metrics)
    app[METRICS] = metrics


async def _stop(app: web.Application) -> None:
    metrics = app.get(METRICS)
    if metrics is not None:
        app[DAEMON].sink.unsubscribe(metrics)


async def scrape(request: web.Request) -> web.Response:
    """The text exposition format (collected on the event loop: it only reads counters)."""
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
