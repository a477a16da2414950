"""`voiced bench intents --noisy`: noisy text through the intents, with a held-out half.

A corpus of noisy sentences is generated from the intents' own sampled sentences (a fixed
seed), each with one kind of noise that a speech recognizer or a person produces:

- contraction: "what is" ↔ "what's", "I would" ↔ "I'd", a typographic apostrophe;
- split: a word written as two ("bedroom" → "bed room", "percent" → "per cent");
- join: two words written as one ("turn off" → "turnoff", "kilo watt" style units);
- sound: a word replaced by another that sounds alike: a near-homophone from the CMU
  dictionary (phones at most one edit apart) or a respelling by a misspelling model
  (English spelling alternations: ph/f, ee/ea, ck/k, doubled letters, a vowel or
  voicing swap);
- short: a word of at most four letters replaced by such a form that is not in the
  intents' vocabulary (the "misheard short word" of issue 13).

Numbers are never corrupted (the matcher never guesses them). Only sentences the exact
templates no longer match count. A sentence counts as recovered when the fuzzy path gives
the clean sentence's intent and slots, wrong when it gives anything else (an invented or
changed slot, another intent). Sentences of speaker-gated intents must stay unrecognized.

The intents are split in two halves by a seeded shuffle of their names: the tuning half
(looked at while choosing the matcher's costs) and the held-out half (not looked at);
both are reported. Everyday sentences (`chatter.txt`), clean and with the same noise
applied, measure false accepts.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("contraction", "split", "join", "sound", "short")
_SHORT_TWO = frozenset({"on", "in", "up", "of", "to", "at", "by", "no", "so", "go", "do",
                        "me", "my", "we", "he", "be", "an", "as", "is", "it", "or", "us"})
_RESPELL: list[tuple[str, str]] = [
    ("ph", "f"), ("f", "ph"), ("ck", "k"), ("c(?=[aou])", "k"), ("ee", "ea"), ("ea", "ee"),
    ("oo", "u"), ("ou", "ow"), ("ow", "ou"), ("ai", "ay"), ("ay", "ai"), ("igh", "i"),
    ("ight$", "ite"), ("wh", "w"), ("^kn", "n"), ("^wr", "r"), ("x", "ks"), ("qu", "kw"),
    ("tion", "shun"), ("er", "ur"), ("ur", "er"), ("ir", "ur"), ("y$", "ie"), ("ie$", "y"),
    ("s$", "z"), (r"([bdfglmnprst])\1", r"\1"), (r"([aeiou])([dgmnpt])$", r"\1\2\2"),
    ("e$", ""), ("a", "e"), ("e", "i"), ("i", "e"), ("o", "u"), ("u", "o"), ("t", "d"),
    ("d", "t"), ("p", "b"), ("b", "p"), ("k", "g"), ("g", "k"), ("v", "f"), ("th", "d"),
]
"""The misspelling model: spelling alternations of English, then vowel and voicing swaps
(a mishearing)."""


@dataclass(frozen=True, slots=True)
class Case:
    """One noisy sentence and what its clean original means."""

    clean: str
    noisy: str
    kind: str
    intent: str
    slots: Mapping[str, Any]
    half: str
    """"tune" or "held-out"."""
    gated: bool


def respell(word: str, rng: random.Random) -> str | None:
    """`word` respelled by one rule of the misspelling model (None: no rule changes it)."""
    options = []
    for pattern, repl in _RESPELL:
        for m in re.finditer(pattern, word):
            new = word[:m.start()] + m.expand(repl) + word[m.end():]
            if new != word and new.isalpha():
                options.append(new)
    return rng.choice(options) if options else None


class SoundsLike:
    """Near-homophones from the CMU dictionary: words whose phones are at most one edit
    (insert, delete, substitute any phone) from a word's."""

    def __init__(self) -> None:
        from voiced.intents.phonetic import SortedDictionary, cmudict

        self._words = cmudict()
        pairs = (self._words.entries() if isinstance(self._words, SortedDictionary)
                 else ((w, p) for w, prons in self._words.items() for p in prons))
        self._by_phones: dict[tuple[str, ...], list[str]] = {}
        phones: set[str] = set()
        for w, pron in pairs:
            phones.update(pron)
            if w.isalpha():
                self._by_phones.setdefault(pron, []).append(w)
        self._phones = sorted(phones)

    def near(self, word: str) -> list[str]:
        """Other spellings within one phone edit of `word` (sorted)."""
        found: set[str] = set()
        for pron in self._words.get(word, ()):
            for variant in self._edits(pron):
                found.update(self._by_phones.get(variant, ()))
        found.discard(word)
        return sorted(found)

    def _edits(self, pron: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield pron
        for i in range(len(pron) + 1):
            if i < len(pron) and len(pron) > 2:
                yield pron[:i] + pron[i + 1:]
            for p in self._phones:
                yield (*pron[:i], p, *pron[i:])
                if i < len(pron):
                    yield (*pron[:i], p, *pron[i + 1:])


class NoiseModel:
    """Applies one kind of noise to a sentence."""

    def __init__(self, vocabulary: set[str], numbers: set[str], sounds: SoundsLike,
                 language: str = "en") -> None:
        from voiced.intents.spelling import contracted, contractions

        self.vocabulary = vocabulary
        self.numbers = numbers
        self.sounds = sounds
        self._expand = contractions(language)
        self._contract = contracted(language)
        self._dictionary = sounds._words

    def apply(self, kind: str, sentence: str, rng: random.Random) -> str | None:
        """`sentence` with one `kind` of noise, or None where it does not apply."""
        words = sentence.split()
        spots = getattr(self, "_" + kind)(words, rng)
        if not spots:
            return None
        i, j, new = rng.choice(spots)
        return " ".join([*words[:i], *new, *words[j:]])

    def _is_number(self, word: str) -> bool:
        return word in self.numbers or any(c.isdigit() for c in word)

    def _contraction(self, words: list[str], rng: random.Random
                     ) -> list[tuple[int, int, list[str]]]:
        spots: list[tuple[int, int, list[str]]] = []
        for i, w in enumerate(words):
            if w in self._expand and "'" in w:
                spots.append((i, i + 1, list(rng.choice(self._expand[w]))))
                spots.append((i, i + 1, [w.replace("'", "\u2019")]))
            for n in (2, 1):
                short = self._contract.get(tuple(words[i:i + n]))
                if short and i + n <= len(words):
                    spots.append((i, i + n, [short]))
        return spots

    def _split(self, words: list[str], rng: random.Random) -> list[tuple[int, int, list[str]]]:
        spots = []
        for i, w in enumerate(words):
            if self._is_number(w) or len(w) < 5:
                continue
            for k in range(2, len(w) - 1):
                a, b = w[:k], w[k:]
                if all(self._real(x) for x in (a, b)):
                    spots.append((i, i + 1, [a, b]))
        return spots

    def _real(self, word: str) -> bool:
        return (word in _SHORT_TWO or len(word) >= 3) and word in self._dictionary

    def _join(self, words: list[str], rng: random.Random) -> list[tuple[int, int, list[str]]]:
        return [(i, i + 2, [words[i] + words[i + 1]]) for i in range(len(words) - 1)
                if not self._is_number(words[i]) and not self._is_number(words[i + 1])
                and words[i].isalpha() and words[i + 1].isalpha()]

    def _sound(self, words: list[str], rng: random.Random,
               short: bool = False) -> list[tuple[int, int, list[str]]]:
        spots = []
        for i, w in enumerate(words):
            if self._is_number(w) or not w.isalpha() or (len(w) > 4 if short else len(w) < 3):
                continue
            near = [x for x in self.sounds.near(w) if not self._is_number(x)]
            spelled = respell(w, rng)
            options = [*([rng.choice(near)] if near else []), *([spelled] if spelled else [])]
            if short:
                options = [o for o in options if o not in self.vocabulary]
            for o in options:
                if o != w:
                    spots.append((i, i + 1, [o]))
        return spots

    def _short(self, words: list[str], rng: random.Random) -> list[tuple[int, int, list[str]]]:
        return self._sound(words, rng, short=True)


def halves(intents: Sequence[str], seed: int) -> dict[str, str]:
    """Intent name → "tune" or "held-out" (a seeded shuffle, half each)."""
    names = sorted(intents)
    random.Random(seed).shuffle(names)
    return {n: ("tune" if i < len(names) // 2 else "held-out") for i, n in enumerate(names)}


def make_cases(exact: Sequence[tuple[str, str, Mapping[str, Any]]], noise: NoiseModel,
               still_exact: Callable[[str], bool], half_of: Mapping[str, str],
               gated: frozenset[str], per_kind: int, seed: int) -> list[Case]:
    """Up to `per_kind` cases of each kind in each half, from (sentence, intent, slots)
    triples; a noisy sentence that the templates still match is not a case."""
    rng = random.Random(seed)
    cases: list[Case] = []
    for kind in KINDS:
        counts = {"tune": 0, "held-out": 0}
        order = list(exact)
        rng.shuffle(order)
        for sentence, intent, slots in order:
            half = half_of[intent]
            if counts[half] >= per_kind:
                if all(c >= per_kind for c in counts.values()):
                    break
                continue
            noisy = noise.apply(kind, sentence, rng)
            if noisy is None or noisy == sentence or still_exact(noisy):
                continue
            counts[half] += 1
            cases.append(Case(sentence, noisy, kind, intent, slots, half, intent in gated))
    return cases


def score(cases: Sequence[Case], recognize: Callable[[str], Any]) -> dict[str, Any]:
    """Recovered / wrong / missed per half and kind, gated guesses, and time per case."""
    table: dict[str, dict[str, list[int]]] = {}
    times: list[float] = []
    cpu: list[float] = []
    gated = [0, 0]
    wrong: list[str] = []
    for case in cases:
        t, c = time.perf_counter(), time.thread_time()
        got = recognize(case.noisy)
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.thread_time() - c) * 1000)
        if case.gated:
            gated[0] += got.name is not None
            gated[1] += 1
            continue
        row = table.setdefault(case.half, {}).setdefault(case.kind, [0, 0, 0])
        ok = got.name == case.intent and got.slot_values() == dict(case.slots)
        row[0] += 1
        row[1] += ok
        row[2] += got.name is not None and not ok
        if got.name is not None and not ok:
            wrong.append(f"{case.noisy!r} → {got.name} {got.slot_values()} "
                         f"(said: {case.clean!r})")
    out: dict[str, Any] = {}
    for half, kinds in sorted(table.items()):
        total = [sum(v[k] for v in kinds.values()) for k in range(3)]
        out[half] = {"by_kind": {k: {"n": v[0], "recovered": v[1], "wrong": v[2]}
                                 for k, v in sorted(kinds.items(), key=lambda kv:
                                                    KINDS.index(kv[0]))},
                     "n": total[0], "recovered": total[1], "wrong": total[2],
                     "recovery_rate": round(total[1] / total[0], 3) if total[0] else None}
    out["gated_guessed"] = f"{gated[0]}/{gated[1]}"
    out["time_ms"] = _spread(times)
    # CPU time of the recognizing thread: what a sentence costs whatever else the machine
    # is doing (wall-clock time grows with the load of a shared machine)
    out["cpu_ms"] = _spread(cpu)
    out["wrong_examples"] = wrong[:12]
    return out


def noisy_chatter(chatter: Sequence[str], noise: NoiseModel, seed: int) -> list[str]:
    """Every chatter sentence with each kind of noise that applies to it (one each)."""
    rng = random.Random(seed)
    out = []
    for sentence in chatter:
        for kind in KINDS:
            noisy = noise.apply(kind, sentence, rng)
            if noisy is not None and noisy != sentence:
                out.append(noisy)
    return out


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]

    return {"p50": round(pct(50), 2), "p95": round(pct(95), 2), "max": round(ordered[-1], 2)}


