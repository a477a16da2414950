"""Which templates could match a sentence: a sound pre-filter for the fuzzy fallback.

The fuzzy fallback hands hundreds of candidate sentences to hassil, which tries every
template on each (after its own filter on required literal text, which long sentences
mostly pass). Most templates cannot take a given candidate at all. `TemplateIndex.narrowed`
returns the intents with only the templates that might, so hassil finds the same best match
in a fraction of the time, and a candidate no template can take never reaches hassil.

Both checks are necessary conditions for a match without a wildcard. That is all the fuzzy
fallback needs: it rejects a guess that lands on a wildcard, and hassil ranks any
wildcard-free match above every wildcard one, so dropping templates that could only match
through a wildcard never changes which wildcard-free match wins.

* letters: hassil consumes every letter of the normalized, skip-word-free text with a
  text chunk, a list value or a number word, so a template takes between `fewest` and
  `most` letters.
* words: a word of that text (its letters and digits) is a run of pieces the template
  produces (the words of its text chunks, list values and number words): text chunks
  match character by character, and the text can only have a space where the template
  has one. A word with a digit may be a number in digits, which any template may take.

hassil's own normalization only deletes punctuation and folds case and spaces, which
changes neither count, so the text is not run through it (it is the slow part); skip
words are removed with hassil's pattern.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from hassil import Intents
from hassil.expression import (
    Alternative,
    Expression,
    Group,
    ListReference,
    RuleReference,
    Sentence,
    TextChunk,
)
from hassil.intents import (
    Intent,
    IntentData,
    RangeSlotList,
    SlotList,
    TextSlotList,
    WildcardSlotList,
)
from hassil.numbers import get_rbnf_engine
from hassil.util import fold_case

Bounds = tuple[int, float] | None
"""(fewest, most) letters a template consumes; None: it cannot match without a wildcard."""
Pieces = frozenset[str] | None
"""Word pieces a template can produce; None: any word."""

MAX_RANGE_NUMBERS = 5000
"""Larger number ranges are not spelled out: they may take any word and length."""
MAX_WORD = 40
"""Longer words are not checked (splitting them into pieces costs too much)."""
CACHE_LIMIT = 4096
"""Entries kept in each per-text cache before it is cleared."""
_ANY_LENGTH: tuple[int, float] = (0, math.inf)
_ALNUM_RUN = re.compile(r"[^\W_]+")
_LETTERS = re.compile(r"[^\W\d_]+")


def letters(text: str) -> int:
    """Letters in `text` after hassil's case folding (digits, spaces, punctuation: 0)."""
    return sum(map(len, _LETTERS.findall(fold_case(text))))


def skip_pattern(skip_words: Iterable[str], ignore_whitespace: bool) -> re.Pattern[str] | None:
    """hassil's pattern for removing skip words (None: there are none)."""
    found = sorted({w.strip() for w in skip_words if w.strip()}, key=len, reverse=True)
    if not found:
        return None
    words = "|".join(re.escape(w) for w in found)
    return re.compile(rf"(?:{words})" if ignore_whitespace else rf"(?<!\w)(?:{words})(?!\w)",
                      re.IGNORECASE)


def pieces_of(text: str) -> frozenset[str]:
    """The folded letter-and-digit runs of `text` ("What's on?" → what, s, on)."""
    return frozenset(_ALNUM_RUN.findall(fold_case(text)))


def warm_up(intents: Intents) -> None:
    """Parse every template and compute hassil's literal-text filter for it now (hassil
    does both lazily, which makes the first recognition after a load slow)."""
    for intent in intents.intents.values():
        for data in intent.data:
            rules = {**intents.expansion_rules, **data.expansion_rules}
            for sentence in data.sentences:
                sentence.get_required_clauses(rules)


@dataclass(frozen=True, slots=True)
class _Template:
    intent: str
    data: IntentData
    sentence: Sentence
    fewest: int
    most: float


