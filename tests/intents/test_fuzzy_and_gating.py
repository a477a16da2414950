"""The fuzzy fallback (its time budget and template index) and speaker gating, on the
example intents and Home Assistant's official sentences (real hassil)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hassil.recognize import RecognizeResult

from voiced.errors import IntentError
from voiced.intents.fuzzy import Correction, FuzzyMatcher, best_correction, search_corrections
from voiced.intents.recognizer import IntentRecognizer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recognizer() -> IntentRecognizer:
    return IntentRecognizer.load([REPO / "config" / "intents"])


@pytest.mark.parametrize("heard, intent, slots", [
    ("turn on the kitten lights", "HassTurnOn", {"area": "kitchen"}),    # misheard word
    ("turn of the bedroom lights", "HassTurnOff", {"area": "bedroom"}),  # misheard word
    ("turn on the the office lights", "HassTurnOn", {"area": "office"}),  # inserted word
    ("set the garage lights to fifty", "HassLightSet", {"brightness": 50}),  # dropped word
])
def test_one_word_errors_are_recovered(recognizer: IntentRecognizer, heard: str, intent: str,
                                       slots: dict[str, object]) -> None:
    result = recognizer.recognize(heard, {"site": "k", "speaker": "unknown"})
    assert result.name == intent, heard
    assert result.matched_by == "fuzzy"
    assert 0.6 <= result.confidence < 1.0
    assert {k: result.slot_values()[k] for k in slots} == slots


@pytest.mark.parametrize("chatter", [
    "what is the capital of france", "the weather was lovely yesterday afternoon",
    "did you feed the cat", "turn around", "i love you",
])
def test_out_of_domain_stays_unrecognized(recognizer: IntentRecognizer, chatter: str) -> None:
    assert recognizer.recognize(chatter, {"speaker": "unknown"}).name is None


def test_speaker_gating_refuses_and_never_guesses(recognizer: IntentRecognizer) -> None:
    allowed = recognizer.recognize("unlock the front door", {"speaker": "alice"})
    assert allowed.name == "UnlockDoor" and allowed.slot_values() == {"door": "front"}
    refused = recognizer.recognize("unlock the front door", {"speaker": "unknown"})
    assert refused.name is None and refused.refused_intent == "UnlockDoor"
    # a misheard gated command is never turned into a guess, for anyone
    for speaker in ("alice", "unknown"):
        guess = recognizer.recognize("unlok the front door", {"speaker": speaker})
        assert guess.name is None, speaker
    assert "UnlockDoor" in recognizer.gated


def test_slot_offsets_point_at_the_raw_value(recognizer: IntentRecognizer) -> None:
    text = "set the living room lights to seventy percent"
    result = recognizer.recognize(text, {})
    assert result.name == "HassLightSet"
    values = {s.name: s for s in result.slots}
    assert values["area"].value == "living_room"
    assert text[values["area"].start:values["area"].end] == "living room"
    assert values["brightness"].value == 70
    assert text[values["brightness"].start:values["brightness"].end] == "seventy"


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("language: en\nintents:\n  Foo:\n    data:\n      - sentences: [\n")
    with pytest.raises(IntentError) as info:
        IntentRecognizer.load([bad])
    assert f"{bad}:6" in info.value.message or f"{bad}:5" in info.value.message
    template = tmp_path / "template.yaml"
    template.write_text("language: en\nintents:\n  Foo:\n    data:\n      - sentences:\n"
                        "          - \"turn (on | off\"\n")
    with pytest.raises(IntentError) as info:
        IntentRecognizer.load([template])
    assert f"{template}:6:" in info.value.message
    with pytest.raises(IntentError, match="no such intent file"):
        IntentRecognizer.load([tmp_path / "missing.yaml"])


def test_candidates_are_only_known_words() -> None:
    matcher = FuzzyMatcher(["turn", "on", "the", "kitchen", "lights"], ["the"])
    assert list(matcher.candidates("what is the capital of france")) == []
    fixed = best_correction(matcher, "turn on the kitchn lights",
                            lambda c: c.text == "turn on the kitchen lights")
    assert fixed is not None and fixed.edit == "replace kitchn→kitchen"


def test_site_area_fills_the_room_and_is_never_guessed(recognizer: IntentRecognizer) -> None:
    here = recognizer.recognize("turn on the lights", {"area": "kitchen", "speaker": "unknown"})
    assert here.name == "HassTurnOn" and here.slot_values()["area"] == "kitchen"
    # a site without an area: not understood, not refused, and no room made up
    nowhere = recognizer.recognize("turn on the lights", {"speaker": "unknown"})
    assert nowhere.name is None and nowhere.refused_intent is None


# ---- the time budget, and the template index that keeps the search fast ----------------

LONG_CHATTER = ("turn on the light in the kitchen and set the temperature of the living room "
                "to twenty degrees")
"""18 words, every one in the official sentences' vocabulary: no template matches it, and
one-word edits of it give over 400 candidates (about 3 s of matching without the index)."""


@pytest.fixture(scope="module")
def official() -> dict[str, object]:
    from voiced.bench.intents import generated_home
    from voiced.intents.sources import official_intents

    areas, entities = generated_home(10, 40)
    return official_intents("en", areas, entities, zones=["home", "work", "school"])


def test_fuzzy_budget_gives_up_and_says_so(official: dict[str, object],
                                           caplog: pytest.LogCaptureFixture) -> None:
    tiny = IntentRecognizer.load([], "en", extra=[official], fuzzy_budget_ms=0.001)
    assert len(LONG_CHATTER.split()) == 18
    with caplog.at_level(logging.INFO, logger="voiced.intents.recognizer"):
        result = tiny.recognize(LONG_CHATTER, {})
    assert result.name is None
    assert tiny.fuzzy_gave_up == 1
    assert "fuzzy: gave up on" in caplog.text
    # a sentence the templates match exactly never reaches the fuzzy search
    assert tiny.recognize("turn on the kitchen lamp", {}).name == "HassTurnOn"
    assert tiny.fuzzy_gave_up == 1


def test_default_budget_recovers_with_official_sentences(official: dict[str, object]) -> None:
    recognizer = IntentRecognizer.load([], "en", extra=[official])
    assert recognizer.fuzzy_budget_s == 0.15
    for heard, want in [("turn on the kitchen lamb", "turn on the kitchen lamp"),
                        ("turn on the uh kitchen lamp", "turn on the kitchen lamp")]:
        result = recognizer.recognize(heard, {})
        assert (result.name, result.matched_by, result.text) == ("HassTurnOn", "fuzzy", want)
        assert result.slot_values()["area"] == "kitchen"
    assert recognizer.recognize(LONG_CHATTER, {}).name is None


def test_search_stops_at_the_budget() -> None:
    """A clock that advances 10 ms per reading: a 45 ms budget lets a few candidates
    through, then the search stops and reports it; without a budget all are tried."""
    matcher = FuzzyMatcher(["turn", "on", "the", "kitchen", "lights", "office"], ["the"])
    ticks = iter(range(1000))
    tried: list[str] = []

    def accept(correction: Correction) -> bool:
        tried.append(correction.text)
        return False

    search = search_corrections(matcher, "turn on the the kitchen lights", accept,
                                budget_s=0.045, clock=lambda: next(ticks) / 100)
    assert search.gave_up and search.correction is None
    assert 1 <= search.tried == len(tried) < 5
    everything = search_corrections(matcher, "turn on the the kitchen lights", accept)
    assert not everything.gave_up and everything.tried > search.tried


def _wildcard_free(result: RecognizeResult | None) -> tuple[str, dict[str, object]] | None:
    if result is None or any(e.is_wildcard for e in result.entities_list):
        return None
    return result.intent.name, {e.name: e.value for e in result.entities_list}


@pytest.mark.parametrize("source", ["examples", "official"])
def test_template_index_never_changes_a_match(source: str, official: dict[str, object],
                                              recognizer: IntentRecognizer) -> None:
    """Every one-edit candidate of corrupted sentences (and of chatter): hassil on the
    narrowed intents finds the same wildcard-free best match as on all of them."""
    import random

    from hassil import recognize_best
    from hassil.sample import sample_intents

    from voiced.bench.intents import corrupt
    from voiced.intents.template_index import TemplateIndex

    target = recognizer if source == "examples" else IntentRecognizer.load(
        [], "en", extra=[official], fuzzy=False)
    index = TemplateIndex(target.intents)
    rng = random.Random(7)
    pool = [" ".join(s.split()) for _, s in sample_intents(
        target.intents, max_sentences_per_intent=5, language="en")]
    rng.shuffle(pool)
    vocabulary = sorted(target.vocabulary())
    matcher = FuzzyMatcher(vocabulary, vocabulary[:20], 0.0)
    texts = [corrupt(s, vocabulary, rng)[0] for s in pool[:25]] + [LONG_CHATTER]
    candidates = {c.text for t in texts for c in matcher.candidates(t)} | set(pool[:25])
    matched = 0
    for text in sorted(candidates):
        narrowed = index.narrowed(text)
        want = _wildcard_free(recognize_best(text, target.intents, language="en"))
        got = _wildcard_free(recognize_best(text, narrowed, language="en")
                             if narrowed is not None else None)
        assert got == want, text
        matched += want is not None
    assert len(candidates) > 500 and matched >= 25  # the check saw real matches too