def corpus(recognizer: Any, plain: Any, context: Mapping[str, Any], noise_seed: int,
           per_intent: int, per_kind: int, language: str) -> list[Case]:
    """Noisy cases from `recognizer`'s sampled sentences that `plain` (no fuzzy) matches."""
    from hassil.sample import sample_intents

    from voiced.intents.fuzzy import number_words

    exact: list[tuple[str, str, Mapping[str, Any]]] = []
    seen: set[str] = set()
    for _, sentence in sample_intents(recognizer.intents, max_sentences_per_intent=per_intent,
                                      language=language):
        sentence = " ".join(sentence.lower().split())
        if sentence in seen:
            continue
        seen.add(sentence)
        result = plain.recognize(sentence, context)
        if result.recognized:
            exact.append((sentence, result.name, result.slot_values()))
    vocabulary = recognizer.vocabulary() | {w for s, _, _ in exact for w in s.split()}
    noise = NoiseModel(vocabulary, number_words(language), SoundsLike(), language)
    return make_cases(exact, noise, lambda s: plain.recognize(s, context).recognized,
                      halves(recognizer.intent_names(), noise_seed), recognizer.gated,
                      per_kind, noise_seed)


def bench_noisy(language: str = "en", seed: int = 1, per_kind: int = 40,
                per_intent: int = 60) -> dict[str, Any]:
    """Run the noisy-text benchmark on the official sentences and the example intents."""
    from importlib import resources
    from pathlib import Path

    from voiced.bench.intents import generated_home
    from voiced.intents.fuzzy import number_words
    from voiced.intents.recognizer import IntentRecognizer
    from voiced.intents.sources import official_intents

    areas, entities = generated_home()
    doc = official_intents(language, areas, entities, zones=["home", "work", "school"])
    sets: dict[str, tuple[Any, dict[str, Any]]] = {
        "official": (IntentRecognizer.load([], language, extra=[doc]), {})}
    examples = Path(__file__).resolve().parents[2] / "config" / "intents"
    if examples.is_dir() and language == "en":
        sets["examples"] = (IntentRecognizer.load([examples], language), {"speaker": "alice"})
    chatter = [c.strip() for c in (resources.files("voiced.bench") / "chatter.txt")
               .read_text().splitlines() if c.strip()]
    out: dict[str, Any] = {"seed": seed, "per_kind": per_kind}
    for name, (recognizer, context) in sets.items():
        plain = IntentRecognizer(recognizer.intents, language, fuzzy=False)
        cases = corpus(recognizer, plain, context, seed, per_intent, per_kind, language)
        def recognize(text: str, r: Any = recognizer, c: Any = context) -> Any:
            return r.recognize(text, c)

        scored = score(cases, recognize)
        noise = NoiseModel(recognizer.vocabulary(), number_words(language), SoundsLike(),
                           language)
        noisy = noisy_chatter(chatter, noise, seed)
        scored["chatter_false_accepts"] = sum(
            recognizer.recognize(s, {}).recognized for s in chatter)
        accepted = [s for s in noisy if recognizer.recognize(s, {}).recognized]
        scored["noisy_chatter"] = {"n": len(noisy), "false_accepts": len(accepted),
                                   "accepted": accepted[:10]}
        scored["gave_up"] = recognizer.fuzzy_gave_up
        out[name] = scored
    return out


