"""Who may use the HTTP server: loopback without a token, any other address with one.

Bound to a loopback address (`127.0.0.1`, `::1`, `localhost`) nothing is asked: only this
machine can connect. Then the `Host` header must name loopback too, so a web page that
rebinds its own DNS name to 127.0.0.1 cannot talk to voiced through the visitor's browser.
Bound to any other address, a token is required (from the environment variable
`http.token_env`, or the systemd credential `http.token_credential`) and voiced refuses to
start without one. A request then carries `Authorization: Bearer <token>`, or the session
cookie that `/login` sets (HttpOnly, SameSite=Strict; its value is an HMAC of the token, so
changing the token logs every browser out).

Everywhere: a request that can change something (any method but GET/HEAD/OPTIONS) or opens
a websocket must not come from another site's page (its `Origin` must be this server or
in `http.cors_origins`), which stops cross-site form posts and websocket hijacking. CORS is
off unless `http.cors_origins` lists the origins allowed.

The `middleware` applies to every route, the other route groups' included; they need
nothing of their own. `authorized(request)` is there for one that wants to ask.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import hdrs, web

from voiced.config import HttpConfig
from voiced.credentials import CredentialError, read_credential
from voiced.errors import ConfigError
from voiced.http.errors import error_response, json_path
from voiced.http.keys import AUTH

log = logging.getLogger(__name__)

COOKIE = "voiced_session"
COOKIE_MAX_AGE_S = 30 * 86400
"""A browser stays logged in this long (or until the token changes)."""
SHORT_TOKEN = 16
"""Tokens shorter than this are warned about."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/login", "/logout"})
_SESSION_LABEL = b"voiced-http-session-v1"


def is_loopback(host: str) -> bool:
    """True for an address or name that only this machine can reach."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def read_token(config: HttpConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The API token from the systemd credential (when named) or the environment variable;
    None when neither is configured or set. An unreadable credential is a ConfigError."""
    env = os.environ if environ is None else environ
    if config.token_credential:
        try:
            return read_credential(config.token_credential, key="http.token_credential",
                                   what="the HTTP API token", environ=env).strip()
        except CredentialError as exc:
            raise ConfigError("http_no_token", str(exc)) from None
    if config.token_env:
        return env.get(config.token_env, "").strip() or None
    return None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8"))


