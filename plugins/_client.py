"""A plugin base for plugins that talk HTTP: one aiohttp session from start to stop."""

from __future__ import annotations

import aiohttp

from voiced.intents.api import Plugin


class HttpClientPlugin(Plugin):
    """Opens an aiohttp session in `start` and closes it in `stop`."""

    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the HTTP client session."""
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Close the HTTP client session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
