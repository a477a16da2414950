"""The corpus of `voiced bench accuracy`: voices, sentences, the held-out split, the trials.

* Voices: every English espeak-ng voice (three rate/pitch renderings each), every espeak-ng
  variant (on a base voice by turns), every flite and festival voice (three rates each),
  as installed on this machine. MBROLA voices need data files that are not installed and
  flite's awb_time speaks only times: both are left out.
* Commands: random walks through the loaded intents' templates (alternatives, optional
  words, list values, numbers anywhere in their ranges spelled as words, now and then a
  skip word before it); what each should mean is what the intent recognizer makes of the text.
* Everyday sentences (`everyday.txt`): speech near a satellite that is not a command;
  those the intents match exactly are left out.

The split: a seed-keyed hash holds out `fraction` of the people of each voice family and
`fraction` of the sentences. Held-out voices speak only held-out sentences, training
voices only training sentences, so tuning on the training split sees neither. The split
does not depend on the size of the run: a quick run uses a subset of a full run's trials.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import shutil
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voiced.speakers.voices import ESPEAK_WPM, Voice

if TYPE_CHECKING:
    from hassil import Intents
    from hassil.expression import Expression

    from voiced.intents.recognizer import IntentRecognizer

log = logging.getLogger(__name__)

FAMILIES = ("espeak-ng", "espeak-variant", "flite", "festival")
TRAINING, HELD_OUT = "training", "held_out"
SPLITS = (TRAINING, HELD_OUT)
ESPEAK_RENDERINGS = ((1.0, None), (0.8, 35), (1.2, 65))
"""(rate, pitch) of each espeak-ng base voice: as installed, slower and lower, faster
and higher."""
RECORDED_RATES = (1.0, 0.85, 1.2)
"""Speaking rates of the flite and festival voices."""
DRAWS_PER_TEMPLATE = 40
SKIP_WORD_CHANCE = 0.1
BABBLE_POOL = 10
"""Utterances per split that babble and tv noise are made of."""
PRIMING_TEXT = "good morning, it is a lovely day for a walk by the river"
"""Said once per voice and condition before the trials (see `voiced.bench.accuracy`)."""


@dataclass(frozen=True, slots=True)
class BenchVoice:
    """A voice of the benchmark."""

    voice: Voice
    family: str

    @property
    def id(self) -> str:
        """Stable id, e.g. "flite-awb@0.85x"."""
        return self.voice.id


@dataclass(frozen=True, slots=True)
class Sentence:
    """Something to say, and what it should do."""

    text: str
    intent: str | None = None
    """The intent it should become (None: everyday speech, no command)."""
    slots: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """"command" or "everyday"."""
        return "everyday" if self.intent is None else "command"


@dataclass(frozen=True, slots=True)
class Trial:
    """One sentence, one voice, one condition."""

    voice: BenchVoice
    sentence: Sentence
    condition: str
    split: str


def unit_hash(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by `seed` and `key`."""
    digest = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# ---- voices --------------------------------------------------------------------------
def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return ""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def espeak_bases() -> list[str]:
    """English espeak-ng voices (language codes), MBROLA ones left out."""
    found = []
    for line in _run(["espeak-ng", "--voices=en"]).splitlines()[1:]:
        cols = line.split()
        if (len(cols) >= 5 and cols[1].startswith("en") and not cols[4].startswith("mb/")
                and cols[1] not in found):
            found.append(cols[1])
    return found


def espeak_variants() -> list[str]:
    """espeak-ng's voice variants (`en-us+NAME`)."""
    names = []
    for line in _run(["espeak-ng", "--voices=variant"]).splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[4].startswith("!v/"):
            names.append(cols[4][3:])
    return sorted(set(names), key=str.lower)


def flite_voices() -> list[str]:
    """flite's built-in voices but the time-only awb_time."""
    text = _run(["flite", "-lv"])
    names = text.split(":", 1)[1].split() if ":" in text else []
    return [n for n in names if n != "awb_time"]


def festival_voices() -> list[str]:
    """Installed festival diphone voices (kal, ked)."""
    if shutil.which("text2wave") is None:
        return []
    root = Path("/usr/share/festival/voices")
    return sorted(p.name.removesuffix("_diphone") for p in root.glob("*/*_diphone"))


def installed_voices() -> list[BenchVoice]:
    """Every voice of every family this machine can speak with."""
    out: list[BenchVoice] = []
    bases = espeak_bases()
    for base in bases:
        for rate, pitch in ESPEAK_RENDERINGS:
            tag = "" if rate == 1.0 else f"@{round(ESPEAK_WPM * rate)}wpm-p{pitch}"
            out.append(BenchVoice(Voice(f"espeak-{base}{tag}", "espeak", base,
                                        f"espeak-{base}", rate, pitch), "espeak-ng"))
    for i, variant in enumerate(espeak_variants() if bases else []):
        name = f"{bases[i % len(bases)]}+{variant}"
        out.append(BenchVoice(Voice(f"espeak-{name}", "espeak", name, f"espeak-{name}"),
                              "espeak-variant"))
    for synth, family, names in (("flite", "flite", flite_voices()),
                                 ("festival", "festival", festival_voices())):
        for name in names:
            for rate in RECORDED_RATES:
                tag = "" if rate == 1.0 else f"@{rate:g}x"
                out.append(BenchVoice(Voice(f"{synth}-{name}{tag}", synth, name,  # type: ignore[arg-type]
                                            f"{synth}-{name}", rate), family))
    return out


