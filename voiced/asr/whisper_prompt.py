"""Whisper's initial prompt, built from the intents' vocabulary.

Whisper conditions its decoding on a "previous text" prompt. Listing the names the intents
know (areas, entities, command words) there makes the model spell rare names the way the
intent templates do ("Zyxel lamp", not "Zixel lamp"), which is what the template matcher
needs.

The prompt is bounded in tokens: it lengthens every decoder pass. When the vocabulary does
not fit, the words the tokenizer splits into the most pieces per word go first: they are
the rare ones the model would misspell, while common words ("turn", "light") need no help.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

DEFAULT_PROMPT_TOKENS = 96
"""Token budget of the prompt (whisper itself allows at most 223)."""


def build_prompt(
    words: Iterable[str], encode: Callable[[str], list[int]], max_tokens: int
) -> tuple[str, list[int]]:
    """Return the prompt text and its tokens (`encode(" " + text)`), at most `max_tokens`.

    `words` are vocabulary entries (single words or names such as "living room");
    duplicates (ignoring case) and entries without letters are dropped. The chosen
    entries appear in alphabetical order, separated by commas.
    """
    if max_tokens <= 0:
        return "", []
    entries: dict[str, str] = {}
    for word in words:
        norm = " ".join(str(word).split())
        if len(norm) < 2 or not any(c.isalpha() for c in norm):
            continue
        entries.setdefault(norm.casefold(), norm)
    cost = {e: len(encode(" " + e)) for e in entries.values()}

    def rarity(entry: str) -> tuple[float, str]:
        return (-cost[entry] / len(entry.split()), entry.casefold())

    chosen: list[str] = []
    used = 0
    for entry in sorted(entries.values(), key=rarity):
        step = cost[entry] + (1 if chosen else 0)  # "," costs a token
        if used + step <= max_tokens:
            chosen.append(entry)
            used += step
    # joining can tokenize differently from the parts: drop the most common until it fits
    while chosen:
        text = ", ".join(sorted(chosen, key=str.casefold))
        tokens = encode(" " + text)
        if len(tokens) <= max_tokens:
            return text, tokens
        chosen.pop()
    return "", []
