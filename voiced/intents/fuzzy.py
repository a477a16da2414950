"""Fuzzy fallback: recover a command with one dropped, inserted or misheard word.

When no template matches, try the sentences one edit away from what was heard: each word
deleted, each word replaced by a similar-looking vocabulary word, and a common template
word inserted at each gap. Every candidate goes through the exact template matcher, so a
fuzzy match is always a sentence the intents really accept. The confidence falls with
the size of the edit relative to the sentence; below `min_confidence` nothing is
recognized, which keeps out-of-domain chatter out (it is rarely one word away from a
command).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

_EDGE_PUNCTUATION = ",.;:!?\"()"

MAX_SUBSTITUTES = 4
"""Similar vocabulary words tried in place of each heard word."""
SIMILARITY_CUTOFF = 0.6
"""difflib ratio a vocabulary word needs to stand in for a heard word."""
MAX_INSERTIONS = 30
"""Words tried at one gap."""
MIN_WORDS = 3
"""Shorter inputs are not corrected: one edit would change too much of them."""


@dataclass(frozen=True, slots=True)
class Correction:
    """The edited sentence and what was changed."""

    text: str
    edit: str
    """"delete W", "replace W→V" or "insert V"."""
    confidence: float


def words(text: str) -> list[str]:
    """Lower-case words of a sentence (numbers such as "26.5" and "40%" stay whole)."""
    out = []
    for token in text.lower().split():
        token = token.strip(_EDGE_PUNCTUATION)
        if token:
            out.append(token)
    return out


def number_words(language: str, upto: int = 100) -> set[str]:
    """Words used to say the numbers 0..upto in `language` (for range lists)."""
    try:
        from unicode_rbnf import RbnfEngine

        engine = RbnfEngine.for_language(language)
    except Exception:
        return set()
    found: set[str] = set()
    for n in range(upto + 1):
        for text in engine.format_number(n).text_by_ruleset.values():
            found.update(words(text.replace("-", " ")))
    return found


class FuzzyMatcher:
    """Generates one-edit corrections in a sensible order (pure, no hassil here)."""

    def __init__(self, vocabulary: Iterable[str], insertable: Iterable[str] = (),
                 min_confidence: float = 0.6, also_known: Iterable[str] = (),
                 bigrams: Iterable[tuple[str, str]] = (),
                 never_insert: Iterable[str] = ()) -> None:
        self.vocabulary = sorted({w.lower() for w in vocabulary if w})
        self._by_first: dict[str, list[str]] = {}
        for w in self.vocabulary:
            self._by_first.setdefault(w[0], []).append(w)
        self.insertable = sorted({w.lower() for w in insertable})
        self.min_confidence = min_confidence
        self._known = set(self.vocabulary) | {w.lower() for w in also_known}
        self._never_insert = {w.lower() for w in never_insert}
        """Words only ever said as slot values: inserting one would invent a value."""
        self._after: dict[str, set[str]] = {}
        self._before: dict[str, set[str]] = {}
        for a, b in bigrams:
            self._after.setdefault(a, set()).add(b)
            self._before.setdefault(b, set()).add(a)

    def _similar(self, word: str) -> list[str]:
        # a misheard word sounds like the real one, so it is about as long
        return [w for w in difflib.get_close_matches(word, self.vocabulary, n=MAX_SUBSTITUTES,
                                                     cutoff=SIMILARITY_CUTOFF)
                if abs(len(w) - len(word)) <= max(1, len(word) // 2)]

    def confidence(self, n_words: int, cost: float) -> float:
        """Confidence of a correction of `cost` (0..1 per edit) in an n-word sentence."""
        return max(0.0, 1.0 - cost / max(n_words, 1) * 1.5)

    def known(self, word: str) -> bool:
        """True for a vocabulary word or a number."""
        return word in self._known or any(c.isdigit() for c in word)

    def candidates(self, text: str) -> Iterator[Correction]:
        """One-edit corrections, most plausible first (unknown words are fixed first).

        Only sentences made entirely of known words are proposed; an input with two or
        more unknown words is out of reach of one edit and yields nothing.
        """
        heard = words(text)
        n = len(heard)
        unknown = [i for i, w in enumerate(heard) if not self.known(w)]
        if n < MIN_WORDS or len(unknown) > 1:
            return
        if unknown:
            yield from self._fix(heard, unknown[0])
            return
        for i in range(n):
            yield from self._fix(heard, i, substitute_only=True)
        for i in range(n):
            conf = self.confidence(n, 0.75)
            if conf >= self.min_confidence:
                yield Correction(" ".join(heard[:i] + heard[i + 1:]), f"delete {heard[i]}", conf)
        conf = self.confidence(n, 0.75)
        if conf >= self.min_confidence:
            for gap in range(n + 1):
                for word in self._insertions(heard, gap):
                    fixed = [*heard[:gap], word, *heard[gap:]]
                    yield Correction(" ".join(fixed), f"insert {word}", conf)

    def _insertions(self, heard: list[str], gap: int) -> list[str]:
        """Words that could have been lost at `gap`: those the templates put between its
        neighbours, else the most common template words."""
        after = self._after.get(heard[gap - 1]) if gap > 0 else None
        before = self._before.get(heard[gap]) if gap < len(heard) else None
        if after is not None and before is not None:
            fits = after & before
        else:
            fits = after or before or set()
        fits -= self._never_insert
        if fits:
            return sorted(fits)[:MAX_INSERTIONS]
        return [w for w in self.insertable if w not in self._never_insert]

    def _fix(self, heard: list[str], i: int, substitute_only: bool = False
             ) -> Iterator[Correction]:
        """Corrections of word i: a similar vocabulary word, or (unless substitute_only)
        dropping it."""
        n = len(heard)
        for sub in self._similar(heard[i]):
            if sub == heard[i]:
                continue
            ratio = difflib.SequenceMatcher(None, heard[i], sub).ratio()
            conf = self.confidence(n, 1.0 - ratio * 0.5)
            if conf >= self.min_confidence:
                yield Correction(" ".join([*heard[:i], sub, *heard[i + 1:]]),
                                 f"replace {heard[i]}→{sub}", conf)
        if not substitute_only:
            conf = self.confidence(n, 0.75)
            if conf >= self.min_confidence:
                yield Correction(" ".join(heard[:i] + heard[i + 1:]), f"delete {heard[i]}", conf)


def best_correction(
    matcher: FuzzyMatcher, text: str, accept: Callable[[str], bool], budget: int = 400
) -> Correction | None:
    """The most confident candidate that `accept` (the exact matcher) takes, trying at most
    `budget` candidates."""
    best: Correction | None = None
    for tried, cand in enumerate(matcher.candidates(text)):
        if tried >= budget:
            break
        if best is not None and cand.confidence <= best.confidence:
            continue
        if accept(cand.text):
            best = cand
    return best
