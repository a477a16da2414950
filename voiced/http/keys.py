"""Keys the HTTP modules share on the aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from voiced.http.auth import HttpAuth

DAEMON: web.AppKey[Any] = web.AppKey("daemon", object)
"""The running `voiced.daemon.Daemon`."""
AUTH: web.AppKey[HttpAuth] = web.AppKey("auth", object)  # type: ignore[arg-type]
"""The server's `voiced.http.auth.HttpAuth` (token, loopback, CORS)."""
UPLOAD_LIMIT: web.AppKey[int] = web.AppKey("upload_limit", int)
"""Largest request body in bytes (`http.max_upload_mb`)."""
