"""The ``timer`` plugin: set, cancel and list kitchen timers per satellite.

```yaml
handlers:
  - intent: HassStartTimer        # "set a timer for ten minutes", "set a pasta timer ..."
    plugin: timer
  - intent: HassCancelTimer
    plugin: timer
  - intent: HassTimerStatus
    plugin: timer
    options: {action: list}
```

Durations come from the ``hours``, ``minutes`` and ``seconds`` slots, the optional label
from ``name``. When a timer rings the plugin speaks on the satellite that set it, through
``context.say`` when the daemon offers it, else by publishing a Hermes ``hermes/tts/say``
message. Timers live in SQLite (``<state_dir>/timers.db``): after a restart they are
reloaded, and those that ran out while the daemon was down are announced at once, saying
how long ago they ran out.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, ClassVar, Literal

from pydantic import Field

from voiced.errors import PluginError
from voiced.intents.api import (
    ContinueSession,
    Plugin,
    PluginContext,
    PluginOptions,
    Request,
    Response,
)

from ._durations import duration_from_slots, speak_duration
from ._render import render_answer
from ._timer_store import Timer, TimerStore

__all__ = ["TimerOptions", "TimerPlugin", "infer_action"]

log = logging.getLogger(__name__)

Action = Literal["start", "cancel", "cancel_all", "list"]

_ANNOUNCE_TRIES = 3
_ANNOUNCE_RETRY_S = 2.0
"""An announcement that fails (MQTT not up yet after a restart) is retried this often."""
MIN_DURATION_S = 1.0
"""A shorter timer is refused (it would ring before it was confirmed)."""
LATE_NOTICE_S = 30.0
"""A timer announced this much after it ran out (voiced was not running) says how late."""


def infer_action(intent: str | None) -> Action:
    """The action an intent name implies (HassStartTimer, HassCancelAllTimers, ...)."""
    name = (intent or "").lower()
    if any(word in name for word in ("cancel", "stop", "delete", "remove")):
        return "cancel_all" if "all" in name else "cancel"
    if any(word in name for word in ("status", "list", "left", "remaining")):
        return "list"
    return "start"


class TimerOptions(PluginOptions):
    """Options of the ``timer`` plugin."""

    answer_fields: ClassVar[tuple[str, ...]] = ("announce",)
    action: Action | None = None
    """What to do; default from the intent name (cancel/stop → cancel, status/list → list)."""
    announce: str | None = None
    """What to say when it rings; ``{{name}}`` and ``{{duration}}`` are filled in.
    Default: "The pasta timer is done." or "Your 10 minute timer is done." """
    max_timers: int = Field(20, ge=1, le=1000)
    """Running timers allowed per site."""
    max_duration_s: float = Field(86400.0, gt=0, allow_inf_nan=False)
    """Longest timer, in seconds (finite)."""


def _label(timer: Timer) -> str:
    if timer.name:
        return f"the {timer.name} timer"
    return f"the {speak_duration(timer.duration_s, attributive=True)} timer"


class TimerPlugin(Plugin):
    """Timers per site, stored in SQLite, announced by voice."""

    name: ClassVar[str] = "timer"
    Options: ClassVar[type[TimerOptions]] = TimerOptions

    def __init__(self, context: PluginContext) -> None:
        super().__init__(context)
        self.store = TimerStore(context.state_dir / "timers.db")
        self._timers: dict[str, Timer] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Open the database and schedule stored timers; overdue ones ring at once."""
        await asyncio.to_thread(self.store.open)
        now = time.time()
        for timer in await asyncio.to_thread(self.store.all):
            if timer.ends_at <= now:
                log.info(
                    "timer %s on %s ran out %.0f s ago while the daemon was down",
                    timer.id,
                    timer.site,
                    now - timer.ends_at,
                )
            self._schedule(timer)

    async def stop(self) -> None:
        """Cancel the waiting tasks; the timers stay stored for the next start."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._timers.clear()

    def timers(self, site: str | None = None) -> list[Timer]:
        """Running timers (of `site`), soonest first."""
        found = [t for t in self._timers.values() if site is None or t.site == site]
        return sorted(found, key=lambda t: t.ends_at)

    async def handle(self, request: Request) -> Response:
        """Start, cancel or list timers on the request's site."""
        opts: TimerOptions = request.options
        action = opts.action or infer_action(request.intent.name)
        if action == "start":
            return await self._start_timer(request, opts)
        if action == "list":
            return self._list(request.site)
        return await self._cancel(request, everything=action == "cancel_all")

    def _schedule(self, timer: Timer) -> None:
        self._timers[timer.id] = timer
        task = asyncio.create_task(self._ring(timer), name=f"timer:{timer.site}:{timer.id}")
        self._tasks[timer.id] = task
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        # this plugin owns its timer tasks: one that dies is noticed, never silent
        if not task.cancelled() and task.exception() is not None:
            log.error("timer task %s failed", task.get_name(), exc_info=task.exception())
        for timer_id, known in list(self._tasks.items()):
            if known is task:
                del self._tasks[timer_id]

    async def _ring(self, timer: Timer) -> None:
        """Wait for the timer, announce it, then forget it."""
        await asyncio.sleep(max(0.0, timer.ends_at - time.time()))
        text = timer.announcement
        late = time.time() - timer.ends_at
        if late > LATE_NOTICE_S:  # it ran out while voiced was not running: say so
            late = round(late / 60) * 60 if late >= 120 else late
            text += f" It ran out {speak_duration(late)} ago, while voiced was not running."
        for attempt in range(1, _ANNOUNCE_TRIES + 1):
            try:
                await self._announce(timer, text)
                break
            except Exception as exc:  # the daemon's output path failed; retry, then log
                log.warning(
                    "timer %s on %s: announcement failed (try %d of %d): %s",
                    timer.id,
                    timer.site,
                    attempt,
                    _ANNOUNCE_TRIES,
                    exc,
                )
                if attempt < _ANNOUNCE_TRIES:
                    await asyncio.sleep(_ANNOUNCE_RETRY_S)
        self._timers.pop(timer.id, None)
        # a stop() right after the announcement must not leave the row to ring again:
        # finish the delete, then let the cancellation through
        remove = asyncio.ensure_future(asyncio.to_thread(self.store.remove, timer.id))
        try:
            await asyncio.shield(remove)
        except asyncio.CancelledError:
            await remove
            raise

    async def _announce(self, timer: Timer, text: str) -> None:
        log.info("timer %s on %s is done", timer.id, timer.site)
        if self.context.say is not None:
            await self.context.say(timer.site, text)
            return
        await self.context.publish(
            "hermes/tts/say",
            {
                "text": text,
                "siteId": timer.site,
                "lang": timer.language,
                "id": str(uuid.uuid4()),
                "sessionId": None,
                "volume": None,
            },
        )

    async def _start_timer(self, request: Request, opts: TimerOptions) -> Response:
        try:
            seconds = duration_from_slots(request.slots)
        except ValueError as exc:
            raise PluginError("timer_bad_duration", f"cannot read the duration: {exc}") from exc
        given = [slot for slot in ("hours", "minutes", "seconds")
                 if request.slots.get(slot) not in (None, "")]
        if given and seconds < MIN_DURATION_S:
            raise PluginError(
                "timer_bad_duration",
                f"a timer needs at least {MIN_DURATION_S:g} second (heard "
                + ", ".join(f"{request.slots[s]!r} {s}" for s in given) + ")",
            )
        if seconds <= 0:
            return Response(
                continue_session=ContinueSession(
                    "For how long?", intent_filter=(request.intent.name or "",)
                ),
            )
        if seconds > opts.max_duration_s:
            raise PluginError(
                "timer_too_long",
                f"{speak_duration(seconds)} is longer than the limit of "
                f"{speak_duration(opts.max_duration_s)} (max_duration_s)",
            )
        if len(self.timers(request.site)) >= opts.max_timers:
            raise PluginError(
                "timer_limit", f"{request.site} already has {opts.max_timers} timers running"
            )
        name = str(request.slots.get("name") or "").strip() or None
        spoken = speak_duration(seconds)
        if opts.announce is not None:
            values: dict[str, Any] = {
                "name": name or "",
                "duration": spoken,
            }
            announcement = render_answer(opts.announce, request.variables, values)
        elif name:
            announcement = f"The {name} timer is done."
        else:
            announcement = f"Your {speak_duration(seconds, attributive=True)} timer is done."
        now = time.time()
        timer = Timer(
            id=uuid.uuid4().hex[:12],
            site=request.site,
            name=name,
            duration_s=seconds,
            ends_at=now + seconds,
            created_at=now,
            announcement=announcement,
            language=request.language,
        )
        await asyncio.to_thread(self.store.add, timer)
        self._schedule(timer)
        log.info("timer %s set on %s for %s", timer.id, timer.site, spoken)
        what = f"{name} timer" if name else "Timer"
        return Response(
            text=f"{what} set for {spoken}.",
            data={"timer_id": timer.id, "ends_at": timer.ends_at, "duration_s": seconds},
        )

    def _list(self, site: str) -> Response:
        now = time.time()
        running = self.timers(site)
        if not running:
            return Response(text="There are no timers running.", data={"timers": []})
        parts = [f"{_label(t)} has {speak_duration(t.ends_at - now)} left" for t in running]
        if len(parts) == 1:
            text = parts[0][0].upper() + parts[0][1:] + "."
        else:
            text = f"You have {len(parts)} timers: " + "; ".join(parts) + "."
        data = {"timers": [{"id": t.id, "name": t.name, "ends_at": t.ends_at} for t in running]}
        return Response(text=text, data=data)

    def _matching(self, request: Request) -> list[Timer]:
        """Timers on the site that the request's ``name`` or duration slots point at."""
        running = self.timers(request.site)
        name = str(request.slots.get("name") or "").strip().lower()
        if name:
            return [t for t in running if (t.name or "").lower() == name]
        try:
            seconds = duration_from_slots(request.slots)
        except ValueError:
            seconds = 0
        if seconds > 0:
            return [t for t in running if abs(t.duration_s - seconds) < 0.5]
        return running

    async def _cancel(self, request: Request, everything: bool) -> Response:
        running = self.timers(request.site)
        if not running:
            return Response(text="There are no timers running.", data={"cancelled": []})
        chosen = running if everything else self._matching(request)
        if not chosen:
            return Response(
                text="There is no such timer.", data={"cancelled": [], "running": len(running)}
            )
        if len(chosen) > 1 and not everything:
            names = ", ".join(_label(t) for t in chosen)
            question = f"You have {len(chosen)} timers: {names}. Which one should I cancel?"
            return Response(
                continue_session=ContinueSession(
                    question, intent_filter=(request.intent.name or "",)
                ),
            )
        for timer in chosen:
            task = self._tasks.pop(timer.id, None)
            if task is not None:
                task.cancel()
            self._timers.pop(timer.id, None)
            await asyncio.to_thread(self.store.remove, timer.id)
            log.info("timer %s on %s cancelled", timer.id, timer.site)
        if len(chosen) == 1:
            text = f"{_label(chosen[0])[0].upper()}{_label(chosen[0])[1:]} is cancelled."
        else:
            text = f"{len(chosen)} timers cancelled."
        return Response(text=text, data={"cancelled": [t.id for t in chosen]})
