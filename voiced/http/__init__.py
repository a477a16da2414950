"""voiced over HTTP: REST API, live events, /metrics and the web page (aiohttp)."""
