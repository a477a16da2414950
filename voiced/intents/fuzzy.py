"""Fuzzy fallback: recover a command written differently or with one word misheard.

When no template matches, the sentence is first rewritten in ways that do not change what
was said (`voiced.intents.spelling`): a contraction expanded or made ("what's" ↔ "what
is"), a word split or two joined where the intents' vocabulary has the other form ("bed
room" → "bedroom", "turnoff" → "turn off", "per cent" → "percent"), a hyphen dropped. Each
of those sentences (at most two rewrites) may then take one edit: a word deleted, a word
replaced by a vocabulary word that looks or sounds like it (`voiced.intents.phonetic`:
"tu" → "to", "dore" → "door"), or a common template word inserted at a gap. Every
candidate goes through the exact template matcher, so a fuzzy match is always a sentence
the intents really accept. The confidence falls with the cost of the changes relative to
the sentence; below `min_confidence` nothing is recognized, which keeps out-of-domain
chatter out (it is rarely one word away from a command).

What a guess may not do: drop or replace a negation ("don't"), touch a number (numbers
are never guessed), or make a slot value that was not heard. `FuzzyMatcher.slot_change`
tells the recognizer when a correction changed the words of a matched slot value beyond
a respelling: a replaced word whose value does not sound and look like what was heard, a
word inserted into it, or a content word dropped next to it.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from voiced.intents.phonetic import Lexicon, phone_similarity
from voiced.intents.spelling import (
    APOSTROPHES,
    Piece,
    Rewriter,
    Variant,
    fillers,
    negations,
    polarities,
)

__all__ = ["Correction", "FuzzyMatcher", "FuzzySearch", "Piece", "best_correction",
           "search_corrections"]

_EDGE_PUNCTUATION = ",.;:!?\"()"

MAX_SUBSTITUTES = 4
"""Similar vocabulary words tried in place of each heard word."""
MAX_SOUND_SUBSTITUTES = 8
"""Similar vocabulary words tried in place of the one unknown word of a sentence."""
POLAR_MIN_RATIO = 0.75
"""A word that sets the direction of an action (on/off, lock/unlock) replaces a heard
word only when spelled almost alike ("of" → "off", "onn" → "on"), never by sound alone."""
SIMILARITY_CUTOFF = 0.6
"""difflib ratio a vocabulary word needs to stand in for a heard word."""
SOUND_CUTOFF = 0.75
"""Sound similarity (`phonetic.phone_similarity`) a vocabulary word needs to stand in for
a heard word that is not in the vocabulary."""
SLOT_CLOSENESS = 0.8
"""How alike a corrected slot value must be to what was heard: the mean of spelling and
sound similarity of the whole value, or the spelling similarity of every replaced word
(a typo: the sounds of a spelling the dictionary lacks are only a rough guess)."""
MAX_INSERTIONS = 30
"""Words tried at one gap."""
MIN_WORDS = 3
"""Shorter inputs get no edit (one would change too much of them); rewrites still apply,
and a two-word input may have its unknown word replaced (confidence allows only a word
that sounds the same: "lok door")."""
SOUND_ALIKE = 0.9
"""A replaced slot word this alike in sound (one close sound apart) is close enough."""
FILLER_LETTERS = 4
"""An unknown word this short, where the templates put a filler word ("the", "a"), may
be that word misheard ("vacuum duh kitchen")."""
FILLER_COST = 0.9
"""Cost of taking an unknown short word for a filler (more than dropping it)."""
MAX_CANDIDATES = 2000
"""Candidates generated at most for one sentence (the time budget usually ends it first)."""
DELETE_COST = INSERT_COST = 0.75


@dataclass(frozen=True, slots=True)
class Correction:
    """The edited sentence and what was changed."""

    text: str
    edit: str
    """"delete W", "replace W→V", "insert V", "join A+B→AB", "split W→A B",
    "contraction W→V", "hyphen W→V", joined by "; " when several."""
    confidence: float
    heard: tuple[str, ...] = ()
    """The words as heard."""
    pieces: tuple[Piece, ...] = ()
    """The words of `text`, each with its origin."""
    deleted: tuple[int, ...] = ()
    """Positions of heard words that were dropped."""


def words(text: str) -> list[str]:
    """Lower-case words of a sentence (numbers such as "26.5" and "40%" stay whole)."""
    out = []
    for token in text.translate(APOSTROPHES).lower().split():
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


def letter_ratio(a: str, b: str) -> float:
    """difflib's similarity of two spellings (spaces ignored)."""
    return difflib.SequenceMatcher(None, a.replace(" ", ""), b.replace(" ", "")).ratio()