class TemplateIndex:
    """The templates of `intents`, indexed by the words and letters they can take."""

    def __init__(self, intents: Intents) -> None:
        self._intents = intents
        self._skip = skip_pattern(intents.skip_words, intents.settings.ignore_whitespace)
        self._memo: dict[tuple[str, int, int], object] = {}
        self._ranges: dict[tuple[object, ...], tuple[Bounds, Pieces]] = {}
        self._templates: list[_Template] = []
        self._by_piece: dict[str, int] = {}
        self._any_word = 0
        """Templates (bit i: template i) that may take any word."""
        for name, intent in intents.intents.items():
            for data in intent.data:
                lists = ({**intents.slot_lists, **data.slot_lists} if data.slot_lists
                         else intents.slot_lists)
                rules = ({**intents.expansion_rules, **data.expansion_rules}
                         if data.expansion_rules else intents.expansion_rules)
                for sentence in data.sentences:
                    sentence.get_required_clauses(rules)  # warm: hassil computes it lazily
                    bounds = self._bounds(sentence.expression, lists, rules, ())
                    if bounds is None:
                        continue  # only ever matches through a wildcard
                    bit = 1 << len(self._templates)
                    self._templates.append(_Template(name, data, sentence, *bounds))
                    pieces = self._pieces(sentence.expression, lists, rules, ())
                    if pieces is None:
                        self._any_word |= bit
                        continue
                    for piece in pieces:
                        self._by_piece[piece] = self._by_piece.get(piece, 0) | bit
        self._segments: dict[str, int] = {}
        self._by_length: dict[tuple[int, int], int] = {}
        self._narrowed: dict[int, Intents] = {}

    @property
    def size(self) -> int:
        """Templates that can match without a wildcard."""
        return len(self._templates)

    def narrowed(self, text: str) -> Intents | None:
        """The intents with only the templates that could take `text` (None: none can)."""
        if not self._templates:
            return None
        mask = self.mask(text)
        if not mask:
            return None
        narrowed = self._narrowed.get(mask)
        if narrowed is None:  # the caches are shared by threads: only whole entries change
            if len(self._narrowed) >= CACHE_LIMIT:
                self._narrowed.clear()
            narrowed = self._narrowed[mask] = self._build(mask)
        return narrowed

    def mask(self, text: str) -> int:
        """Bit i set: template i could take `text`."""
        bare = self._skip.sub(" ", text) if self._skip is not None else text
        mask = self._length_mask(letters(bare), letters(text))
        if self._intents.settings.ignore_whitespace:
            return mask  # words are not separated by spaces there
        for token in bare.split():
            if not mask:
                break
            word = "".join(_ALNUM_RUN.findall(fold_case(token)))
            if word.isalpha() and len(word) <= MAX_WORD:  # not empty, no digit
                mask &= self._segment(word) | self._any_word
        return mask

    def _length_mask(self, low: int, high: int) -> int:
        key = (low, high)
        mask = self._by_length.get(key)
        if mask is None:
            if len(self._by_length) >= CACHE_LIMIT:
                self._by_length.clear()
            mask = 0
            for i, t in enumerate(self._templates):
                if t.fewest <= high and t.most >= low:
                    mask |= 1 << i
            self._by_length[key] = mask
        return mask

    def _segment(self, word: str) -> int:
        """Templates that produce `word` as a run of their pieces."""
        mask = self._segments.get(word)
        if mask is None:
            if len(self._segments) >= CACHE_LIMIT * 4:
                self._segments.clear()
            mask = self._by_piece.get(word, 0)
            for i in range(1, len(word)):
                head = self._segment(word[:i])
                if head & ~mask:
                    mask |= head & self._segment(word[i:])
            self._segments[word] = mask
        return mask

    def _build(self, mask: int) -> Intents:
        kept: dict[int, tuple[str, IntentData, list[Sentence]]] = {}
        for i, t in enumerate(self._templates):
            if mask >> i & 1:
                kept.setdefault(id(t.data), (t.intent, t.data, []))[2].append(t.sentence)
        intents: dict[str, Intent] = {}
        for name, data, sentences in kept.values():
            copy = replace(data)
            copy.__dict__["sentences"] = sentences  # hassil's cached_property, pre-filled
            intents.setdefault(name, Intent(name, [])).data.append(copy)
        return replace(self._intents, intents=intents)

    # ---- what one template can produce ------------------------------------------------
    def _bounds(self, exp: Expression, lists: Mapping[str, SlotList],
                rules: Mapping[str, Sentence], visiting: tuple[str, ...]) -> Bounds:
        if isinstance(exp, TextChunk):
            n = letters(exp.text)
            return n, n
        if isinstance(exp, Alternative):
            options = [b for item in exp.items
                       if (b := self._bounds(item, lists, rules, visiting)) is not None]
            if not exp.items:
                return 0, 0
            if not options:
                return None
            return min(b[0] for b in options), max(b[1] for b in options)
        if isinstance(exp, Group):  # a sequence or a permutation: every item
            low, high = 0, 0.0
            for item in exp.items:
                b = self._bounds(item, lists, rules, visiting)
                if b is None:
                    return None
                low, high = low + b[0], high + b[1]
            return low, high
        if isinstance(exp, RuleReference):
            rule = rules.get(exp.rule_name)
            if rule is None or exp.rule_name in visiting:
                return _ANY_LENGTH
            key = ("rule-bounds", id(rule), id(lists))
            if key not in self._memo:
                self._memo[key] = self._bounds(rule.expression, lists, rules,
                                               (*visiting, exp.rule_name))
            return self._memo[key]  # type: ignore[return-value]
        if isinstance(exp, ListReference):
            slot_list = self._slot_list(exp, lists)
            if isinstance(slot_list, WildcardSlotList):
                return None
            if isinstance(slot_list, RangeSlotList):
                return self._range(slot_list)[0]
            if not isinstance(slot_list, TextSlotList):
                return _ANY_LENGTH
            key = ("list-bounds", id(slot_list), id(lists))
            if key not in self._memo:
                options = [b for value in slot_list.values
                           if (b := self._bounds(value.text_in, lists, rules, ())) is not None]
                self._memo[key] = ((min(b[0] for b in options), max(b[1] for b in options))
                                   if options else None)
            return self._memo[key]  # type: ignore[return-value]
        return _ANY_LENGTH

    def _pieces(self, exp: Expression, lists: Mapping[str, SlotList],
                rules: Mapping[str, Sentence], visiting: tuple[str, ...]) -> Pieces:
        if isinstance(exp, TextChunk):
            return pieces_of(exp.text)
        if isinstance(exp, Group):
            found: set[str] = set()
            for item in exp.items:
                more = self._pieces(item, lists, rules, visiting)
                if more is None:
                    return None
                found |= more
            return frozenset(found)
        if isinstance(exp, RuleReference):
            rule = rules.get(exp.rule_name)
            if rule is None or exp.rule_name in visiting:
                return None
            key = ("rule-pieces", id(rule), id(lists))
            if key not in self._memo:
                self._memo[key] = self._pieces(rule.expression, lists, rules,
                                               (*visiting, exp.rule_name))
            return self._memo[key]  # type: ignore[return-value]
        if isinstance(exp, ListReference):
            slot_list = self._slot_list(exp, lists)
            if isinstance(slot_list, WildcardSlotList):
                return frozenset()  # paths through a wildcard do not count
            if isinstance(slot_list, RangeSlotList):
                return self._range(slot_list)[1]
            if not isinstance(slot_list, TextSlotList):
                return None
            key = ("list-pieces", id(slot_list), id(lists))
            if key not in self._memo:
                values = [self._pieces(v.text_in, lists, rules, ()) for v in slot_list.values]
                known = [v for v in values if v is not None]
                self._memo[key] = (frozenset().union(*known) if len(known) == len(values)
                                   else None)
            return self._memo[key]  # type: ignore[return-value]
        return None

    @staticmethod
    def _slot_list(ref: ListReference, lists: Mapping[str, SlotList]) -> SlotList | None:
        inline = ref.get_inline_range() if ref.is_inline_range else None
        return RangeSlotList(None, *inline) if inline is not None else lists.get(ref.list_name)

    def _range(self, numbers: RangeSlotList) -> tuple[Bounds, Pieces]:
        """Letters and pieces of the number words of a range (digits: no letters)."""
        language = numbers.words_language or self._intents.language
        key = (numbers.start, numbers.stop, numbers.step, numbers.fraction_type, language,
               numbers.digits, numbers.words)
        if key not in self._ranges:
            found: tuple[Bounds, Pieces] = ((0, 0), frozenset())
            if numbers.words:
                try:
                    if (numbers.stop - numbers.start) // numbers.step >= MAX_RANGE_NUMBERS:
                        raise ValueError("too many numbers to spell out")
                    engine = get_rbnf_engine(language)
                    spelled = [text for n in numbers.get_numbers()
                               for text in engine.format_number(n).text_by_ruleset.values()]
                    counts = [letters(text) for text in spelled]
                    found = (((0 if numbers.digits else min(counts, default=0)),
                              max(counts, default=0)),
                             frozenset().union(*(pieces_of(t) for t in spelled)))
                except Exception:  # an unknown language or a huge range: anything goes
                    found = (_ANY_LENGTH, None)
            self._ranges[key] = found
        return self._ranges[key]
