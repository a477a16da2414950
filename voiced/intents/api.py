"""The plugin API: the one module plugin authors import.

A plugin is a class registered under the entry-point group ``voiced.plugins``::

    [project.entry-points."voiced.plugins"]
    my_plugin = "my_package.module:MyPlugin"

It has a ``name``, a pydantic ``Options`` model (validated at start-up, with template
strings such as ``"light.{area}"`` left in place), async ``start``/``stop`` and
``async handle(request) -> Response``, and optionally ``targets(options)`` (what a
request acts on, for protection rules). The router renders the templates for each request
and passes the rendered, validated options in ``request.options``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from voiced.models import IntentResult, SpeakerMatch

__all__ = [
    "ContinueSession",
    "Plugin",
    "PluginContext",
    "PluginOptions",
    "Request",
    "Response",
]


class PluginOptions(BaseModel):
    """Base for a plugin's options: unknown keys are errors.

    `topic_fields` names top-level options that are MQTT topics: a value a template
    inserts there (a slot, the site, a person's variable) must be one topic segment, so
    a hostile slot value cannot redirect the message (no `/`, `+`, `#` or control
    characters; the request fails with `slot_unsafe` instead).
    """

    model_config = ConfigDict(extra="forbid")
    topic_fields: ClassVar[tuple[str, ...]] = ()
    argv_fields: ClassVar[tuple[str, ...]] = ()
    """Options that are a program's argument list: the program is never a template and an
    inserted value cannot turn an argument into an option (`-...`)."""
    url_fields: ClassVar[tuple[str, ...]] = ()
    """Options that are URLs: inserted values are percent-encoded (a slot cannot add a
    path segment, a dot segment, a query parameter or a fragment)."""
    answer_fields: ClassVar[tuple[str, ...]] = ()
    """Templates the plugin renders itself, after it acted (answers): the router leaves
    them as written, and the plugin fills `{slot}` and its own `{{value}}` fields in one
    pass, so an inserted value is never read as a template."""


@dataclass(frozen=True, slots=True)
class Request:
    """One recognized intent handed to a plugin."""

    intent: IntentResult
    site: str
    session_id: str
    options: Any
    """The plugin's Options instance, templates rendered for this request."""
    speaker: SpeakerMatch
    area: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    """Everything templates can use: slots, site, area, speaker, intent, text."""
    language: str = "en"

    @property
    def slots(self) -> dict[str, Any]:
        """Slot values by name."""
        return self.intent.slot_values()


@dataclass(frozen=True, slots=True)
class ContinueSession:
    """Ask a follow-up question and hear the next utterance without a wake word."""

    text: str
    intent_filter: tuple[str, ...] = ()
    custom_data: str | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """What a plugin did."""

    text: str | None = None
    """Something to say to the person (sent to TTS on their satellite)."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """Extra details, recorded in history and events."""
    continue_session: ContinueSession | None = None


class Publish(Protocol):
    """`await publish(topic, payload, qos=0, retain=False)`: payload is bytes, text, or a
    JSON-able mapping."""

    def __call__(self, topic: str, payload: bytes | str | Mapping[str, Any] | list[Any],
                 qos: int = 0, retain: bool = False) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What the daemon offers a plugin."""

    publish: Publish
    """`await publish(topic, payload, qos=0, retain=False)` (voiced's MQTT link)."""
    state_dir: Path
    say: Callable[[str, str], Awaitable[None]] | None = None
    """`await say(site, text)`: speak on a satellite through the configured TTS."""
    people: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per-speaker variables from voiced.yaml."""


class Plugin(ABC):
    """Base class of intent plugins."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = PluginOptions

    def __init__(self, context: PluginContext) -> None:
        self.context = context

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (connections, timers); called once before serving."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release resources; called once at shutdown."""

    @staticmethod
    def targets(options: Any) -> list[str]:
        """What a request with these rendered options acts on, for protection rules
        (`protect:` in voiced.yaml): entity ids (`lock.front_door`), `<domain>.*` for a
        whole domain, or `kind:value` (`service:lock.unlock`, `mqtt:<topic>`,
        `http:<url>`, `command:<program>`). A plugin that acts on something a rule
        could name should say so; raising stops the request. Default: nothing beyond
        the intent and its slots, which the router adds itself."""
        return []

    @abstractmethod
    async def handle(self, request: Request) -> Response:
        """Act on one intent."""
