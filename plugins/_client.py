"""A plugin base for plugins that talk HTTP: one aiohttp session from start to stop."""

from __future__ import annotations

import aiohttp

from voiced.errors import PluginError
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


async def read_body(resp: aiohttp.ClientResponse, limit: int, *, code: str,
                    what: str) -> str:
    """The response body as text, read up to `limit` bytes: one byte more and reading
    stops, the connection is dropped and PluginError(`code`) says so (a huge answer
    never lands in memory whole)."""
    data = bytearray()
    while len(data) <= limit:
        chunk = await resp.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        resp.close()
        raise PluginError(code, f"{what}: the answer is larger than {limit} bytes; "
                                "it was not read")
    try:
        return data.decode(resp.get_encoding(), errors="replace")
    except LookupError:  # an unknown charset
        return data.decode("utf-8", errors="replace")
