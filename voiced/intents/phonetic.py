"""How words sound, for the fuzzy matcher: pronunciations and a distance between them.

A misheard word is usually spelled nothing like the word that was said ("tu" for "to",
"dore" for "door") but sounds like it. English pronunciations come from the CMU
dictionary that pocketsphinx ships in its wheel (126k words, no download); a word it
lacks (a typo, a made-up spelling) is sounded out by a small set of English spelling
rules (`letters_to_phones`), good enough to compare against a known word, not to speak.
Other languages have no lexicon here: their fuzzy matching compares letters only.

Phones are ARPAbet symbols without stress marks. `phone_distance` is an edit distance in
which sounds that are easily confused (two vowels, a voiced and a voiceless consonant,
two nasals) cost less than unrelated ones.
"""

from __future__ import annotations

import bisect
import functools
import logging
import re
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

Phones = tuple[str, ...]

VOWELS = frozenset("AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split())
MAX_PRONUNCIATIONS = 3
"""Alternative pronunciations kept per word."""

_CLOSE_PAIRS = {
    0.4: ["P B", "T D", "K G", "F V", "S Z", "TH DH", "CH JH", "SH ZH", "M N", "N NG"],
    0.5: ["TH F", "DH D", "TH T", "S SH", "Z ZH", "CH SH", "JH ZH", "T CH", "D JH", "ER R",
          "DH V", "L R", "W V", "HH Y"],
}
_SUBSTITUTE: dict[tuple[str, str], float] = {}
for _cost, _pairs in _CLOSE_PAIRS.items():
    for _pair in _pairs:
        _a, _b = _pair.split()
        _SUBSTITUTE[_a, _b] = _SUBSTITUTE[_b, _a] = _cost
VOWEL_SUBSTITUTE = 0.4
"""Cost of hearing one vowel for another (accents and fast speech blur vowels most)."""
_WEAK = {"HH": 0.6, "Y": 0.7, "W": 0.7}
"""Cost of inserting or dropping sounds that are easily lost; other consonants cost 1."""
VOWEL_INDEL = 0.8


def _indel(phone: str) -> float:
    return VOWEL_INDEL if phone in VOWELS else _WEAK.get(phone, 1.0)


def _substitute(a: str, b: str) -> float:
    if a == b:
        return 0.0
    if a in VOWELS and b in VOWELS:
        return VOWEL_SUBSTITUTE
    return _SUBSTITUTE.get((a, b), 1.0)


def phone_distance(a: Phones, b: Phones) -> float:
    """Weighted edit distance between two phone sequences."""
    previous = [0.0]
    for p in b:
        previous.append(previous[-1] + _indel(p))
    for pa in a:
        current = [previous[0] + _indel(pa)]
        for j, pb in enumerate(b):
            current.append(min(previous[j] + _substitute(pa, pb),
                               previous[j + 1] + _indel(pa),
                               current[j] + _indel(pb)))
        previous = current
    return previous[-1]


def phone_similarity(a: Phones, b: Phones) -> float:
    """1 for the same sounds, falling to 0 as the distance reaches the longer length."""
    longest = max(len(a), len(b))
    if not longest:
        return 1.0
    return max(0.0, 1.0 - phone_distance(a, b) / longest)


# ---- sounding out a spelling the dictionary lacks ------------------------------------
_LONG = {"a": ("EY",), "e": ("IY",), "i": ("AY",), "o": ("OW",), "u": ("UW",), "y": ("AY",)}
_GRAPHEMES: list[tuple[str, Phones]] = sorted([
    ("tion", ("SH", "AH", "N")), ("sion", ("ZH", "AH", "N")), ("ough", ("AO",)),
    ("augh", ("AO",)), ("eigh", ("EY",)), ("tch", ("CH",)), ("sch", ("S", "K")),
    ("igh", ("AY",)), ("dge", ("JH",)),
    ("ch", ("CH",)), ("sh", ("SH",)), ("th", ("TH",)), ("ph", ("F",)), ("gh", ()),
    ("ck", ("K",)), ("ng", ("NG",)), ("qu", ("K", "W")), ("wh", ("W",)),
    ("ee", ("IY",)), ("ea", ("IY",)), ("ie", ("IY",)), ("ei", ("EY",)), ("ey", ("EY",)),
    ("ai", ("EY",)), ("ay", ("EY",)), ("oa", ("OW",)), ("oe", ("OW",)), ("oo", ("UW",)),
    ("ou", ("AW",)), ("ow", ("AW",)), ("oi", ("OY",)), ("oy", ("OY",)), ("au", ("AO",)),
    ("aw", ("AO",)), ("ew", ("UW",)), ("ue", ("UW",)), ("ui", ("UW",)),
    ("ar", ("AA", "R")), ("er", ("ER",)), ("ir", ("ER",)), ("ur", ("ER",)), ("yr", ("ER",)),
    ("or", ("AO", "R")),
    ("a", ("AE",)), ("e", ("EH",)), ("i", ("IH",)), ("o", ("AA",)), ("u", ("AH",)),
    ("b", ("B",)), ("d", ("D",)), ("f", ("F",)), ("g", ("G",)), ("h", ("HH",)), ("j", ("JH",)),
    ("k", ("K",)), ("l", ("L",)), ("m", ("M",)), ("n", ("N",)), ("p", ("P",)),
    ("q", ("K",)), ("r", ("R",)), ("s", ("S",)), ("t", ("T",)), ("v", ("V",)),
    ("w", ("W",)), ("x", ("K", "S")), ("z", ("Z",)),
], key=lambda g: -len(g[0]))
_SINGLE = frozenset(g for g, _ in _GRAPHEMES if len(g) == 1)
_MAGIC_E = re.compile(r"^(.*?[^aeiou]|)([aeiouy])([bcdfgklmnprstvz])e(s|d)?$")
_SILENT_START = {"kn": "n", "wr": "r", "gn": "n", "ps": "s", "pn": "n"}


def letters_to_phones(word: str) -> Phones:
    """A rough English pronunciation of a spelling (for words not in the dictionary)."""
    word = re.sub(r"[^a-z]", "", word.lower())
    for head, sound in _SILENT_START.items():
        if word.startswith(head):
            word = sound + word[len(head):]
    if word.endswith("mb"):
        word = word[:-1]
    tail: Phones = ()
    magic = _MAGIC_E.match(word)
    if magic and len(word) > 3:  # "rume", "nite": a vowel, a consonant, a silent e
        head, vowel, consonant, ending = magic.groups()
        body = letters_to_phones(head) if head else ()
        tail = (*_LONG[vowel], *letters_to_phones(consonant),
                *(("Z",) if ending == "s" else ("D",) if ending == "d" else ()))
        return body + tail
    out: list[str] = []
    i = 0
    while i < len(word):
        if i and word[i] == word[i - 1] and word[i] not in "aeiou":
            i += 1  # a doubled consonant is one sound
            continue
        c = word[i]
        nxt = word[i + 1] if i + 1 < len(word) else ""
        digraph = next(((g, ph) for g, ph in _GRAPHEMES
                        if len(g) > 1 and word.startswith(g, i)), None)
        if digraph is not None:
            out.extend(digraph[1])
            i += len(digraph[0])
            continue
        i += 1
        if c == "c":
            out.append("S" if nxt in ("e", "i", "y") else "K")
        elif c == "g" and nxt in ("e", "i", "y") and i + 1 < len(word):
            out.append("JH")
        elif c == "y":
            out.append("Y" if i == 1 else ("AY" if len(word) <= 3 else "IY")
                       if i == len(word) else "IH")
        elif i == len(word) and c in "oeaiu" and i > 1:
            if c != "e" or i == 2:  # a final e is silent, except in "me", "he", "we"
                out.append({"o": "OW", "e": "IY", "a": "AH", "i": "IY", "u": "UW"}[c])
        else:
            out.extend(next(ph for g, ph in _GRAPHEMES if g == c) if c in _SINGLE else ())
    return tuple(p for i, p in enumerate(out) if not i or out[i - 1] != p)  # "ff"+"ph": one F


# ---- the dictionary ------------------------------------------------------------------
def cmudict_path() -> Path | None:
    """The CMU dictionary in pocketsphinx's wheel (None: pocketsphinx is not installed)."""
    try:
        import pocketsphinx
    except ImportError:
        return None
    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    return path if path.is_file() else None


def cmudict() -> Mapping[str, tuple[Phones, ...]]:
    """The CMU dictionary, word → pronunciations (empty without pocketsphinx); read once."""
    path = cmudict_path()
    return _read_cmudict(path) if path is not None else {}


@functools.cache
def _read_cmudict(path: Path) -> Mapping[str, tuple[Phones, ...]]:
    return SortedDictionary(path.read_bytes())


class SortedDictionary(Mapping[str, tuple[Phones, ...]]):
    """A pronunciation dictionary file kept as its bytes and looked up by binary search.

    The file (one `word(n) PH ON ES` per line, sorted by word, as cmudict is) is 3 MB;
    as Python dicts and tuples it would take about 50 MB of a small home server's memory.
    """

    def __init__(self, data: bytes) -> None:
        import numpy as np

        self._data = data
        ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n"))
        starts = np.concatenate(([0], ends + 1))
        self._starts = array("I", starts[starts < len(data)].astype(np.uint32).tobytes())
        self._len: int | None = None

    def _key(self, i: int) -> bytes:
        start = self._starts[i]
        end = self._data.find(b" ", start)
        key = self._data[start:end]
        paren = key.find(b"(")
        return key if paren < 0 else key[:paren]

    def _line(self, i: int) -> Phones:
        start = self._starts[i]
        end = self._data.find(b"\n", start)
        text = self._data[start:end if end >= 0 else len(self._data)].decode("utf-8")
        return tuple(sys.intern(p.rstrip("012")) for p in text.split()[1:])

    def __getitem__(self, word: str) -> tuple[Phones, ...]:
        key = word.encode("utf-8")
        i = bisect.bisect_left(range(len(self._starts)), key, key=self._key)
        found: list[Phones] = []
        while i < len(self._starts) and self._key(i) == key:
            if len(found) < MAX_PRONUNCIATIONS:
                found.append(self._line(i))
            i += 1
        if not found:
            raise KeyError(word)
        return tuple(found)

    def __iter__(self) -> Iterator[str]:
        previous = b""
        for i in range(len(self._starts)):
            key = self._key(i)
            if key and key != previous:
                previous = key
                yield key.decode("utf-8")

    def entries(self) -> Iterator[tuple[str, Phones]]:
        """Every (word, pronunciation) line in file order (faster than lookups)."""
        for i in range(len(self._starts)):
            key = self._key(i)
            if key:
                yield key.decode("utf-8"), self._line(i)

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self)
        return self._len


