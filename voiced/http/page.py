"""The web page: `/` and its static files under `/static/` (voiced/http/static/).

Plain HTML, CSS and JavaScript modules with no build step and nothing from another site:
the page talks to the REST API and the `/api/events` and `/api/stream` websockets of the
server that served it. Access is the auth middleware's (loopback, or the token / login
cookie); this module adds the headers that keep the page to itself: a content security
policy that allows only this origin (scripts, styles, websockets, media), no framing, and
the microphone for this origin only.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"
"""The page's files (index.html, the JavaScript modules, the style sheet)."""

CSP = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "media-src 'self' blob:",
    "connect-src 'self'",  # 'self' includes ws:/wss: to this host (CSP 3)
    "worker-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
         ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
         ".json": "application/json"}


def _file(path: Path) -> web.FileResponse:
    headers = dict(HEADERS)
    headers["Content-Type"] = f"{TYPES[path.suffix]}; charset=utf-8" \
        if path.suffix in (".html", ".js", ".css", ".json") else TYPES[path.suffix]
    # the page changes with voiced: the browser asks again (cheap, 304 when unchanged)
    headers["Cache-Control"] = "no-cache"
    return web.FileResponse(path, headers=headers)


async def index(request: web.Request) -> web.StreamResponse:
    """GET /: the page."""
    return _file(STATIC / "index.html")


async def static(request: web.Request) -> web.StreamResponse:
    """GET /static/{name}: one of the page's files (no folders, no listing)."""
    name = request.match_info["name"]
    path = STATIC / name
    if ("/" in name or "\\" in name or name.startswith(".") or path.suffix not in TYPES
            or not path.is_file()):
        raise web.HTTPNotFound(text=f"no such file: /static/{name}")
    return _file(path)


def setup(app: web.Application) -> None:
    """Register `/` and `/static/{name}`."""
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
