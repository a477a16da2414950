"""IntentRecognizer: loading and merging, errors with file:line, slots and offsets, number
words, context gating and introspection (real hassil, inline YAML and the examples)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from voiced.errors import IntentError
from voiced.intents.recognizer import IntentRecognizer
from voiced.watch import snapshot

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "config" / "intents"
MANIFEST = yaml.safe_load((REPO / "tests" / "fixtures" / "commands.yaml").read_text())

BASE = """\
language: en
intents:
  HassTurnOn:
    data:
      - sentences:
          - "turn on [the] {area} light[s]"
        slots:
          domain: light
lists:
  area:
    values:
      - kitchen
      - in: living room
        out: living_room
"""
EXTRA = """\
language: en
intents:
  HassTurnOn:
    data:
      - sentences:
          - "{area:room} lights on"
  SetVolume:
    data:
      - sentences:
          - "volume {volume}"
lists:
  area:
    values:
      - garage
      - in: living room
        out: living_room
  volume:
    range:
      from: 0
      to: 10
skip_words:
  - please
"""


@pytest.fixture(scope="module")
def examples() -> IntentRecognizer:
    return IntentRecognizer.load([EXAMPLES], fuzzy=False)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_folder_loads_sorted_and_merges_like_home_assistant(tmp_path: Path) -> None:
    _write(tmp_path, "b_extra.yml", EXTRA)
    _write(tmp_path, "a_base.yaml", BASE)
    _write(tmp_path, "notes.txt", "not an intents file")
    recognizer = IntentRecognizer.load([tmp_path], fuzzy=False)
    assert [p.name for p in recognizer.files] == ["a_base.yaml", "b_extra.yml"]
    assert recognizer.intent_names() == ["HassTurnOn", "SetVolume"]
    # data blocks accumulate; the later file's list replaces the earlier one
    assert recognizer.recognize("garage lights on").name == "HassTurnOn"
    assert recognizer.recognize("turn on the kitchen lights").name is None
    assert recognizer.recognize("turn on the garage light").slot_values() == {
        "area": "garage", "domain": "light"}
    assert recognizer.recognize("please volume seven please").slot_values() == {"volume": 7}


def test_files_and_folders_mix(tmp_path: Path) -> None:
    base = _write(tmp_path, "base.yaml", BASE)
    (tmp_path / "more").mkdir()
    _write(tmp_path / "more", "extra.yaml", EXTRA)
    recognizer = IntentRecognizer.load([base, tmp_path / "more"], fuzzy=False)
    assert recognizer.files == (base, tmp_path / "more" / "extra.yaml")


@pytest.mark.parametrize("text, line, reason", [
    ("language: en\nintents:\n  Foo:\n    data:\n      - sentences: [\n", 6, "YAML syntax"),
    ('language: en\nintents:\n  Foo:\n    data:\n      - sentences:\n          - "a"\n'
     '          - "turn (on | off"\n', 7, "invalid template"),
    ("language: en\nintents:\n  Foo:\n    data:\n      - slots: {a: 1}\n", 5, "sentences"),
    ("language: en\nintents:\n  Foo:\n    sentences: [hi]\n", 3, "data"),
    ('language: en\nintents:\n  Foo:\n    data:\n      - sentences: ["set {x}"]\nlists:\n'
     "  x:\n    range:\n      from: 9\n      to: 1\n", 8, "range"),
    ('language: en\nintents:\n  Foo:\n    data:\n      - sentences: ["set {x}"]\nlists:\n'
     "  x:\n    colors: [red]\n", 7, "values"),
    # a range is spelled value by value: 10^8 of them never finished starting
    ('language: en\nintents:\n  Foo:\n    data:\n      - sentences: ["set {x}"]\nlists:\n'
     "  x:\n    range:\n      from: 1\n      to: 100000000\n", 8, "at most 10000"),
    ('language: en\nintents:\n  Foo:\n    data:\n      - sentences: ["set {x}"]\nlists:\n'
     "  x:\n    range:\n      from: 1\n      to: 9\n      step: x\n", 11, "positive integer"),
    ('language: en\nintents:\n  Foo:\n    data:\n      - sentences: ["set {x}"]\nlists:\n'
     "  x:\n    range:\n      from: 1\n      to: 9\n      multiplier: x\n", 11,
     "`multiplier` must be a number"),
    ('language: en\nintents:\n  Foo:\n    data:\n      - sentences:\n          - "hello"\n'
     '          - "set {nowhere}"\n', 7, "{nowhere} is not defined"),
    ('language: en\nintents:\n  Foo:\n    data:\n      - sentences:\n          - "<greet> you"\n',
     6, "<greet> is not defined"),
])
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    bad = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(IntentError) as info:
        IntentRecognizer.load([bad])
    assert info.value.code == "intents_invalid"
    assert info.value.message.startswith(f"{bad}:{line}: "), info.value.message
    assert reason in info.value.message


def test_references_resolve_across_files(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", 'language: en\nintents:\n  Foo:\n    data:\n'
                               '      - sentences: ["hello {who}"]\n')
    _write(tmp_path, "b.yaml", "language: en\nlists:\n  who:\n    values: [world]\n")
    assert IntentRecognizer.load([tmp_path]).recognize("hello world").name == "Foo"


def test_missing_path_is_an_intents_error(tmp_path: Path) -> None:
    with pytest.raises(IntentError, match="no such intent file"):
        IntentRecognizer.load([tmp_path / "missing.yaml"])


def test_what_editors_and_tools_leave_in_the_folder_is_not_an_intent_file(
        tmp_path: Path) -> None:
    """Hidden entries are left out: Emacs's lock link `.#x.yaml` (a link to nothing), a
    git checkout's `.github/workflows/ci.yml`; a folder named like a file is searched."""
    _write(tmp_path, "base.yaml", BASE)
    (tmp_path / ".#base.yaml").symlink_to("root@host.1234:1700000000")
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    _write(tmp_path / ".github" / "workflows", "ci.yml", "on: push\njobs: {}\n")
    (tmp_path / "more.yaml").mkdir()
    _write(tmp_path / "more.yaml", "extra.yaml", EXTRA)
    recognizer = IntentRecognizer.load([tmp_path], fuzzy=False)
    assert recognizer.files == (tmp_path / "base.yaml", tmp_path / "more.yaml" / "extra.yaml")
    assert snapshot([tmp_path]).keys() == set(recognizer.files)


