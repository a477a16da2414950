"""Ways of writing the same words, per language: what the fuzzy matcher may rewrite freely.

Speech recognizers and people write one sentence several ways: "what's" or "what is",
"bedroom" or "bed room", "turn off" or "turnoff", "per cent" or "percent". None of these
is a guess about what was said, so the fuzzy matcher tries them before (and together
with) its one-word corrections, at a small cost. The tables here are per language;
English has them, other languages get only the language-neutral rewrites (hyphens,
apostrophes, split and joined words checked against the intents' own vocabulary).

`Rewriter` makes those sentences. Two word classes are protected, because changing them
changes the meaning rather than the spelling: negations (a guess must never drop the
"don't" in "don't unlock the door") and numbers (never guessed; see
`voiced.intents.fuzzy`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u02bc": "'"})
"""Typographic apostrophes (Whisper writes "what\u2019s") folded to the ASCII one."""

_EN_CONTRACTIONS: dict[str, tuple[str, ...]] = {
    "what's": ("what is", "what has"), "that's": ("that is",), "there's": ("there is",),
    "where's": ("where is",), "how's": ("how is",), "who's": ("who is",),
    "when's": ("when is",), "it's": ("it is", "it has"), "he's": ("he is",),
    "she's": ("she is",), "here's": ("here is",), "let's": ("let us",),
    "i'm": ("i am",), "you're": ("you are",), "we're": ("we are",),
    "they're": ("they are",), "what're": ("what are",),
    "i've": ("i have",), "you've": ("you have",), "we've": ("we have",),
    "they've": ("they have",),
    "i'll": ("i will",), "you'll": ("you will",), "we'll": ("we will",),
    "it'll": ("it will",), "that'll": ("that will",), "they'll": ("they will",),
    "i'd": ("i would", "i had"), "you'd": ("you would",), "we'd": ("we would",),
    "they'd": ("they would",), "it'd": ("it would",),
    "don't": ("do not",), "doesn't": ("does not",), "didn't": ("did not",),
    "isn't": ("is not",), "aren't": ("are not",), "wasn't": ("was not",),
    "weren't": ("were not",), "can't": ("cannot", "can not"), "won't": ("will not",),
    "wouldn't": ("would not",), "shouldn't": ("should not",), "couldn't": ("could not",),
    "haven't": ("have not",), "hasn't": ("has not",), "hadn't": ("had not",),
}
_EN_REDUCED: dict[str, tuple[str, ...]] = {
    "gonna": ("going to",), "wanna": ("want to",), "gotta": ("got to",),
    "lemme": ("let me",), "gimme": ("give me",),
}
"""Spoken reductions: expanded, never produced."""
_EN_AMBIGUOUS = frozenset({"id", "ill", "well", "were", "wed", "hed", "shed", "shell",
                           "hell", "wont", "cant", "lets", "whatre", "itd"})
"""Contractions written without the apostrophe that are also other words."""

_EN_NEGATIONS = frozenset({
    "not", "no", "never", "cannot", "nothing", "nobody", "none", "nowhere", "neither",
    "nor", "without", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent",
    "wont", "cant", "wouldnt", "shouldnt", "couldnt", "havent", "hasnt", "hadnt",
} | {c for c in _EN_CONTRACTIONS if c.endswith("n't")})
_EN_FILLERS = frozenset({"uh", "um", "er", "erm", "ah", "eh", "hmm", "mm", "oh", "uhm",
                         "like", "so", "well", "okay", "ok", "just", "actually", "please",
                         "the", "a", "and"})
"""Words whose loss changes nothing: the only ones a correction may drop between the
words of a slot value, or drop while the context fills a slot."""


@functools.cache
def contractions(language: str) -> Mapping[str, tuple[tuple[str, ...], ...]]:
    """Written form → the word sequences it stands for ("what's" → (what, is), ...),
    including the forms without an apostrophe that are no other word ("whats")."""
    if _base(language) != "en":
        return {}
    table: dict[str, tuple[tuple[str, ...], ...]] = {}
    for short, longs in (_EN_CONTRACTIONS | _EN_REDUCED).items():
        expanded = tuple(tuple(phrase.split()) for phrase in longs)
        table[short] = expanded
        bare = short.replace("'", "")
        if bare != short and bare not in _EN_AMBIGUOUS:
            table[bare] = ((short,), *expanded)
    return table


@functools.cache
def contracted(language: str) -> Mapping[tuple[str, ...], str]:
    """Word sequence → its contraction ((what, is) → "what's"); reductions excluded."""
    if _base(language) != "en":
        return {}
    return {tuple(phrase.split()): short for short, longs in _EN_CONTRACTIONS.items()
            for phrase in longs}


def negations(language: str) -> frozenset[str]:
    """Words that negate: never dropped or replaced by a correction."""
    return _EN_NEGATIONS if _base(language) == "en" else frozenset()


_EN_POLARITIES = frozenset({
    "on", "off", "open", "close", "closed", "shut", "lock", "unlock", "locked", "unlocked",
    "up", "down", "start", "stop", "raise", "lower", "increase", "decrease", "enable",
    "disable", "arm", "disarm", "armed", "disarmed", "activate", "deactivate", "pause",
    "resume", "play", "mute", "unmute", "yes", "cancel",
})
"""Words that choose which way an action goes ("on"/"off", "lock"/"unlock"): a guess must
not pick one for a word that only sounds like it."""


def polarities(language: str) -> frozenset[str]:
    """Words that set an action's direction (see `_EN_POLARITIES`)."""
    return _EN_POLARITIES if _base(language) == "en" else frozenset()