def print_report(result: Mapping[str, Any]) -> None:
    """The figures of `bench_noisy` as text."""
    print(f"noisy text (seed {result['seed']}, up to {result['per_kind']} per kind and half)")
    for name, scored in result.items():
        if not isinstance(scored, dict):
            continue
        print(f"== {name}")
        for half in ("tune", "held-out"):
            h = scored.get(half)
            if not h:
                continue
            kinds = ", ".join(f"{k} {v['recovered']}/{v['n']}" + (f" ({v['wrong']} wrong)"
                                                                  if v["wrong"] else "")
                              for k, v in h["by_kind"].items())
            print(f"  {half:8}: recovered {h['recovered']}/{h['n']} ({h['recovery_rate']:.1%}),"
                  f" wrong {h['wrong']}; {kinds}")
        t, c = scored["time_ms"], scored["cpu_ms"]
        print(f"  gated guessed: {scored['gated_guessed']}; per sentence: CPU p50 {c['p50']} "
              f"p95 {c['p95']} max {c['max']} ms, wall p50 {t['p50']} p95 {t['p95']} max "
              f"{t['max']} ms; gave up {scored['gave_up']}")
        nc = scored["noisy_chatter"]
        print(f"  chatter false accepts: {scored['chatter_false_accepts']}; noisy chatter "
              f"{nc['false_accepts']}/{nc['n']} {nc['accepted']}")
        for line in scored["wrong_examples"]:
            print(f"    wrong: {line}")
