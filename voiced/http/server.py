"""The daemon's HTTP server: one aiohttp application, started and stopped by the daemon.

Route groups register themselves with `setup(app)`: `api` (REST under /api/), `live`
(the /api/events and /api/stream websockets), `metrics` (/metrics) and `page` (the web
page at /). Each reads the daemon from `app[DAEMON]`. Two middlewares wrap every route:
`voiced.http.auth` (loopback or token, origin checks, CORS) outside, then `guard` (no
Content-Encoding, a deadline for the body), and JSON errors for /api/ and /metrics
(`voiced.http.errors`) inside. Off loopback without a token the app is never built:
start-up fails with a ConfigError naming `http.token_env`.

A client cannot hold a connection by sending slowly: the request line and headers must
arrive within `HEADERS_TIMEOUT_S` of the connection opening or of the previous answer
(aiohttp's keep-alive timer, which closes a connection still waiting for a request), and
the body within `BODY_TIMEOUT_S` once the handler starts (408, then the connection
closes). Bodies are never inflated: aiohttp would do it on the event loop as the bytes
arrive, before any limit applies.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from voiced.errors import TransportError
from voiced.http import api, auth, live, metrics, page
from voiced.http.errors import ApiError, error_response, json_errors
from voiced.http.keys import DAEMON, UPLOAD_LIMIT
from voiced.sites import safe_repr

log = logging.getLogger(__name__)

HEADERS_TIMEOUT_S = 15.0
"""The request line and headers must arrive within this long (also the idle time after
which a kept-alive connection is closed)."""
BODY_TIMEOUT_S = 120.0
"""The whole body must arrive within this long (20 MB at 1.4 Mbit/s)."""
IDENTITY = frozenset({"", "identity"})


class BodyTimeout(ApiError, TimeoutError):
    """408: the body did not arrive in time. A TimeoutError too, so aiohttp, reading
    what is left of the body after the answer, gives up and closes the connection."""

    def __init__(self) -> None:
        super().__init__(408, "body_timeout", f"the request body did not arrive within "
                         f"{BODY_TIMEOUT_S:g} s", field="body")


class _ClientFaults(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger, with a client's hang-up (DEBUG) and malformed HTTP (INFO)
    as one line instead of an ERROR traceback: anyone who can connect could otherwise
    fill the journal."""

    def exception(self, msg: object, *args: object, exc_info: Any = True,
                  **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            self.debug("%s: the client hung up (%s)", str(msg) % args, exc)
        elif isinstance(exc, HttpProcessingError):
            self.info("%s: malformed HTTP: %.200s", str(msg) % args, " ".join(str(exc).split()))
        else:
            self.error(msg, *args, exc_info=exc_info, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse an encoded body (415, field Content-Encoding); give the body a deadline."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if encoding not in IDENTITY:
        refused = error_response(
            415, "unsupported_media_type",
            f"Content-Encoding {safe_repr(encoding, 40)}: voiced takes request bodies as they are "
            "(no gzip or deflate); send the body without Content-Encoding",
            field="Content-Encoding")
        refused.force_close()  # the body is not read
        return refused
    if not request.body_exists or request.content.is_eof():
        response: web.StreamResponse = await handler(request)
        return response
    timer = asyncio.get_running_loop().call_later(BODY_TIMEOUT_S, _body_late, request)
    try:
        response = await handler(request)
        return response
    finally:
        timer.cancel()


def _body_late(request: web.Request) -> None:
    if not request.content.is_eof():
        log.info("HTTP %s %s from %s: the body did not arrive within %g s; closing",
                 request.method, request.path, request.remote, BODY_TIMEOUT_S)
        request.content.set_exception(BodyTimeout())


def build_app(daemon: Any, access: auth.HttpAuth | None = None) -> web.Application:
    """The application with every route group, bound to `daemon`; raises ConfigError when
    the address is not loopback and no token is configured."""
    cfg = daemon.config.http
    access = access or auth.HttpAuth(cfg)
    limit = int(cfg.max_upload_mb * 1024 * 1024)
    app = web.Application(
        client_max_size=limit, middlewares=[access.middleware, guard, json_errors],
        handler_args={"keepalive_timeout": HEADERS_TIMEOUT_S, "auto_decompress": False,
                      "logger": _ClientFaults(logging.getLogger("aiohttp.server"))})
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