def split_voices(voices: Sequence[BenchVoice], seed: int, fraction: float) -> dict[str, str]:
    """voice id → split: per family, `fraction` of its people (at least one of two or
    more) are held out with every rendering of their voice."""
    out: dict[str, str] = {}
    for family in FAMILIES:
        people = sorted({v.voice.person for v in voices if v.family == family},
                        key=lambda p: unit_hash(seed, f"voice|{p}"))
        n = len(people)
        held = 0 if n < 2 else min(n - 1, max(1, round(fraction * n)))
        out.update({v.id: HELD_OUT if v.voice.person in people[:held] else TRAINING
                    for v in voices if v.family == family})
    return out


def sentence_split(text: str, seed: int, fraction: float) -> str:
    """The split a sentence belongs to."""
    return HELD_OUT if unit_hash(seed, f"sentence|{text}") < fraction else TRAINING


def pick_voices(voices: Sequence[BenchVoice], splits: Mapping[str, str], per_family: int | None,
                seed: int, fraction: float) -> list[BenchVoice]:
    """`per_family` voices of each family (None: all), both splits in proportion."""
    if per_family is None:
        return list(voices)
    chosen = []
    held = min(per_family - 1, max(1, round(fraction * per_family))) if per_family > 1 else 0
    for family in FAMILIES:
        ordered = sorted((v for v in voices if v.family == family),
                         key=lambda v: unit_hash(seed, f"pick|{v.id}"))
        held_out = [v for v in ordered if splits[v.id] == HELD_OUT]
        train = [v for v in ordered if splits[v.id] == TRAINING][:per_family - held]
        chosen += train + held_out[:per_family - len(train)]  # fewer training: more held out
    return chosen


# ---- sentences -----------------------------------------------------------------------
def _number_words(number: int | float, language: str) -> str:
    from hassil.numbers import get_rbnf_engine

    texts = get_rbnf_engine(language).format_number(number).text_by_ruleset
    text = texts.get("spellout-cardinal") or next(iter(texts.values()))
    return text.replace("-", " ")


def _say(expr: Expression, lists: Mapping[str, Any], rules: Mapping[str, Any],
         rng: random.Random, language: str, depth: int = 0) -> str | None:
    """One random way of saying `expr` (None: it needs a wildcard or a missing piece)."""
    from hassil import RangeSlotList, TextSlotList
    from hassil.expression import (
        Alternative,
        ListReference,
        Permutation,
        RuleReference,
        TextChunk,
    )
    from hassil.expression import Sequence as Concatenation

    if depth > 40:
        return None
    if isinstance(expr, TextChunk):
        return expr.original_text or expr.text or ""
    if isinstance(expr, Alternative):
        return _say(rng.choice(expr.items), lists, rules, rng, language, depth + 1)
    if isinstance(expr, Concatenation | Permutation):
        items = list(expr.items)
        if isinstance(expr, Permutation):
            rng.shuffle(items)
        parts = [_say(i, lists, rules, rng, language, depth + 1) for i in items]
        if any(p is None for p in parts):
            return None
        return (" " if isinstance(expr, Permutation) else "").join(p or "" for p in parts)
    if isinstance(expr, RuleReference):
        rule = rules.get(expr.rule_name)
        return None if rule is None else _say(rule.expression, lists, rules, rng, language,
                                              depth + 1)
    if isinstance(expr, ListReference):
        slot_list = lists.get(expr.list_name)
        if isinstance(slot_list, TextSlotList) and slot_list.values:
            value = rng.choice(slot_list.values)
            return _say(value.text_in, lists, rules, rng, language, depth + 1)
        if isinstance(slot_list, RangeSlotList):
            number = rng.choice(list(slot_list.get_numbers()))
            if float(number).is_integer():
                number = int(number)
            return _number_words(number, slot_list.words_language or language) \
                if slot_list.words else str(number)
    return None


def _truth(plain: IntentRecognizer, text: str, context: Mapping[str, Any]) -> Sentence | None:
    result = plain.recognize(text, context)
    if result.name is None:
        return None
    return Sentence(text, result.name, result.slot_values())