class Lexicon:
    """Pronunciations: a dictionary's, else sounded out from the spelling."""

    def __init__(self, entries: Mapping[str, tuple[Phones, ...]]) -> None:
        self._entries = entries

    @classmethod
    def for_language(cls, language: str) -> Lexicon | None:
        """The lexicon for `language` (English: cmudict), None where there is none."""
        if language.split("-", 1)[0].lower() != "en":
            return None
        path = cmudict_path()
        if path is None:
            log.info("no pronunciation dictionary (pocketsphinx missing): fuzzy matching "
                     "compares letters only")
            return None
        return cls(_read_cmudict(path))

    @classmethod
    def of(cls, entries: Mapping[str, Iterable[str]]) -> Lexicon:
        """A lexicon from `{word: ["W AH T", ...]}` (tests, other languages)."""
        return cls({w.lower(): tuple(tuple(p.split()) for p in prons)
                    for w, prons in entries.items()})

    def __contains__(self, word: str) -> bool:
        return word in self._entries

    @functools.lru_cache(maxsize=8192)  # noqa: B019 - lives as long as the lexicon
    def pronounce(self, word: str) -> tuple[Phones, ...]:
        """The word's pronunciations (one sounded out from its letters if unknown)."""
        found = self._entries.get(word.lower())
        if found:
            return found
        phones = letters_to_phones(word)
        return (phones,) if phones else ()

    def similarity(self, a: str, b: str) -> float:
        """How alike two words (or phrases) sound, 0..1: the closest pronunciations."""
        pa = self.phrase(a)
        pb = self.phrase(b)
        return max((phone_similarity(x, y) for x in pa for y in pb), default=0.0)

    def phrase(self, text: str) -> tuple[Phones, ...]:
        """Pronunciations of a phrase (the first of each word's after the first word's)."""
        parts = text.split()
        if len(parts) == 1:
            return self.pronounce(parts[0])
        firsts = [self.pronounce(w) for w in parts]
        if not all(firsts):
            return ()
        return (tuple(p for prons in firsts for p in prons[0]),)

