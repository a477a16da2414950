"""The handler router: intent → plugin, with templated options, gating and timeouts.

Plugins are found through the entry-point group `voiced.plugins`, first-party ones
included. One instance per plugin serves every handler that names it; each handler's
options are validated at start-up (template fields left in place) and rendered for each
request. A plugin that fails to load, start or handle becomes a status and a log line:
the other handlers keep working. Before any handler of an intent runs, what they would
act on is checked against the protection rules (voiced.protect): `prepare`, then `run`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from voiced import protect
from voiced.config import HandlerConfig
from voiced.errors import PluginError, VoicedError
from voiced.intents import templates
from voiced.intents.api import ContinueSession, Plugin, PluginContext, Request, Response
from voiced.intents.plugins import (  # noqa: F401 - discover_plugins: public here too
    ENTRY_POINT_GROUP,
    PluginHost,
    PluginUnavailable,
    discover_plugins,
)
from voiced.models import IntentResult, Outcome, SpeakerMatch

log = logging.getLogger(__name__)



@dataclass(slots=True)
class HandlerStatus:
    """State of one configured handler, as shown by /api/status and the log."""

    intent: str
    plugin: str
    ok: bool = True
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"intent": self.intent, "plugin": self.plugin, "ok": self.ok, "error": self.error}


@dataclass(frozen=True, slots=True)
class HandlerOutcome:
    """What happened when an intent was handed to its handlers."""

    outcome: Outcome
    plugin: str | None = None
    response: Response | None = None
    error: str | None = None
    code: str | None = None
    duration_ms: float = 0.0
    details: tuple[dict[str, Any], ...] = field(default_factory=tuple)


@dataclass(slots=True)
class _Handler:
    config: HandlerConfig
    status: HandlerStatus
    plugin: Plugin | None = None


@dataclass(frozen=True, slots=True)
class _Call:
    handler: _Handler
    request: Request


@dataclass(slots=True)
class Prepared:
    """An intent's handlers with their options rendered and its targets checked against
    the protection rules: nothing has run yet."""

    intent: IntentResult
    site: str
    session_id: str
    calls: tuple[_Call, ...]
    targets: tuple[str, ...]
    """What the command would act on (voiced.protect)."""
    verdict: protect.Verdict
    started: float
    outcome: HandlerOutcome | None = None
    """Set when nothing may run: refused, a handler that cannot, no handler."""
    protected: bool = False
    """The outcome is a protection rule's refusal (the intent is not to be announced)."""


