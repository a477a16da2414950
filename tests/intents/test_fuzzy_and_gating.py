"""The fuzzy fallback and speaker gating, on the example intents (real hassil)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voiced.errors import IntentError
from voiced.intents.fuzzy import FuzzyMatcher, best_correction
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
                            lambda s: s == "turn on the kitchen lights")
    assert fixed is not None and fixed.edit == "replace kitchn→kitchen"


def test_site_area_fills_the_room_and_is_never_guessed(recognizer: IntentRecognizer) -> None:
    here = recognizer.recognize("turn on the lights", {"area": "kitchen", "speaker": "unknown"})
    assert here.name == "HassTurnOn" and here.slot_values()["area"] == "kitchen"
    # a site without an area: not understood, not refused, and no room made up
    nowhere = recognizer.recognize("turn on the lights", {"speaker": "unknown"})
    assert nowhere.name is None and nowhere.refused_intent is None