def test_an_intent_file_that_is_not_a_plain_file_is_named(tmp_path: Path) -> None:
    """A named pipe would block the load for ever (start-up, or a reload holding the
    reload lock, without a word); a link to nothing is named as one."""
    _write(tmp_path, "base.yaml", BASE)
    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(IntentError) as info:
        IntentRecognizer.load([tmp_path])
    assert info.value.message == (f"{tmp_path / 'pipe.yaml'}: not a plain file (a named "
                                  "pipe); intent files must be regular files")
    with pytest.raises(IntentError, match=re.escape("not a plain file (a named pipe)")):
        IntentRecognizer.load([tmp_path / "pipe.yaml"])
    (tmp_path / "pipe.yaml").unlink()
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    with pytest.raises(IntentError, match=re.escape(
            "gone.yaml: no such intent file or folder (a link to nothing)")):
        IntentRecognizer.load([tmp_path])


def test_slots_carry_values_entities_and_offsets(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", BASE)
    _write(tmp_path, "b.yaml", EXTRA)
    recognizer = IntentRecognizer.load([tmp_path], fuzzy=False)
    text = "Living Room lights on"
    result = recognizer.recognize(text)
    assert result.recognized and result.confidence == 1.0 and result.matched_by == "template"
    (room,) = result.slots
    assert (room.name, room.value, room.entity) == ("room", "living_room", "area")
    assert (room.start, room.end, room.raw_value) == (0, 11, "Living Room")
    text = "please turn on the garage lights"
    slots = {s.name: s for s in recognizer.recognize(text).slots}
    assert text[slots["area"].start:slots["area"].end] == "garage"
    assert slots["area"].entity == "area"
    # a fixed slot has no text
    assert (slots["domain"].value, slots["domain"].raw_value) == ("light", "")


def test_nothing_matches(examples: IntentRecognizer) -> None:
    result = examples.recognize("the weather was lovely yesterday afternoon")
    assert (result.text, result.name, result.slots) == (
        "the weather was lovely yesterday afternoon", None, ())


@pytest.mark.parametrize("text, slots", [
    ("set the kitchen lights to fifty percent", {"brightness": 50}),
    ("set the kitchen lights to seventy five percent", {"brightness": 75}),
    ("set the kitchen lights to seventy-five percent", {"brightness": 75}),
    ("dim the office light to one hundred percent", {"brightness": 100}),
    ("set the kitchen lights to zero percent", {"brightness": 0}),
    ("set the kitchen lights to 40 percent", {"brightness": 40}),
    ("set a timer for ten minutes", {"minutes": 10}),
    ("set a timer for 5 minutes", {"minutes": 5}),
    ("set a timer for two minutes and twenty five seconds", {"minutes": 2, "seconds": 25}),
    ("start a forty five minute timer", {"minutes": 45}),
])
def test_number_words_fill_range_lists(examples: IntentRecognizer, text: str,
                                       slots: dict[str, int]) -> None:
    result = examples.recognize(text)
    assert result.recognized, text
    got = result.slot_values()
    assert {k: got[k] for k in slots} == slots
    assert all(type(got[k]) is int for k in slots)
    for slot in result.slots:
        if slot.name in slots:
            assert text[slot.start:slot.end] == slot.raw_value
            assert slot.raw_value.replace("-", " ") in text.replace("-", " ")


def test_out_of_range_numbers_do_not_match(examples: IntentRecognizer) -> None:
    assert examples.recognize("set the kitchen lights to two hundred percent").name is None
    assert examples.recognize("set a timer for seventy minutes").name is None


def test_requires_context_gates_by_speaker(examples: IntentRecognizer) -> None:
    text = "unlock the front door"
    for speaker in ("alice", "bob"):
        result = examples.recognize(text, {"site": "hall", "speaker": speaker})
        assert result.name == "UnlockDoor" and result.slot_values() == {"door": "front"}
    assert examples.recognize(text, {"site": "hall", "speaker": "mallory"}).name is None
    assert examples.recognize(text, {"site": "hall", "speaker": None}).name is None
    assert examples.recognize(text).name is None
    # locking is for everyone
    assert examples.recognize("lock the front door", {"speaker": "mallory"}).name == "LockDoor"


def test_intent_filter(examples: IntentRecognizer) -> None:
    assert examples.recognize("cancel the timer", {}, ["HassCancelTimer"]).name == \
        "HassCancelTimer"
    assert examples.recognize("cancel the timer", {}, ["HassGetTime"]).name is None


def test_manifest_sentences_are_the_manifest_intents(examples: IntentRecognizer) -> None:
    """The fixture manifest agrees with the example intents (text in, intent out)."""
    for entry in MANIFEST["commands"]:
        result = examples.recognize(entry["text"], entry.get("context"))
        assert result.name == entry["intent"], entry
        assert result.slot_values() == entry["slots"], entry
    for entry in MANIFEST["out_of_grammar"]:
        assert examples.recognize(entry["text"], {"speaker": "alice"}).name is None, entry


def test_every_example_intent_has_a_spoken_fixture(examples: IntentRecognizer) -> None:
    spoken = {e["intent"] for e in MANIFEST["commands"]}
    assert set(examples.intent_names()) - spoken <= {"VoicedEnrollSpeaker"}
    assert len({e["voice"] for e in MANIFEST["commands"]}) >= 4


def test_introspection(examples: IntentRecognizer) -> None:
    assert {"HassTurnOn", "HassLightSet", "HassStartTimer", "UnlockDoor", "PlayMusic"} <= \
        set(examples.intent_names())
    assert examples.slot_names("HassLightSet") == {"area", "brightness", "domain"}
    assert examples.slot_names("HassStartTimer") == {"minutes", "seconds"}
    assert examples.slot_names("UnlockDoor") == {"door"}
    assert examples.slot_names("NoSuchIntent") == set()
    vocabulary = examples.vocabulary()
    assert {"kitchen", "living", "room", "percent", "today's", "please"} <= vocabulary
    assert all(w == w.lower() for w in vocabulary)
    samples = examples.sample(20)
    assert len(samples) == 20
    assert all(examples.recognize(s, {"speaker": "alice"}).recognized for s in samples)
