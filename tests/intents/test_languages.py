"""One set of intent files per language: a file's `language:` key picks its set, and
recognition uses the set of the language the speech was heard in (real hassil)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voiced.errors import IntentError
from voiced.intents.recognizer import IntentRecognizer

ENGLISH = """\
language: en
intents:
  LightOn:
    data:
      - sentences: ["turn on the light in the {area}"]
lists:
  area:
    values: [kitchen, {in: living room, out: living_room}]
"""
GERMAN = """\
language: de
intents:
  LightOn:
    data:
      - sentences: ["schalte das licht in der {area} ein"]
  Weather:
    data:
      - sentences: ["wie wird das wetter [{day}]"]
lists:
  area:
    values: [{in: küche, out: kitchen}, {in: wohnzimmer, out: living_room}]
  day:
    values: [heute, morgen]
"""
BRAZILIAN = """\
language: pt-BR
intents:
  LightOn:
    data:
      - sentences: ["acenda a luz da {area}"]
lists:
  area:
    values: [{in: cozinha, out: kitchen}]
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "en.yaml").write_text(ENGLISH)
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "lights.yaml").write_text(GERMAN)
    (tmp_path / "pt.yaml").write_text(BRAZILIAN)
    return tmp_path


def test_each_language_has_its_own_set(folder: Path) -> None:
    recognizer = IntentRecognizer.load([folder], "en")
    assert [r.language for r in recognizer.languages()] == ["en", "de", "pt-br"]
    assert recognizer.files == (folder / "en.yaml",)
    assert recognizer.translations["de"].files == (folder / "de" / "lights.yaml",)
    german = recognizer.recognize("schalte das Licht in der Küche ein", {"language": "de"})
    assert german.name == "LightOn"
    assert german.slot_values() == {"area": "kitchen"}
    english = recognizer.recognize("turn on the light in the living room", {"language": "en"})
    assert english.name == "LightOn" and english.slot_values() == {"area": "living_room"}
    # each set hears only its own sentences
    assert not recognizer.recognize("schalte das licht in der küche ein",
                                    {"language": "en"}).recognized
    assert not recognizer.recognize("turn on the light in the kitchen",
                                    {"language": "de"}).recognized


def test_language_matching_and_fallback(folder: Path) -> None:
    recognizer = IntentRecognizer.load([folder], "en")
    # Whisper reports "pt" for Brazilian Portuguese: the pt-BR set answers
    assert recognizer.for_language("pt").language == "pt-br"
    assert recognizer.recognize("acenda a luz da cozinha", {"language": "pt"}).name == "LightOn"
    assert recognizer.for_language("DE").language == "de"
    assert recognizer.for_language("en-GB") is recognizer
    # a language without files (or none given) uses the main set
    assert recognizer.for_language("fr") is recognizer
    assert recognizer.recognize("turn on the light in the kitchen", {"language": "fr"}).recognized
    assert recognizer.recognize("turn on the light in the kitchen").recognized


def test_names_and_slots_cover_every_language(folder: Path) -> None:
    recognizer = IntentRecognizer.load([folder], "en")
    assert recognizer.intent_names() == ["LightOn", "Weather"]
    assert recognizer.slot_names("Weather") == {"day"}
    assert recognizer.slot_names("LightOn") == {"area"}


def test_files_without_a_language_join_the_main_set(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GERMAN.replace("language: de\n", ""))
    recognizer = IntentRecognizer.load([tmp_path], "de")
    assert recognizer.translations == {}
    assert recognizer.recognize("wie wird das wetter morgen").name == "Weather"


def test_extra_documents_per_language(folder: Path) -> None:
    asked: list[str] = []

    def extra(language: str) -> list[dict[str, object]]:
        asked.append(language)
        sentence = {"sentences": [f"ping {language}"]}
        return [{"intents": {f"Official_{language}": {"data": [sentence]}}}]

    recognizer = IntentRecognizer.load([folder], "en", extra=extra)
    assert sorted(asked) == ["de", "en", "pt-br"]
    assert recognizer.recognize("ping de", {"language": "de"}).name == "Official_de"
    assert not recognizer.recognize("ping de", {"language": "en"}).recognized