def sample_commands(recognizer: IntentRecognizer, context: Mapping[str, Any],
                    seed: int, exclude: Collection[str] = ()) -> list[Sentence]:
    """Commands sampled from every template of the main language's intents (but those in
    `exclude`), each with the intent and slots the recognizer gives its text in `context`
    (templates the context does not allow are left out)."""
    from voiced.intents.recognizer import IntentRecognizer

    intents: Intents = recognizer.intents
    plain = IntentRecognizer(intents, recognizer.language, fuzzy=False)
    rng = random.Random(f"{seed}|commands")
    skip = [w for w in intents.skip_words if w.strip()]
    seen: dict[str, Sentence | None] = {}
    for name in sorted(set(intents.intents) - set(exclude)):
        for data in intents.intents[name].data:
            lists = {**intents.slot_lists, **data.slot_lists}
            rules = {**intents.expansion_rules, **data.expansion_rules}
            for template in data.sentences:
                for _ in range(DRAWS_PER_TEMPLATE):
                    said = _say(template.expression, lists, rules, rng, recognizer.language)
                    if said is None:
                        break
                    if skip and rng.random() < SKIP_WORD_CHANCE:
                        said = f"{rng.choice(skip)} {said}"  # "hey ..., "please ..."
                    text = " ".join(said.lower().split())
                    if text not in seen:
                        seen[text] = _truth(plain, text, context)
    return sorted((s for s in seen.values() if s is not None and s.intent not in exclude),
                  key=lambda s: s.text)


def everyday_sentences(recognizer: IntentRecognizer, context: Mapping[str, Any],
                       path: Path | None = None) -> list[Sentence]:
    """The everyday sentences (`everyday.txt` or `path`) that no template matches."""
    from voiced.intents.recognizer import IntentRecognizer

    text = path.read_text(encoding="utf-8") if path else \
        (resources.files("voiced.bench") / "everyday.txt").read_text(encoding="utf-8")
    plain = IntentRecognizer(recognizer.intents, recognizer.language, fuzzy=False)
    out, skipped = [], []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line or line.startswith("#"):
            continue
        if plain.recognize(line, context).name is not None:
            skipped.append(line)
        elif line not in out:
            out.append(line)
    if skipped:
        log.warning("everyday sentences that are commands here, left out: %s",
                    "; ".join(skipped))
    return [Sentence(s) for s in out]


def _commands_for(pool: Sequence[Sentence], n: int, rng: random.Random) -> list[Sentence]:
    """`n` commands, intents taken in turns (the first n of n+1 are the same)."""
    by_intent: dict[str, list[Sentence]] = {}
    for s in pool:
        by_intent.setdefault(s.intent or "", []).append(s)
    order = sorted(by_intent)
    rng.shuffle(order)
    chosen: list[Sentence] = []
    turn = 0
    while len(chosen) < min(n, len(pool)):
        options = [s for s in by_intent[order[turn % len(order)]] if s not in chosen]
        turn += 1
        if options:
            chosen.append(rng.choice(options))
    return chosen


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run will say, by whom and how."""

    trials: list[Trial]
    voices: list[BenchVoice]
    splits: dict[str, str]
    """voice id → split, for every installed voice."""
    commands: dict[str, int]
    """Command sentences in each split's pool."""
    everyday: dict[str, int]
    babble: dict[str, list[tuple[BenchVoice, str]]]
    """Per split, the (voice, text) utterances babble and tv noise are made of."""


def plan(voices: Sequence[BenchVoice], commands: Sequence[Sentence],
         everyday: Sequence[Sentence], conditions: Sequence[str], *, seed: int,
         fraction: float, per_family: int | None, n_commands: int, n_everyday: int,
         limit: int | None = None) -> Plan:
    """The trials: each chosen voice says its split's sentences in every condition."""
    splits = split_voices(voices, seed, fraction)
    pools: dict[str, dict[str, list[Sentence]]] = {s: {"command": [], "everyday": []}
                                                   for s in SPLITS}
    for sentence in (*commands, *everyday):
        pools[sentence_split(sentence.text, seed, fraction)][sentence.kind].append(sentence)
    trials = []
    chosen = pick_voices(voices, splits, per_family, seed, fraction)
    for voice in chosen:
        split = splits[voice.id]
        said = _commands_for(pools[split]["command"], n_commands,
                             random.Random(f"{seed}|commands|{voice.id}"))
        chatter = list(pools[split]["everyday"])
        random.Random(f"{seed}|everyday|{voice.id}").shuffle(chatter)
        said += chatter[:n_everyday]
        trials += [Trial(voice, s, c, split) for c in conditions for s in said]
    if limit is not None and limit < len(trials):
        keep = sorted(range(len(trials)),
                      key=lambda i: unit_hash(seed, f"limit|{i}"))[:limit]
        trials = [trials[i] for i in sorted(keep)]
    babble = {}
    for split in SPLITS:
        rng = random.Random(f"{seed}|babble|{split}")
        talkers = [v for v in voices if splits[v.id] == split and v.voice.rate == 1.0]
        texts = [s.text for s in pools[split]["everyday"]]
        babble[split] = [(rng.choice(talkers), rng.choice(texts))
                         for _ in range(BABBLE_POOL)] if talkers and texts else []
    return Plan(trials, chosen, splits,
                {s: len(pools[s]["command"]) for s in SPLITS},
                {s: len(pools[s]["everyday"]) for s in SPLITS}, babble)


def slug(text: str) -> str:
    """A short file-name-safe form of `text`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]
