"""The daemon's HTTP server: one aiohttp application, started and stopped by the daemon.

Route groups register themselves with `setup(app)`: `api` (REST under /api/), `live`
(the /api/events and /api/stream websockets), `metrics` (/metrics) and `page` (the web
page at /). Each reads the daemon from `app[DAEMON]`. Two middlewares wrap every route:
`voiced.http.auth` (loopback or token, origin checks, CORS) outside, and JSON errors for
/api/ and /metrics (`voiced.http.errors`) inside. Off loopback without a token the app is
never built: start-up fails with a ConfigError naming `http.token_env`.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from voiced.errors import TransportError
from voiced.http import api, auth, live, metrics, page
from voiced.http.errors import json_errors
from voiced.http.keys import DAEMON, UPLOAD_LIMIT

log = logging.getLogger(__name__)


def build_app(daemon: Any, access: auth.HttpAuth | None = None) -> web.Application:
    """The application with every route group, bound to `daemon`; raises ConfigError when
    the address is not loopback and no token is configured."""
    cfg = daemon.config.http
    access = access or auth.HttpAuth(cfg)
    limit = int(cfg.max_upload_mb * 1024 * 1024)
    app = web.Application(client_max_size=limit, middlewares=[access.middleware, json_errors])
    app[DAEMON] = daemon
    app[UPLOAD_LIMIT] = limit
    auth.setup(app, access)
    for group in (api, live, metrics, page):
        group.setup(app)
    return app


class HttpServer:
    """Serves `build_app(daemon)` on `http.host:http.port`."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.config = daemon.config.http
        self._runner: web.AppRunner | None = None
        self.port = self.config.port
        self.auth = auth.HttpAuth(self.config)
        """Raises ConfigError here, before anything starts, when a token is missing."""

    @property
    def url(self) -> str:
        """The page's address (loopback spelled as a name a browser opens)."""
        host = self.config.host
        shown = "localhost" if host in ("127.0.0.1", "::1", "localhost") else host
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}/"

    async def start(self) -> None:
        """Listen; raises TransportError when the address cannot be bound."""
        runner = web.AppRunner(build_app(self.daemon, self.auth), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise TransportError(
                "http_bind",
                f"http: cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}"
                " (set http.port in voiced.yaml, or http.enabled: false)") from exc
        self._runner = runner
        server = site._server  # the bound port, when 0 asked for any free one
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("web page and API at %s", self.url)

    async def stop(self) -> None:
        """Close every connection (websockets included) and stop listening."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