def fillers(language: str) -> frozenset[str]:
    """Words that carry no content (see `_EN_FILLERS`)."""
    return _EN_FILLERS if _base(language) == "en" else frozenset()


def _base(language: str) -> str:
    return language.split("-", 1)[0].split("_", 1)[0].lower()


# ---- rewriting a heard sentence ----------------------------------------------------------
MAX_REWRITES = 2
"""Spelling rewrites combined in one sentence."""
MAX_VARIANTS = 32
"""Rewritten sentences kept at most (each then gets the fuzzy matcher's one edit)."""
REWRITE_COST = {"hyphen": 0.05, "contraction": 0.1, "join": 0.2, "split": 0.2}
"""Cost of each rewrite (a fuzzy edit costs 0.5 to 1)."""


@dataclass(frozen=True, slots=True)
class Piece:
    """A word of a candidate sentence and where it came from."""

    word: str
    heard: tuple[int, ...]
    """Positions of the heard words it stands for; () for an inserted word."""
    change: str = ""
    """"" (as heard), "rewrite" (the same words spelled otherwise), "replace", "insert"."""


@dataclass(frozen=True, slots=True)
class Variant:
    """A candidate sentence on its way: its words, its cost, what was done."""

    pieces: tuple[Piece, ...]
    cost: float
    edits: tuple[str, ...]
    deleted: tuple[int, ...] = ()
    """Positions of heard words dropped."""


class Rewriter:
    """The heard sentence written the other ways a language allows, checked against the
    intents' vocabulary: contractions made or expanded, hyphens dropped, two words joined
    into a vocabulary word ("bed room" → "bedroom"), an unknown word split into two
    ("turnoff" → "turn off"). Numbers and negations are never joined or split."""

    def __init__(self, language: str, whole: Collection[str],
                 pairs: Collection[tuple[str, str]], known: Callable[[str], bool],
                 fixed: Callable[[str], bool]) -> None:
        self._contractions = contractions(language)
        self._contracted = contracted(language)
        self._whole = whole
        """Whole vocabulary words (not template fragments such as the "ed" of "lock[ed]")."""
        self._pairs = pairs
        """Word pairs the templates say."""
        self._known = known
        self._fixed = fixed

    def variants(self, heard: Sequence[str]) -> list[Variant]:
        """The heard words and their rewrites (up to `MAX_REWRITES`), cheapest first."""
        start = Variant(tuple(Piece(w, (i,)) for i, w in enumerate(heard)), 0.0, ())
        out = [start]
        frontier = [(start, 0)]
        for _ in range(MAX_REWRITES):
            nxt = []
            for variant, after in frontier:
                for more, position in self._rewrites(variant, after):
                    out.append(more)
                    nxt.append((more, position))
            frontier = nxt[:MAX_VARIANTS]
        return sorted(out, key=lambda v: v.cost)[:MAX_VARIANTS]

    def _rewrites(self, v: Variant, after: int) -> Iterator[tuple[Variant, int]]:
        """One rewrite of an untouched word at or after `after`; yields the variant and
        the position after the rewritten words."""
        ps = v.pieces
        for k in range(after, len(ps)):
            p = ps[k]
            if p.change:
                continue
            w = p.word

            def swap(new: Sequence[str], kind: str, span: int = 1,
                     *, k: int = k) -> tuple[Variant, int]:
                src = tuple(i for q in ps[k:k + span] for i in q.heard)
                old = " ".join(q.word for q in ps[k:k + span])
                pieces = (*ps[:k], *(Piece(x, src, "rewrite") for x in new), *ps[k + span:])
                return (Variant(pieces, v.cost + REWRITE_COST[kind],
                                (*v.edits, f"{kind} {old}→{' '.join(new)}"), v.deleted),
                        k + len(new))

            if "-" in w.strip("-") and not self._fixed(w) and not self._known(w):
                yield swap([w.replace("-", "")], "hyphen")
                yield swap([x for x in w.split("-") if x], "hyphen")
            for expanded in self._contractions.get(w, ()):
                yield swap(list(expanded), "contraction")
            nxt = ps[k + 1] if k + 1 < len(ps) and not ps[k + 1].change else None
            if nxt is not None:
                short = self._contracted.get((w, nxt.word))
                if short:
                    yield swap([short], "contraction", 2)
                joined = w + nxt.word
                if (joined in self._whole and not self._fixed(w) and not self._fixed(nxt.word)
                        and len(joined) >= 4):
                    yield swap([joined], "join", 2)
            short = self._contracted.get((w,))
            if short:
                yield swap([short], "contraction")
            if not self._known(w) and len(w) >= 4:
                for i in range(2, len(w) - 1):
                    a, b = w[:i], w[i:]
                    if (a in self._whole and b in self._whole
                            and ((a, b) in self._pairs or min(len(a), len(b)) >= 3)):
                        yield swap([a, b], "split")
