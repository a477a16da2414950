"""(being built: see voiced/http/server.py for the contract)"""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Register this module's routes on `app`."""