def test_bad_language_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(ENGLISH.replace("language: en", "language: [en]"))
    with pytest.raises(IntentError, match=r"bad\.yaml:1: `language` must be a language code"):
        IntentRecognizer.load([tmp_path], "en")


def test_main_language_without_files_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "de.yaml").write_text(GERMAN)
    with pytest.raises(IntentError, match="no intents defined for language 'en'; "
                                          "the files define languages: de"):
        IntentRecognizer.load([tmp_path], "en")


def test_cli_recognize_and_sample_take_a_language(folder: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from voiced.cli import main

    paths = ["--intents", str(folder)]
    assert main(["intents", "recognize", "schalte das licht im wohnzimmer ein", *paths]) == 0
    assert json.loads(capsys.readouterr().out)["intent"] is None
    assert main(["intents", "recognize", "schalte das licht in der wohnzimmer ein",
                 "--language", "de", *paths]) == 0
    assert json.loads(capsys.readouterr().out)["slots"] == {"area": "living_room"}
    assert main(["intents", "sample", "--language", "de", *paths]) == 0
    assert "wie wird das wetter morgen" in capsys.readouterr().out.splitlines()


def test_transcribe_uses_the_heard_language(folder: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`voiced transcribe` with a scripted Whisper model that hears German."""
    import json

    from scripted_whisper import write_scripted_checkpoint

    from voiced.audio.wav import write_wav_file
    from voiced.cli import main

    model = write_scripted_checkpoint(tmp_path / "de.pt", "wie wird das Wetter morgen", "de")
    wav = tmp_path / "a.wav"
    write_wav_file(wav, bytes(32000))
    config = tmp_path / "voiced.yaml"
    config.write_text("state_dir: state\nasr: {prompt_tokens: 0}\n")
    assert main(["transcribe", str(wav), "--asr", "whisper", "--model", str(model),
                 "--language", "auto", "--intents", str(folder), "--config", str(config)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert (line["language"], line["intent"], line["slots"]) == ("de", "Weather", {"day": "morgen"})


def test_lists_are_per_language(tmp_path: Path) -> None:
    """A German file cannot use a list that only the English files define."""
    (tmp_path / "en.yaml").write_text(ENGLISH)
    (tmp_path / "de.yaml").write_text(GERMAN.split("lists:")[0])
    with pytest.raises(IntentError, match=r"de\.yaml:\d+: list \{area\} is not defined in any "
                                          r"file of language 'de'"):
        IntentRecognizer.load([tmp_path], "en")


def test_official_sentences_for_every_language(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """The daemon loads Home Assistant's sentences for each language that has files; a
    language the package lacks keeps its own files (and a warning says so)."""
    from voiced.config import Config
    from voiced.daemon import Daemon

    (tmp_path / "en.yaml").write_text(ENGLISH)
    (tmp_path / "de.yaml").write_text(GERMAN)
    (tmp_path / "ch.yaml").write_text(GERMAN.replace("language: de", "language: de-CH"))
    (tmp_path / "tlh.yaml").write_text(
        "language: tlh\nintents:\n  Qapla:\n    data:\n      - sentences: [qapla]\n")
    config = Config.model_validate({
        "state_dir": str(tmp_path / "state"),
        "intents": {"paths": [str(tmp_path)], "official": True, "areas": ["Küche"]}})
    recognizer = Daemon(config).load_intents()
    assert [r.language for r in recognizer.languages()] == ["en", "de", "de-ch", "tlh"]
    assert recognizer.recognize("schalte das Licht in der Küche an",
                                {"language": "de"}).name == "HassTurnOn"
    assert "HassTurnOn" in recognizer.for_language("de-CH").intents.intents
    assert recognizer.recognize("qapla", {"language": "tlh"}).name == "Qapla"
    assert "HassTurnOn" not in recognizer.for_language("tlh").intents.intents
    assert "intents (tlh): only your own files" in caplog.text
