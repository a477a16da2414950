"""Who may use the HTTP server: a real daemon, a real aiohttp server on a free port, a real
client. On loopback no token is needed (but the Host and Origin are checked); bound to
0.0.0.0 a token is required, voiced refuses to start without one, and a bearer header or
the login page's cookie lets a client in."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import Mosquitto, make_config, running_daemon

from voiced.config import HttpConfig
from voiced.daemon import Daemon
from voiced.errors import ConfigError
from voiced.http.auth import COOKIE, HttpAuth, is_loopback, read_token

TOKEN = "s3cret-token-for-the-tests-0123456789"
TOKEN_ENV = "VOICED_TEST_HTTP_TOKEN"


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "LOCALHOST",
                 "app.localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "192.168.1.10", "voiced.lan", "localhost.evil.example",
                 "::ffff:192.168.1.1"):
        assert not is_loopback(host), host


def test_token_sources(tmp_path: Path) -> None:
    cfg = HttpConfig(host="0.0.0.0", token_env=TOKEN_ENV)
    assert read_token(cfg, {TOKEN_ENV: f"  {TOKEN}\n"}) == TOKEN
    assert read_token(cfg, {}) is None
    (tmp_path / "voiced-http").write_text(TOKEN + "\n")
    cred = HttpConfig(host="0.0.0.0", token_credential="voiced-http")
    # a named credential wins over the environment variable
    assert read_token(cred, {"CREDENTIALS_DIRECTORY": str(tmp_path),
                             "VOICED_HTTP_TOKEN": "other"}) == TOKEN
    assert HttpAuth(cred, {"CREDENTIALS_DIRECTORY": str(tmp_path)}).required
    with pytest.raises(ConfigError, match=r"CREDENTIALS_DIRECTORY"):
        read_token(cred, {})
    missing = HttpConfig(host="0.0.0.0", token_credential="nope")
    with pytest.raises(ConfigError, match=r"cannot read the HTTP API token"):
        read_token(missing, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"http\.token_env") as refused:
        HttpAuth(cfg, {})
    assert refused.value.code == "http_token_missing"
    assert TOKEN_ENV in refused.value.message
    assert not HttpAuth(HttpConfig(host="127.0.0.1"), {}).required


async def test_refuses_to_start_off_loopback_without_a_token(tmp_path: Path,
                                                              monkeypatch: Any) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    # no broker on this port: the refusal comes before anything connects or loads
    config = make_config(tmp_path, 1, http={"host": "0.0.0.0", "token_env": TOKEN_ENV})
    daemon = Daemon(config)
    try:
        with pytest.raises(ConfigError, match=r"http\.token_env") as refused:
            await daemon.start()
    finally:
        await daemon.stop()
    assert f"the environment variable {TOKEN_ENV} holds none" in refused.value.message
    assert daemon.asr is None and daemon.http is None


@asynccontextmanager
async def _serving(tmp_path: Path, port: int, **http: Any) -> AsyncIterator[tuple[Any, str]]:
    config = make_config(tmp_path, port, asr={"processes": 1},
                         http={"port": 0, "token_env": TOKEN_ENV, **http})
    async with running_daemon(config) as daemon:
        yield daemon, f"http://127.0.0.1:{daemon.http.port}"


async def test_off_loopback_needs_the_token_or_the_login_cookie(
        mosquitto: Mosquitto, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with _serving(tmp_path, mosquitto.port, host="0.0.0.0") as (daemon, base), \
            aiohttp.ClientSession() as http:
        assert daemon.http.auth.required
        # nothing without the token: JSON 401 for the API, /metrics and the websocket
        for path in ("/api/status", "/api/history", "/metrics"):
            async with http.get(base + path) as resp:
                assert resp.status == 401, path
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await resp.json())["error"]["code"] == "unauthorized"
        async with http.post(base + "/api/text-to-intent", json={"text": "what time is it"},
                             headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with http.get(base + "/api/status", headers={"Authorization": TOKEN}) as resp:
            assert resp.status == 401  # the scheme is required
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await http.ws_connect(base + "/api/events")
        assert handshake.value.status == 401
        # the page sends a browser to the login form
        async with http.get(base + "/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/login?next=%2F"
        # the bearer token opens everything
        async with http.get(base + "/api/status", headers=bearer) as resp:
            assert resp.status == 200
            assert (await resp.json())["http"]["auth"] == "token"
        async with http.get(base + "/metrics", headers=bearer) as resp:
            assert resp.status != 401
        ws = await http.ws_connect(base + "/api/events", headers=bearer)
        await ws.close()
        # a browser page of another site cannot make a logged-in client act
        async with http.post(base + "/api/text-to-intent", json={"text": "what time is it"},
                             headers={**bearer, "Origin": "http://evil.example"}) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == {
                "code": "cross_origin", "field": "Origin",
                "message": "requests from pages at http://evil.example may not change "
                           "anything here; add the origin to http.cors_origins to allow it"}

    # the login form: a wrong token is refused, the right one sets the session cookie
    async with _serving(tmp_path / "2", mosquitto.port, host="0.0.0.0") as (daemon, base), \
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(base + "/login?next=/api/status") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            page = await resp.text()
            assert 'name="token"' in page and 'value="/api/status"' in page
        origin = {"Origin": base}
        async with browser.post(base + "/login", data={"token": "nope"}, headers=origin,
                                allow_redirects=False) as resp:
            assert resp.status == 401 and "not the token" in await resp.text()
        async with browser.post(base + "/login", data={"token": TOKEN, "next": "/api/status"},
                                headers=origin, allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/api/status"
            cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=") and TOKEN not in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        async with browser.get(base + "/api/status") as resp:
            assert resp.status == 200
        ws = await browser.ws_connect(base + "/api/events", origin=base)
        await ws.close()
        # a page elsewhere cannot open the websocket with the visitor's cookie
        with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
            await browser.ws_connect(base + "/api/events", origin="http://evil.example")
        assert handshake.value.status == 403
        # never a redirect to another site after logging in
        async with browser.post(base + "/login", data={"token": TOKEN,
                                                       "next": "//evil.example/x"},
                                headers=origin, allow_redirects=False) as resp:
            assert resp.headers["Location"] == "/"
        async with browser.post(base + "/logout", headers=origin,
                                allow_redirects=False) as resp:
            assert resp.status == 302
        async with browser.get(base + "/api/status") as resp:
            assert resp.status == 401
    async with aiohttp.ClientSession() as forged, \
            _serving(tmp_path / "3", mosquitto.port, host="0.0.0.0") as (_, base):
        async with forged.get(base + "/api/status",
                              headers={"Cookie": f"{COOKIE}={'0' * 64}"}) as resp:
            assert resp.status == 401


# what a browser makes of each: tab/CR/LF dropped, a backslash read as a slash
OTHER_SITES = ("//evil.example/x", "/\t/evil.example/phish", "/\t\t/evil.example",
               "/\\evil.example", "/\r\n/evil.example", "/%0a/x\n", "/\r\nX-Injected: 1",
               "/\nX-Injected: 1", "/ /evil.example", "/\u2028/evil.example",
               "https://evil.example/", "evil.example", "")


async def test_login_goes_only_to_this_server(mosquitto: Mosquitto, tmp_path: Path,
                                              monkeypatch: Any) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    # on loopback /login goes on at once
    async with _serving(tmp_path, mosquitto.port) as (_, base), \
            aiohttp.ClientSession() as http:
        for target in OTHER_SITES:
            async with http.get(base + "/login", params={"next": target},
                                allow_redirects=False) as resp:
                assert resp.status == 302, (target, resp.status)
                assert resp.headers["Location"] == "/", target
        async with http.get(base + "/login", params={"next": "/api/history?q=a%20b"},
                            allow_redirects=False) as resp:
            assert resp.headers["Location"] == "/api/history?q=a%20b"
    # with a token, after a good login; and a form that cannot be read is a 400 page
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    async with _serving(tmp_path / "2", mosquitto.port, host="0.0.0.0") as (_, base), \
            aiohttp.ClientSession() as http:
        for target in OTHER_SITES:
            async with http.post(base + "/login", data={"token": TOKEN, "next": target},
                                 allow_redirects=False) as resp:
                assert resp.status == 302 and resp.headers["Location"] == "/", target
        async with http.post(base + "/login", data=b"\xff\xfe", headers={
                "Content-Type": "multipart/form-data; boundary=zz"}) as resp:
            assert resp.status == 400 and resp.content_type == "text/html"
            assert "The form could not be read." in await resp.text()
        async with http.post(base + "/login", data=b"token=x", headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=bogus"}) as resp:
            assert resp.status == 400


async def test_loopback_needs_no_token_but_checks_host_and_origin(
        mosquitto: Mosquitto, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert os.environ.get(TOKEN_ENV) is None
    async with _serving(tmp_path, mosquitto.port) as (daemon, base), \
            aiohttp.ClientSession() as http:
        assert not daemon.http.auth.required
        assert daemon.http.url == f"http://localhost:{daemon.http.port}/"
        async with http.get(base + "/api/status") as resp:
            assert resp.status == 200
            assert (await resp.json())["http"]["auth"] == "loopback"
        async with http.get(f"http://localhost:{daemon.http.port}/api/status") as resp:
            assert resp.status == 200
        async with http.get(base + "/login", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/"
        # a page that rebinds its own name to 127.0.0.1 is refused by its Host header
        async with http.get(base + "/api/status", headers={"Host": "evil.example"}) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "host_not_allowed"
        # and another site's page cannot post to it through the visitor's browser
        async with http.post(base + "/api/text-to-intent", json={"text": "what time is it"},
                             headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403
        async with http.post(base + "/api/text-to-intent", json={"text": "what time is it"},
                             headers={"Origin": base}) as resp:
            assert resp.status == 200
        # CORS is off: no Access-Control headers, and a preflight is not answered
        async with http.get(base + "/api/status", headers={"Origin": "http://app.example"}
                            ) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with http.options(base + "/api/transcribe", headers={
                "Origin": "http://app.example",
                "Access-Control-Request-Method": "POST"}) as resp:
            assert resp.status != 204
            assert "Access-Control-Allow-Origin" not in resp.headers


async def test_cors_allow_list(mosquitto: Mosquitto, tmp_path: Path) -> None:
    app = "http://app.example"
    async with _serving(tmp_path, mosquitto.port, cors_origins=[app]) as (_, base), \
            aiohttp.ClientSession() as http:
        async with http.options(base + "/api/text-to-intent", headers={
                "Origin": app, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type"}) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == app
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]
        async with http.post(base + "/api/text-to-intent", json={"text": "what time is it"},
                             headers={"Origin": app}) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == app
        async with http.get(base + "/api/status", headers={"Origin": "http://other.example"}
                            ) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with http.post(base + "/api/text-to-intent", json={"text": "what time is it"},
                             headers={"Origin": "http://other.example"}) as resp:
            assert resp.status == 403
