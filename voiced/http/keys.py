"""Keys the HTTP modules share on the aiohttp application."""

from __future__ import annotations

from typing import Any

from aiohttp import web

DAEMON: web.AppKey[Any] = web.AppKey("daemon", object)
"""The running `voiced.daemon.Daemon`."""
