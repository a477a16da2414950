"""The plugin host: lives as long as the daemon, starts each plugin once.

It finds plugins by entry point (`voiced.plugins`), checks that each is a `Plugin` whose
`name` matches its entry point, starts it on first use and keeps a status per plugin.
Routing tables (voiced.intents.router) are rebuilt on every reload and borrow running
plugins from here, so saving an intent file never restarts a plugin (which used to let two
timer plugins coexist and ring a timer twice).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any

from voiced.intents.api import Plugin, PluginContext

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "voiced.plugins"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def discover_plugins() -> dict[str, Callable[[], type[Plugin]]]:
    """Installed plugins by name (loaded lazily)."""
    return {ep.name: ep.load for ep in entry_points(group=ENTRY_POINT_GROUP)}


class PluginState(StrEnum):
    """Where a plugin stands."""

    LOADED = "loaded"
    """Its class loaded and checked; started when a handler uses it."""
    RUNNING = "running"
    FAILED = "failed"
    """It did not load: import error, not a Plugin, or a name that does not match."""
    CONFIG_ERROR = "config_error"
    """A handler's options for it are invalid (that handler is disabled)."""
    START_ERROR = "start_error"
    STOPPED = "stopped"


@dataclass(slots=True)
class PluginStatus:
    """One plugin's state, as `/api/status` and `voiced/status` show it."""

    name: str
    state: PluginState
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "state": str(self.state), "error": self.error}


class PluginUnavailable(Exception):
    """A plugin that cannot be used (the message says why)."""


class PluginHost:
    """Loads, starts and stops plugins; one instance of each, for the daemon's life."""

    def __init__(self, context: PluginContext,
                 available: Mapping[str, Callable[[], type[Plugin]]] | None = None) -> None:
        self.context = context
        self._available = dict(available) if available is not None else discover_plugins()
        self._classes: dict[str, type[Plugin]] = {}
        self._instances: dict[str, Plugin] = {}
        self.statuses: dict[str, PluginStatus] = {}
        self.starts = 0
        """How many times any plugin was started (a reload that restarts none keeps it)."""

    @property
    def available(self) -> list[str]:
        """Names of the installed plugins."""
        return sorted(self._available)

    def plugin_class(self, name: str) -> type[Plugin]:
        """The checked class of plugin `name`; raises PluginUnavailable saying what is wrong."""
        if name in self._classes:
            return self._classes[name]
        loader = self._available.get(name)
        if loader is None:
            raise PluginUnavailable(f"unknown plugin {name!r} (installed: "
                              f"{', '.join(self.available) or 'none'})")
        try:
            cls = loader()
        except Exception as exc:
            self._status(name, PluginState.FAILED, f"failed to load: {_say(exc)}")
            raise PluginUnavailable(f"plugin {name!r} failed to load: {_say(exc)}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            message = f"plugin {name!r}: the entry point names {cls!r}, which is not a Plugin"
            self._status(name, PluginState.FAILED, message)
            raise PluginUnavailable(message)
        declared = getattr(cls, "name", None)
        if declared != name:
            message = (f"plugin {name!r}: the class {cls.__qualname__} declares name "
                       f"{declared!r}; it must match its entry point")
            self._status(name, PluginState.FAILED, message)
            raise PluginUnavailable(message)
        self._classes[name] = cls
        self.statuses.setdefault(name, PluginStatus(name, PluginState.LOADED))
        return cls

    async def acquire(self, name: str) -> Plugin:
        """The running instance of `name`, started on first use; raises PluginUnavailable."""
        if name in self._instances:
            return self._instances[name]
        status = self.statuses.get(name)
        if status is not None and status.state == PluginState.START_ERROR:
            raise PluginUnavailable(f"plugin {name!r} failed to start: {status.error}")
        cls = self.plugin_class(name)
        instance = cls(self.context)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await instance.start()
        except Exception as exc:
            self._status(name, PluginState.START_ERROR, _say(exc))
            raise PluginUnavailable(f"plugin {name!r} failed to start: {_say(exc)}") from exc
        self.starts += 1
        self._instances[name] = instance
        self._status(name, PluginState.RUNNING)
        log.info("plugin %s started", name)
        return instance

    def config_error(self, name: str, message: str) -> None:
        """Record that a handler's options for `name` are invalid (unless it runs)."""
        if name not in self._instances:
            self._status(name, PluginState.CONFIG_ERROR, message)

    async def release(self, keep: set[str]) -> None:
        """Stop the running plugins no handler uses any more."""
        for name in [n for n in self._instances if n not in keep]:
            await self._stop(name)

    async def stop(self) -> None:
        """Stop every running plugin (errors are logged, never raised)."""
        for name in list(self._instances):
            await self._stop(name)

    async def _stop(self, name: str) -> None:
        instance = self._instances.pop(name)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await instance.stop()
        except Exception as exc:
            log.exception("plugin %s failed to stop", name)
            self._status(name, PluginState.STOPPED, f"failed to stop: {_say(exc)}")
            return
        self._status(name, PluginState.STOPPED)

    def _status(self, name: str, state: PluginState, error: str | None = None) -> None:
        self.statuses[name] = PluginStatus(name, state, error)


def _say(exc: BaseException) -> str:
    """An exception as a person reads it: its message, or its type when it has none."""
    return str(exc) or type(exc).__name__
