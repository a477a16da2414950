"""Durations for the timer plugin: slot values to seconds, seconds to speech.

Pure functions, no I/O. Slot values arrive as numbers (hassil range lists) or as text
("ten", "twenty five", "an", "1.5"), depending on how the intents spell them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["duration_from_slots", "parse_number", "speak_duration"]

_UNITS = {
    "zero": 0, "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_FILLER = {"and", "a", "an"}


def parse_number(value: Any) -> float:
    """A slot value as a number: 10, "10", "1.5", "ten", "twenty-five", "an", "one and a half".

    Raise ValueError when it is not one, or not a finite number >= 0 ("-5", "nan", "inf",
    "1e400").
    """
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    text = str(value).strip().lower()
    try:
        number = float(value) if isinstance(value, int | float) else float(text)
    except (ValueError, OverflowError):
        pass
    else:
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"expected a positive number, got {value!r}")
        return number
    words = text.replace("-", " ").split()
    if not words:
        raise ValueError("not a number: empty")
    total = 0.0
    current = 0.0
    seen = False
    for i, word in enumerate(words):
        if word == "half":
            current += 0.5
            seen = True
        elif word == "hundred":
            current = (current or 1) * 100
            seen = True
        elif word in _FILLER and i + 1 < len(words) and words[i + 1] in ("half", "and"):
            continue  # "one and a half"
        elif word == "and":
            continue
        elif word in _UNITS:
            current += _UNITS[word]
            seen = True
        elif word.replace(".", "", 1).isdigit():
            current += float(word)
            seen = True
        else:
            raise ValueError(f"not a number: {value!r}")
    total += current
    if not seen:
        raise ValueError(f"not a number: {value!r}")
    return total


def duration_from_slots(slots: Mapping[str, Any]) -> float:
    """Seconds from the ``hours``, ``minutes`` and ``seconds`` slots (any may be absent)."""
    total = 0.0
    for slot, factor in (("hours", 3600), ("minutes", 60), ("seconds", 1)):
        if slots.get(slot) not in (None, ""):
            try:
                total += parse_number(slots[slot]) * factor
            except ValueError as exc:
                raise ValueError(f"{slot}: {exc}") from None
    if not math.isfinite(total):
        raise ValueError("the duration is too large to be a number")
    return total


def speak_duration(seconds: float, attributive: bool = False) -> str:
    """ "1 hour and 30 minutes", "10 minutes", "45 seconds", "2 minutes and 5 seconds".

    `attributive` keeps units singular, for "the 10 minute timer".
    """

    def _plural(count: int, unit: str) -> str:
        return f"{count} {unit}" if count == 1 or attributive else f"{count} {unit}s"

    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(_plural(hours, "hour"))
    if minutes:
        parts.append(_plural(minutes, "minute"))
    if secs or not parts:
        parts.append(_plural(secs, "second"))
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]
