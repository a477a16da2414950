"""Language codes: the one rule for which sentence set serves a heard language.

Used by the intent recognizer (which sentences to match) and by the speech recognizers
(which vocabulary to prompt with), so both always agree.
"""

from __future__ import annotations

from collections.abc import Iterable


def language_code(code: str) -> str:
    """The form voiced compares language codes in: lower case, `-` between parts."""
    return code.strip().lower().replace("_", "-")


def pick_language(heard: str | None, main: str, available: Iterable[str]) -> str:
    """The language whose set serves `heard`: the same code, else one with the same base
    (Whisper says `pt` for a `pt-BR` set; the main language first), else `main`.

    `main` and `available` are in `language_code` form.
    """
    if not heard:
        return main
    code = language_code(heard)
    others = [lang for lang in available if lang != main]
    if code == main or code in others:
        return code
    base = code.split("-")[0]
    if main.split("-")[0] == base:
        return main
    return next((lang for lang in others if lang.split("-")[0] == base), main)
