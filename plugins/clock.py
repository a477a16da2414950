"""The ``clock`` plugin: says the time or the date.

```yaml
handlers:
  - intent: HassGetCurrentTime
    plugin: clock
  - intent: HassGetCurrentDate
    plugin: clock
    options: {timezone: "Europe/Paris"}
```

Formats are `strftime` patterns; ``%-I``, ``%-d``, ``%-H``, ``%-m``, ``%-M`` drop the
leading zero on every platform. They may hold ``{slot}``-style fields; an inserted value
is said as it is (a ``%`` in it is no directive). Without ``what``, an intent whose name
contains "date" gets the date, any other the time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator

from voiced.intents.api import Plugin, PluginContext, PluginOptions, Request, Response
from voiced.intents.templates import render_fields

__all__ = ["ClockOptions", "ClockPlugin", "format_time"]

log = logging.getLogger(__name__)

_FIELD = re.compile(r"%(-?)(.)", re.DOTALL)


def format_time(moment: datetime, pattern: str) -> str:
    """`strftime`, with ``%-X`` meaning "X without leading zeros" on every platform."""

    def field(match: re.Match[str]) -> str:
        no_pad, code = match.groups()
        if code == "%":
            return "%"
        value = moment.strftime("%" + code)
        return (value.lstrip("0") or "0") if no_pad else value

    return _FIELD.sub(field, pattern)


class ClockOptions(PluginOptions):
    """Options of the ``clock`` plugin."""

    answer_fields: ClassVar[tuple[str, ...]] = ("time_format", "date_format")
    what: Literal["time", "date"] | None = None
    """What to say; default from the intent name ("date" in it → date)."""
    time_format: str = "It is %-I:%M %p."
    date_format: str = "Today is %A, %B %-d."
    timezone: str | None = None
    """IANA zone such as ``Europe/Paris``; default: the server's local zone."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown timezone {value!r} (use an IANA name)") from exc
        return value


class ClockPlugin(Plugin):
    """Answer with the current time or date."""

    name: ClassVar[str] = "clock"
    Options: ClassVar[type[ClockOptions]] = ClockOptions

    def __init__(self, context: PluginContext) -> None:
        super().__init__(context)
        self.now: Callable[[tzinfo | None], datetime] = datetime.now
        """The clock read; tests replace it with a fixed one."""

    async def handle(self, request: Request) -> Response:
        """Say the time or date."""
        opts: ClockOptions = request.options
        zone = ZoneInfo(opts.timezone) if opts.timezone else None
        moment = self.now(zone)
        if moment.tzinfo is None:
            moment = moment.astimezone()
        what = opts.what or ("date" if "date" in (request.intent.name or "").lower() else "time")
        pattern = opts.date_format if what == "date" else opts.time_format
        # the pattern is the configuration's: only its own text is a strftime pattern
        text = render_fields(pattern, request.variables, lambda field, value: value,
                             lambda literal: format_time(moment, literal))
        return Response(text=text, data={"what": what, "iso": moment.isoformat()})