def _repeated(heard: Sequence[str], i: int) -> bool:
    """Heard word i is said twice in a row (a stutter: dropping one loses nothing)."""
    return any(0 <= j < len(heard) and heard[j] == heard[i] for j in (i - 1, i + 1))


class FuzzyMatcher:
    """Generates corrections in order of confidence (pure, no hassil here)."""

    def __init__(self, vocabulary: Iterable[str], insertable: Iterable[str] = (),
                 min_confidence: float = 0.6, also_known: Iterable[str] = (),
                 bigrams: Iterable[tuple[str, str]] = (),
                 never_insert: Iterable[str] = (), language: str = "en",
                 lexicon: Lexicon | None = None) -> None:
        self.vocabulary = sorted({w.lower() for w in vocabulary if w})
        self._by_length: dict[int, list[str]] = {}
        for w in self.vocabulary:
            self._by_length.setdefault(len(w), []).append(w)
        self._similar = functools.lru_cache(maxsize=4096)(self._similar_uncached)
        self._sounds_like = functools.lru_cache(maxsize=4096)(self._sounds_like_uncached)
        self.insertable = sorted({w.lower() for w in insertable})
        self.min_confidence = min_confidence
        self.numbers = {w.lower() for w in also_known}
        """Number words: known, but never inserted, replaced or dropped."""
        self._known = set(self.vocabulary) | self.numbers
        self._value_only = {w.lower() for w in never_insert}
        """Words only ever said as slot values: inserting one would invent a value."""
        self._negations = negations(language)
        self._fillers = fillers(language)
        self._polar = polarities(language)
        self._protected = self._negations | self.numbers
        self._after: dict[str, set[str]] = {}
        self._before: dict[str, set[str]] = {}
        pairs: set[tuple[str, str]] = set()
        for a, b in bigrams:
            self._after.setdefault(a, set()).add(b)
            self._before.setdefault(b, set()).add(a)
            pairs.add((a, b))
        # whole words a split, join or replacement may produce: not template fragments
        # ("ed" of "lock[ed]"), numbers or negations
        self._whole = {w for w in self.vocabulary if len(w) >= 3 or w in self._after
                       or w in self._before} - self._protected
        self._rewriter = Rewriter(language, self._whole, pairs, self.known, self._fixed)
        self.lexicon = lexicon
        self._phones: list[tuple[str, tuple[tuple[str, ...], ...]]] = []
        if lexicon is not None:
            self._phones = [(w, lexicon.pronounce(w)) for w in self.vocabulary
                            if w in self._whole and w.isalpha()]

    # ---- similar words ----------------------------------------------------------------
    def _similar_uncached(self, word: str) -> list[str]:
        # a misheard word sounds like the real one, so it is about as long: only words of
        # a similar length are compared at all
        slack = max(1, len(word) // 2)
        near = [w for n in range(len(word) - slack, len(word) + slack + 1)
                for w in self._by_length.get(n, ()) if w in self._whole]
        return difflib.get_close_matches(word, near, n=MAX_SUBSTITUTES,
                                         cutoff=SIMILARITY_CUTOFF)

    def _sounds_like_uncached(self, word: str) -> list[tuple[str, float]]:
        """Vocabulary words that look or sound like an unknown `word`, best first."""
        scores = {w: letter_ratio(word, w) for w in self._similar(word)}
        if self.lexicon is not None and word.isalpha():
            heard = self.lexicon.pronounce(word)
            for w, prons in self._phones:
                best = max((phone_similarity(h, p) for h in heard for p in prons
                            if abs(len(h) - len(p)) <= 2), default=0.0)
                if best >= SOUND_CUTOFF and best > scores.get(w, 0.0):
                    scores[w] = best
        return sorted(scores.items(), key=lambda kv: -kv[1])[:MAX_SOUND_SUBSTITUTES]

    def confidence(self, n_words: int, cost: float) -> float:
        """Confidence of a correction of `cost` (0..1 per edit) in an n-word sentence."""
        return max(0.0, 1.0 - cost / max(n_words, 1) * 1.5)

    def known(self, word: str) -> bool:
        """True for a vocabulary word or a number."""
        return word in self._known or any(c.isdigit() for c in word)

    def _fixed(self, word: str) -> bool:
        """Negations and numbers: never dropped, replaced or inserted."""
        return word in self._protected or any(c.isdigit() for c in word)

    # ---- candidates -------------------------------------------------------------------
    def candidates(self, text: str) -> Iterator[Correction]:
        """Rewrites and one-edit corrections, most confident first.

        Only sentences made entirely of known words are proposed; a rewritten sentence
        with two or more unknown words is out of reach of one edit and yields nothing.
        """
        heard = tuple(words(text))
        n = len(heard)
        found: list[Correction] = []
        for variant in self._rewriter.variants(heard):
            for fixed in self._edited(variant, n):
                conf = self.confidence(n, fixed.cost)
                if conf < self.min_confidence:
                    continue
                found.append(Correction(" ".join(p.word for p in fixed.pieces),
                                        "; ".join(fixed.edits), conf, heard, fixed.pieces,
                                        fixed.deleted))
                if len(found) >= MAX_CANDIDATES:
                    break
            if len(found) >= MAX_CANDIDATES:
                break
        found.sort(key=lambda c: -c.confidence)  # stable: ties keep the order made
        seen: set[str] = set()
        for cand in found:
            if cand.text not in seen:
                seen.add(cand.text)
                yield cand

    def _edited(self, v: Variant, n: int) -> Iterator[Variant]:
        """The variant itself (if rewritten) and its one-edit corrections."""
        ps = v.pieces
        unknown = [k for k, p in enumerate(ps) if not self.known(p.word)]
        if v.edits and not unknown:
            yield v
        if len(unknown) > 1 or n < MIN_WORDS - (1 if unknown else 0):
            return
        if unknown:
            yield from self._fix(v, unknown[0], substitute_only=n < MIN_WORDS)
            return
        for k in range(len(ps)):
            yield from self._fix(v, k, substitute_only=True)
        for k in range(len(ps)):
            deleted = self._delete(v, k)
            if deleted is not None:
                yield deleted
        for gap in range(len(ps) + 1):
            for word in self._insertions([p.word for p in ps], gap):
                yield Variant((*ps[:gap], Piece(word, (), "insert"), *ps[gap:]),
                               v.cost + INSERT_COST, (*v.edits, f"insert {word}"), v.deleted)

    def _delete(self, v: Variant, k: int) -> Variant | None:
        p = v.pieces[k]
        if p.change or self._fixed(p.word):
            return None
        return Variant((*v.pieces[:k], *v.pieces[k + 1:]), v.cost + DELETE_COST,
                        (*v.edits, f"delete {p.word}"), (*v.deleted, *p.heard))

    def _fits(self, heard: Sequence[str], gap: int) -> set[str]:
        """Words the templates put between the neighbours of `gap` (no slot values)."""
        after = self._after.get(heard[gap - 1]) if gap > 0 else None
        before = self._before.get(heard[gap]) if gap < len(heard) else None
        if after is not None and before is not None:
            fits = after & before
        else:
            fits = after or before or set()
        return fits - self._value_only - self._protected - self._polar

    def _insertions(self, heard: list[str], gap: int) -> list[str]:
        """Words that could have been lost at `gap`: those the templates put between its
        neighbours, else the most common template words."""
        fits = self._fits(heard, gap)
        if fits:
            return sorted(fits)[:MAX_INSERTIONS]
        return [w for w in self.insertable if w not in self._value_only
                and w not in self._protected and w not in self._polar]

    def _fix(self, v: Variant, k: int, substitute_only: bool = False) -> Iterator[Variant]:
        """Corrections of word k: a similar vocabulary word, or (unless substitute_only)
        dropping it."""
        p = v.pieces[k]
        if p.change or self._fixed(p.word):
            return
        unknown = not self.known(p.word)
        if unknown:  # not a vocabulary word: what it sounds or looks like
            options = self._sounds_like(p.word)
        else:  # a known word misheard as another: compare spellings
            options = [(s, letter_ratio(p.word, s)) for s in self._similar(p.word)]
        for sub, similarity in options:
            if sub == p.word:
                continue
            if sub in self._polar and letter_ratio(p.word, sub) < POLAR_MIN_RATIO:
                # "aung" sounds like "on" but may have been "off": a guess never picks
                # the way an action goes from sound alone ("of" → "off" is spelling)
                continue
            yield Variant((*v.pieces[:k], Piece(sub, p.heard, "replace"), *v.pieces[k + 1:]),
                           v.cost + 1.0 - similarity * 0.5,
                           (*v.edits, f"replace {p.word}→{sub}"), v.deleted)
        if substitute_only:
            return
        # an unknown word that sounds like a slot value may be that value: never dropped
        if not (unknown and any(sub in self._value_only for sub, _ in options)):
            deleted = self._delete(v, k)
            if deleted is not None:
                yield deleted
        if unknown and len(p.word) <= FILLER_LETTERS:
            before = self._after.get(v.pieces[k - 1].word, set()) if k else set()
            after = (self._before.get(v.pieces[k + 1].word, set())
                     if k + 1 < len(v.pieces) else set())
            for filler in sorted((before | after) & self._fillers):
                yield Variant((*v.pieces[:k], Piece(filler, p.heard, "replace"),
                                *v.pieces[k + 1:]), v.cost + FILLER_COST,
                               (*v.edits, f"replace {p.word}→{filler}"), v.deleted)

    # ---- what a correction did to a slot value ----------------------------------------
    def slot_change(self, correction: Correction, span: tuple[int, int],
                    numeric: bool = False) -> str | None:
        """Why the slot value at `span` (character offsets in `correction.text`) is not
        what was heard, or None when it is (as heard, or only respelled)."""
        inside: list[Piece] = []
        offset = 0
        for piece in correction.pieces:
            end = offset + len(piece.word)
            if offset < span[1] and end > span[0]:
                inside.append(piece)
            offset = end + 1
        if not inside:
            return None
        if any(p.change == "insert" for p in inside):
            return "a word was inserted into it"
        heard_at = sorted(i for p in inside for i in p.heard)
        lo, hi = heard_at[0], heard_at[-1]
        for i in correction.deleted:
            if (lo - 1 <= i <= hi + 1 and not self._droppable(correction.heard[i])
                    and not _repeated(correction.heard, i)):
                return f"{correction.heard[i]!r} was dropped next to it"
        changed = [p.change for p in inside if p.change]
        if all(c == "rewrite" for c in changed):
            return None  # as heard, or respelled: the same words
        if numeric:
            return "numbers are never guessed"
        said = " ".join(correction.heard[lo:hi + 1])
        value = " ".join(p.word for p in inside)
        closeness = self.closeness(said, value)
        if closeness >= SLOT_CLOSENESS:
            return None
        replaced = [(correction.heard[p.heard[0]], p.word) for p in inside
                    if p.change == "replace"]
        if all(letter_ratio(a, b) >= SLOT_CLOSENESS for a, b in replaced):
            return None  # every replaced word a slip of spelling
        if self.lexicon is not None and all(self.lexicon.similarity(a, b) >= SOUND_ALIKE
                                            for a, b in replaced):
            return None  # every replaced word sounds (nearly) the same
        return f"{value!r} is not close to {said!r} ({closeness:.2f})"

    def drops_content(self, correction: Correction) -> str | None:
        """A dropped word that may have carried meaning (for matches whose slot comes
        from the context, not from the words), or None."""
        for i in correction.deleted:
            if not self._droppable(correction.heard[i]):
                return correction.heard[i]
        return None

    def _droppable(self, word: str) -> bool:
        return word in self._fillers or (word in self._known and word not in self._value_only
                                         and not self._fixed(word))

    def closeness(self, said: str, value: str) -> float:
        """How alike two phrases are: the mean of spelling and sound similarity (spelling
        only without a lexicon)."""
        letters = letter_ratio(said, value)
        if self.lexicon is None:
            return letters
        return (letters + self.lexicon.similarity(said, value)) / 2


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
    matcher: FuzzyMatcher, text: str, accept: Callable[[Correction], bool],
    budget_s: float | None = None, max_candidates: int = MAX_CANDIDATES,
    clock: Callable[[], float] = time.perf_counter,
) -> FuzzySearch:
    """The most confident candidate that `accept` (the exact matcher) takes, within
    `budget_s` seconds (None: no time limit) and `max_candidates` candidates.

    Candidates come most confident first, so the first one taken is the answer and a
    search cut short returns nothing: the long sentences that exhaust the budget are
    chatter.
    """
    started = clock()
    deadline = started + budget_s if budget_s is not None else None
    tried = 0
    for seen, cand in enumerate(matcher.candidates(text)):
        if seen >= max_candidates or (deadline is not None and clock() >= deadline):
            return FuzzySearch(None, tried, clock() - started, True)
        tried += 1
        if accept(cand):
            return FuzzySearch(cand, tried, clock() - started, False)
    return FuzzySearch(None, tried, clock() - started, False)


def best_correction(
    matcher: FuzzyMatcher, text: str, accept: Callable[[Correction], bool],
    budget: int = MAX_CANDIDATES,
) -> Correction | None:
    """The most confident candidate that `accept` takes, trying at most `budget`
    candidates (no time limit)."""
    return search_corrections(matcher, text, accept, max_candidates=budget).correction