class HttpAuth:
    """The server's access rules; raises ConfigError when an address off loopback has no
    token to require."""

    def __init__(self, config: HttpConfig, environ: Mapping[str, str] | None = None) -> None:
        self.loopback = is_loopback(config.host)
        self.token = read_token(config, environ)
        if not self.loopback and self.token is None:
            where = (f"the systemd credential {config.token_credential!r}"
                     if config.token_credential else
                     f"the environment variable {config.token_env}" if config.token_env
                     else "nowhere (http.token_env and http.token_credential are both unset)")
            raise ConfigError(
                "http_token_missing",
                f"http.host is {config.host!r}, not a loopback address, so the HTTP API needs "
                f"a token, and {where} holds none: set http.token_env (default "
                "VOICED_HTTP_TOKEN) or http.token_credential, or bind http.host to "
                "127.0.0.1")
        if self.token is not None and len(self.token) < SHORT_TOKEN and not self.loopback:
            log.warning("the HTTP API token is only %d characters: use a long random one "
                        "(openssl rand -hex 32)", len(self.token))
        self.required = not self.loopback
        """True when every request needs the token (or the login cookie)."""
        self.cors_origins = frozenset(o.rstrip("/") for o in config.cors_origins)
        self._session = (hmac.new(self.token.encode(), _SESSION_LABEL, hashlib.sha256)
                         .hexdigest() if self.token else None)

    # ---- checks ----------------------------------------------------------------------
    def authorized(self, request: web.Request) -> bool:
        """True when the request may use the server (no token needed, the bearer token,
        or the login cookie)."""
        if not self.required:
            return True
        assert self.token is not None and self._session is not None
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and given and _same(given.strip(), self.token):
            return True
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and _same(cookie, self._session)

    def check_token(self, given: str) -> bool:
        """True when `given` is the token (the login form)."""
        return self.token is not None and _same(given.strip(), self.token)

    def cors_allowed(self, origin: str) -> bool:
        """True when pages from `origin` may call the API (`http.cors_origins`)."""
        return "*" in self.cors_origins or origin.rstrip("/") in self.cors_origins

    def host_ok(self, request: web.Request) -> bool:
        """On loopback, the Host header must name loopback (DNS rebinding)."""
        if not self.loopback:
            return True
        host = request.host or ""
        name = urlsplit(f"//{host}").hostname or ""
        return is_loopback(name)

    def origin_ok(self, request: web.Request) -> bool:
        """A request that changes something, or opens a websocket, comes from this
        server's own pages, a CORS-allowed origin, or not from a browser page at all."""
        websocket = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if request.method in SAFE_METHODS and not websocket:
            return True
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return True  # not a browser page (curl, scripts): the token decides
        if self.cors_allowed(origin):
            return True
        parts = urlsplit(origin)
        return bool(parts.netloc) and parts.netloc.lower() == (request.host or "").lower()

    # ---- the middleware --------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Host, origin and token checks for every route; CORS headers when allowed."""
        origin = request.headers.get(hdrs.ORIGIN)
        cors = origin if origin is not None and self.cors_origins and \
            self.cors_allowed(origin) else None
        if (request.method == "OPTIONS" and cors is not None
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers):
            return web.Response(status=204, headers=self._cors_headers(cors, preflight=True))
        if not self.host_ok(request):
            return error_response(
                403, "host_not_allowed",
                f"Host {request.host!r} is not a loopback name, and voiced listens on loopback "
                "without a token: open it as localhost or 127.0.0.1 (to serve other machines, "
                "bind http.host to their network with a token)", field="Host")
        if not self.origin_ok(request):
            return error_response(
                403, "cross_origin",
                f"requests from pages at {origin} may not change anything here; add the "
                "origin to http.cors_origins to allow it", field="Origin")
        if request.path not in PUBLIC_PATHS and not self.authorized(request):
            return self._refuse(request)
        response: web.StreamResponse = await handler(request)
        if cors is not None and not response.prepared:
            response.headers.update(self._cors_headers(cors))
        return response

    def _refuse(self, request: web.Request) -> web.StreamResponse:
        if json_path(request.path) or request.method not in ("GET", "HEAD"):
            return error_response(
                401, "unauthorized",
                "this server needs its token: send 'Authorization: Bearer <token>' (the "
                "token is in the variable named by http.token_env or the credential "
                "http.token_credential), or log in at /login",
                headers={"WWW-Authenticate": 'Bearer realm="voiced"'})
        return _redirect(f"/login?next={quote(request.path_qs, safe='')}")

    def _cors_headers(self, origin: str, preflight: bool = False) -> dict[str, str]:
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                   "Access-Control-Expose-Headers": "Content-Type, Content-Length"}
        if preflight:
            headers.update({
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600"})
        return headers

    # ---- the login page --------------------------------------------------------------
    async def login_page(self, request: web.Request) -> web.StreamResponse:
        """GET /login: the form (or straight on, when no token is needed or the cookie
        is already good)."""
        target = _next(request.query.get("next"))
        if not self.required or self.authorized(request):
            return _redirect(target)
        return _login_html(target, None)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """POST /login (form field `token`, optional `next`): set the session cookie."""
        if not self.required:
            return _redirect("/")
        try:
            form = await request.post()
        except (ValueError, LookupError, AssertionError, web.RequestPayloadError) as exc:
            log.info("HTTP login from %s: the form could not be read (%s)", request.remote, exc)
            return _login_html("/", "The form could not be read.", status=400)
        given, target = form.get("token"), _next(str(form.get("next") or "/"))
        if not isinstance(given, str) or not self.check_token(given):
            log.warning("HTTP login with a wrong token from %s", request.remote)
            return _login_html(target, "That is not the token.", status=401)
        assert self._session is not None
        response = _redirect(target)
        response.set_cookie(COOKIE, self._session, max_age=COOKIE_MAX_AGE_S, path="/",
                            httponly=True, samesite="Strict", secure=request.secure)
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """POST /logout: forget the session cookie."""
        response = _redirect("/login")
        response.del_cookie(COOKIE, path="/")
        return response


def authorized(request: web.Request) -> bool:
    """For route modules that want to ask: may this request use the server?"""
    return request.app[AUTH].authorized(request)


def _redirect(target: str) -> web.Response:
    return web.Response(status=302, headers={"Location": target, "Cache-Control": "no-store"})


def _next(value: str | None) -> str:
    """A local path to go to after logging in (never another site): "/" unless `value` is
    a path on this server. A browser drops tabs and line breaks from a URL and reads a
    backslash as a slash, so `/<tab>/evil.example` would be `//evil.example`, another site:
    any control character, space or backslash refuses the value, as does `//` at the
    start."""
    if (not value or not value.startswith("/") or value.startswith("//") or "\\" in value
            or any(c.isspace() or not c.isprintable() for c in value)):
        return "/"
    return value


def _login_html(target: str, problem: str | None, status: int = 200) -> web.Response:
    note = f'<p class="bad">{html.escape(problem)}</p>' if problem else ""
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>voiced: log in</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 24rem; margin: 4rem auto; padding: 0 1rem; }}
input, button {{ font-size: 1rem; padding: .5rem; width: 100%; box-sizing: border-box; }}
button {{ margin-top: .75rem; }}
.bad {{ color: #b00020; }}
</style></head>
<body><h1>voiced</h1>
<form method="post" action="/login">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{html.escape(target, quote=True)}">
{note}<button type="submit">Log in</button>
</form>
<p>The token is in the environment variable named by <code>http.token_env</code>
(or the credential <code>http.token_credential</code>) of the voiced service.</p>
</body></html>
"""
    return web.Response(text=page, content_type="text/html", status=status,
                        headers={"Cache-Control": "no-store"})


def setup(app: web.Application, auth: HttpAuth) -> None:
    """Register /login and /logout; the middleware is installed by `build_app`."""
    app[AUTH] = auth
    app.router.add_get("/login", auth.login_page)
    app.router.add_post("/login", auth.login)
    app.router.add_post("/logout", auth.logout)