class Router:
    """Routes recognized intents to plugins."""

    def __init__(
        self,
        handlers: list[HandlerConfig],
        context: PluginContext,
        slot_names: Callable[[str], set[str] | None],
        plugins: Mapping[str, Callable[[], type[Plugin]]] | None = None,
        host: PluginHost | None = None,
        protector: protect.Protector | None = None,
    ) -> None:
        self._context = context
        self.protector = protector
        """The protection rules (None: none), checked before any handler runs."""
        self._slot_names = slot_names
        # a router built without a host (tools, tests) owns one and stops it with itself
        self._owns_host = host is None
        self.host = host if host is not None else PluginHost(context, plugins)
        self._handlers = [_Handler(h, HandlerStatus(h.intent, h.plugin)) for h in handlers]

    @property
    def statuses(self) -> list[HandlerStatus]:
        """Every handler's state."""
        return [h.status for h in self._handlers]

    def _fail(self, handler: _Handler, message: str) -> None:
        handler.status.ok = False
        handler.status.error = message
        log.error("handler %s → %s disabled: %s", handler.config.intent, handler.config.plugin,
                  message)

    def validate(self) -> dict[str, type[Plugin]]:
        """Load every handler's plugin class and check its options (no plugin starts).

        Failures become statuses; returns the plugin classes that loaded, by name.
        """
        classes: dict[str, type[Plugin]] = {}
        for handler in self._handlers:
            cfg = handler.config
            try:
                classes[cfg.plugin] = self.host.plugin_class(cfg.plugin)
            except PluginUnavailable as exc:
                self._fail(handler, str(exc))
                continue
            problem = self._check(cfg, classes[cfg.plugin])
            if problem:
                self.host.config_error(cfg.plugin, problem)
                self._fail(handler, problem)
        return classes

    @property
    def plugins_used(self) -> set[str]:
        """Plugins that at least one working handler needs."""
        return {h.config.plugin for h in self._handlers if h.status.ok}

    async def start(self) -> None:
        """Validate every handler and borrow its plugin from the host (started on first
        use, never restarted by a new routing table); failures become statuses."""
        self.validate()
        for name in sorted(self.plugins_used):
            users = [h for h in self._handlers if h.config.plugin == name and h.status.ok]
            try:
                instance = await self.host.acquire(name)
            except PluginUnavailable as exc:
                for h in users:
                    self._fail(h, str(exc))
                continue
            for h in users:
                h.plugin = instance
        ok = sum(h.status.ok for h in self._handlers)
        log.info("%d of %d handlers ready", ok, len(self._handlers))

    def _check(self, cfg: HandlerConfig, cls: type[Plugin]) -> str | None:
        """Start-up validation of one handler's options; a message or None."""
        where = f"handlers[{cfg.intent} → {cfg.plugin}]"
        bad = templates.syntax_errors(cfg.options)
        if bad:
            return f"{where}: malformed template: {'; '.join(bad)}"
        slots = self._slot_names(cfg.intent)
        if slots is None:
            return f"{where}: intent {cfg.intent!r} is not defined in the loaded intents"
        unknown = templates.fields(cfg.options) - slots - templates.BUILTIN_FIELDS
        if unknown:
            names = ", ".join(f"{{{u}}}" for u in sorted(unknown))
            return (f"{where}: options use {names}, which is neither a slot of {cfg.intent} "
                    f"(slots: {', '.join(sorted(slots)) or 'none'}) nor one of "
                    f"{', '.join(sorted(templates.BUILTIN_FIELDS))}")
        try:
            cls.Options.model_validate(cfg.options)
        except ValidationError as exc:
            real = [e for e in exc.errors() if not _templated_at(cfg.options, e["loc"])]
            if real:
                msgs = "; ".join(
                    f"options.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in real
                )
                return f"{where}: {msgs}"
        return None

    async def handle(
        self,
        intent: IntentResult,
        *,
        site: str,
        session_id: str,
        speaker: SpeakerMatch,
        area: str | None,
        language: str,
        spoken: bool = True,
    ) -> HandlerOutcome:
        """Run every handler configured for the intent, in order, once the protection
        rules allow it (a command waiting for a spoken confirmation runs nothing yet)."""
        prepared = self.prepare(intent, site=site, session_id=session_id, speaker=speaker,
                                area=area, language=language, spoken=spoken)
        if prepared.outcome is not None:
            return prepared.outcome
        if prepared.verdict.confirm:
            return self.hold(prepared)
        return await self.run(prepared)

    def prepare(
        self,
        intent: IntentResult,
        *,
        site: str,
        session_id: str,
        speaker: SpeakerMatch,
        area: str | None,
        language: str,
        spoken: bool = True,
    ) -> Prepared:
        """Render every handler's options for the intent and check what they would act
        on against the protection rules; nothing runs. `spoken`: False for text entry."""
        started = time.monotonic()
        matching = [h for h in self._handlers if h.config.intent == intent.name]
        people = self._context.people
        variables: dict[str, Any] = {
            **intent.slot_values(),
            "site": site,
            "area": intent.slot_values().get("area", area),
            "speaker": templates.SpeakerVars(speaker.name, people.get(speaker.name, {})),
            "intent": intent.name,
            "text": intent.text,
            "session_id": session_id,
            "lang": language,
        }
        calls: list[_Call] = []
        failed: HandlerOutcome | None = None
        targets = self.protector.targets(intent) if self.protector else []
        for handler in matching:
            call = self._render(handler, intent, variables, speaker, started)
            if isinstance(call, HandlerOutcome):
                failed = failed or call
                continue
            calls.append(call)
            found = protect.plugin_targets(call.handler.plugin, call.request.options) \
                if self.protector is not None else []
            if found is None:  # it cannot say what it acts on: it does not act
                failed = failed or self._outcome(
                    Outcome.ERROR, call.handler.config, started, [], code="handler_crashed",
                    error=f"{call.handler.config.plugin}: targets() failed")
            targets.extend(found or ())
        verdict = protect.ALLOWED
        if self.protector is not None:
            verdict = self.protector.check(targets, speaker, site, intent.matched_by, spoken)
        prepared = Prepared(intent, site, session_id, tuple(calls), tuple(targets), verdict,
                            started)
        if verdict.code is not None:
            prepared.outcome = HandlerOutcome(
                Outcome.REFUSED, plugin=",".join(h.config.plugin for h in matching) or None,
                error=verdict.message, code=verdict.code,
                duration_ms=(time.monotonic() - started) * 1000)
            prepared.protected = True
        elif failed is not None:
            prepared.outcome = failed
        elif not matching and not verdict.confirm:
            prepared.outcome = HandlerOutcome(Outcome.NO_HANDLER)
        return prepared

    def _render(self, handler: _Handler, intent: IntentResult, variables: dict[str, Any],
                speaker: SpeakerMatch, started: float) -> _Call | HandlerOutcome:
        """One handler's request with its options rendered, or why it cannot run."""
        cfg = handler.config
        if handler.plugin is None:
            return self._outcome(Outcome.ERROR, cfg, started, [],
                                 error=handler.status.error, code="handler_unavailable")
        need = cfg.min_speaker_confidence
        if need is not None and (not speaker.known or not speaker.verified
                                 or speaker.confidence < need):
            how = "identified" if speaker.verified else "claimed, not identified"
            msg = (f"{cfg.intent} needs a speaker identified with confidence >= {need}; "
                   f"got {speaker.name[:64]} ({how}, {speaker.confidence:.2f})")
            return self._outcome(Outcome.REFUSED, cfg, started, [], error=msg,
                                 code="speaker_not_allowed")
        options_cls = handler.plugin.Options
        try:
            try:
                rendered = templates.render_options(
                    cfg.options, variables, getattr(options_cls, "topic_fields", ()),
                    getattr(options_cls, "argv_fields", ()),
                    getattr(options_cls, "url_fields", ()),
                    getattr(options_cls, "answer_fields", ()))
            except ValueError as exc:
                raise PluginError("slot_unsafe", f"{cfg.plugin}: {exc}") from exc
            options = options_cls.model_validate(rendered)
        except (PluginError, VoicedError) as exc:
            log.warning("handler %s → %s failed: %s", cfg.intent, cfg.plugin, exc)
            return self._outcome(Outcome.ERROR, cfg, started, [], error=exc.message,
                                 code=exc.code)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = (f"{cfg.plugin} options after rendering are invalid: "
                   f"{'options.' + where + ': ' if where else ''}{first['msg']}")
            log.warning("handler %s: %s", cfg.intent, msg)
            return self._outcome(Outcome.ERROR, cfg, started, [], error=msg,
                                 code="options_invalid")
        request = Request(intent=intent, site=variables["site"],
                          session_id=variables["session_id"], options=options,
                          speaker=speaker, area=variables["area"], variables=variables,
                          language=variables["lang"])
        return _Call(handler, request)

    def hold(self, prepared: Prepared) -> HandlerOutcome:
        """Keep a command that waits for its spoken confirmation; the outcome asks for it
        (the session goes on, marked `CONFIRM_MARK`)."""
        assert self.protector is not None and prepared.verdict.confirm
        self.protector.hold(prepared.site, prepared.session_id, prepared.verdict, prepared)
        follow = ContinueSession(prepared.verdict.prompt, (), protect.CONFIRM_MARK)
        return HandlerOutcome(Outcome.CONFIRMING, response=Response(continue_session=follow),
                              code="confirm",
                              duration_ms=(time.monotonic() - prepared.started) * 1000)

    def take_confirmation(self, site: str, session_id: str, heard: str,
                          speaker: SpeakerMatch) -> tuple[Prepared | None, HandlerOutcome | None]:
        """The confirmation turn: the waiting command, and None when it may run now, or
        a refusal (wrong secret, too late, another site or voice: nothing runs)."""
        if self.protector is None:
            return None, HandlerOutcome(Outcome.REFUSED, error="nothing to confirm",
                                        code=protect.CODE_FAILED)
        pending, verdict = self.protector.take(site, session_id, heard, speaker)
        prepared = pending.payload if pending is not None else None
        if verdict.code is None:
            return prepared, None
        return prepared, HandlerOutcome(Outcome.REFUSED, error=verdict.message,
                                        code=verdict.code)

    async def run(self, prepared: Prepared) -> HandlerOutcome:
        """Run the prepared handlers, in order (the protection rules allowed them)."""
        started = time.monotonic()
        calls = prepared.calls
        if not calls:
            return HandlerOutcome(Outcome.NO_HANDLER)
        texts: list[str] = []
        details: list[dict[str, Any]] = []
        last: Response | None = None
        for call in calls:
            cfg, plugin = call.handler.config, call.handler.plugin
            assert plugin is not None
            try:
                async with asyncio.timeout(cfg.timeout_s):
                    response = await plugin.handle(call.request)
            except TimeoutError:
                msg = f"{cfg.plugin} did not answer {cfg.intent} within {cfg.timeout_s:g} s"
                log.warning("%s", msg)
                return self._outcome(Outcome.TIMEOUT, cfg, started, details, error=msg,
                                     code="handler_timeout")
            except (PluginError, VoicedError) as exc:
                log.warning("handler %s → %s failed: %s", cfg.intent, cfg.plugin, exc)
                return self._outcome(Outcome.ERROR, cfg, started, details, error=exc.message,
                                     code=exc.code)
            except Exception as exc:
                log.exception("handler %s → %s crashed", cfg.intent, cfg.plugin)
                return self._outcome(Outcome.ERROR, cfg, started, details, error=repr(exc),
                                     code="handler_crashed")
            last = response
            details.append({"plugin": cfg.plugin, **dict(response.data)})
            if response.text:
                texts.append(response.text)
        final = last if len(calls) == 1 else Response(
            text=" ".join(texts) or None,
            continue_session=last.continue_session if last else None,
        )
        return HandlerOutcome(Outcome.HANDLED, plugin=",".join(c.handler.config.plugin
                                                               for c in calls),
                              response=final, duration_ms=(time.monotonic() - started) * 1000,
                              details=tuple(details))

    @staticmethod
    def _outcome(outcome: Outcome, cfg: HandlerConfig, started: float,
                 details: list[dict[str, Any]], *, error: str | None,
                 code: str) -> HandlerOutcome:
        return HandlerOutcome(outcome, plugin=cfg.plugin, error=error, code=code,
                              duration_ms=(time.monotonic() - started) * 1000,
                              details=tuple(details))

    async def stop(self) -> None:
        """Stop the plugins, when this router owns its host (the daemon's host outlives
        routing tables and is stopped by the daemon)."""
        if self._owns_host:
            await self.host.stop()


def _templated_at(options: Any, loc: tuple[Any, ...]) -> bool:
    """True when the value at `loc` (or above it) is a template, checked at run time."""
    value = options
    for part in loc:
        if templates.is_template(value):
            return True
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return False
    return templates.is_template(value)


def slots_of(recognizer: Any) -> Callable[[str], set[str] | None]:
    """`slot_names(intent)` for a recognizer: its slots, None when it has no such intent."""
    def slot_names(intent: str) -> set[str] | None:
        if intent not in recognizer.intent_names():
            return None
        return set(recognizer.slot_names(intent))
    return slot_names
