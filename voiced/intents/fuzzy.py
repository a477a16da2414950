"""Fuzzy fallback: recover a command with one dropped, inserted or misheard word.

When no template matches, try the sentences one edit away from what was heard: each word
deleted, each word replaced by a similar-looking vocabulary word, and a common template
word inserted at each gap. Every candidate goes through the exact template matcher, so a
fuzzy match is always a sentence the intents really accept. The confidence falls with
the size of the edit relative to the sentence; below `min_confidence` nothing is
recognized, which keeps out-of-domain chatter out (it is rarely one word away from a
command).

The search is bounded twice: at most `MAX_CANDIDATES` candidates, and a time budget
(`intents.fuzzy_budget_ms`); when either runs out the search stops with the best
correction found so far (usually none) and says so (`FuzzySearch.gave_up`). Most
candidates never reach the full template matcher: `voiced.intents.template_index` hands
it only the templates that could take a candidate's words and length.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import time
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
MAX_CANDIDATES = 2000
"""Candidates generated at most for one sentence (the time budget usually ends it first)."""


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


def bigrams(texts: Iterable[str]) -> set[tuple[str, str]]:
    """Adjacent word pairs of `texts` (which words the templates put next to which)."""
    pairs: set[tuple[str, str]] = set()
    for text in texts:
        pairs.update(itertools.pairwise(words(text)))
    return pairs


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
        self._by_length: dict[int, list[str]] = {}
        for w in self.vocabulary:
            self._by_length.setdefault(len(w), []).append(w)
        self._similar = functools.lru_cache(maxsize=4096)(self._similar_uncached)
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

    def _similar_uncached(self, word: str) -> list[str]:
        # a misheard word sounds like the real one, so it is about as long: only words of
        # a similar length are compared at all
        slack = max(1, len(word) // 2)
        near = [w for n in range(len(word) - slack, len(word) + slack + 1)
                for w in self._by_length.get(n, ())]
        return difflib.get_close_matches(word, near, n=MAX_SUBSTITUTES,
                                         cutoff=SIMILARITY_CUTOFF)

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


@dataclass(frozen=True, slots=True)
class FuzzySearch:
    """What one fuzzy search found, and whether it had to stop early."""

    correction: Correction | None
    tried: int
    """Candidates handed to `accept` (less confident ones than a found match are not)."""
    elapsed_s: float
    gave_up: bool
    """The time budget (or `MAX_CANDIDATES`) ran out before every candidate was tried."""


def search_corrections(
    matcher: FuzzyMatcher, text: str, accept: Callable[[str], bool],
    budget_s: float | None = None, max_candidates: int = MAX_CANDIDATES,
    clock: Callable[[], float] = time.perf_counter,
) -> FuzzySearch:
    """The most confident candidate that `accept` (the exact matcher) takes, within
    `budget_s` seconds (None: no time limit) and `max_candidates` candidates.

    Candidates come most plausible first, so a search cut short returns the best of those
    tried: usually nothing, as the long sentences that exhaust the budget are chatter.
    """
    started = clock()
    deadline = started + budget_s if budget_s is not None else None
    best: Correction | None = None
    tried = 0
    gave_up = False
    for seen, cand in enumerate(matcher.candidates(text)):
        if seen >= max_candidates or (deadline is not None and clock() >= deadline):
            gave_up = True
            break
        if best is not None and cand.confidence <= best.confidence:
            continue
        tried += 1
        if accept(cand.text):
            best = cand
    return FuzzySearch(best, tried, clock() - started, gave_up)


def best_correction(
    matcher: FuzzyMatcher, text: str, accept: Callable[[str], bool],
    budget: int = MAX_CANDIDATES,
) -> Correction | None:
    """The most confident candidate that `accept` takes, trying at most `budget`
    candidates (no time limit)."""
    return search_corrections(matcher, text, accept, max_candidates=budget).correction

