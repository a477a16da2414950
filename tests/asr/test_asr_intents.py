"""AsrIntents: what the speech recognizers know of the intents, built from the recognizer
in one place; the backends never import the intents package."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from hassil import Intents

from voiced.asr.grammar import compile_grammar
from voiced.asr.service import asr_intents
from voiced.asr.worker_process import to_portable
from voiced.intents.recognizer import IntentRecognizer

FILES = {
    "lights.yaml": """\
language: en
intents:
  LightOn:
    data:
      - sentences: ["turn on the light in the {area}"]
lists:
  area:
    values: [kitchen, Xochimilco]
skip_words: [please]
""",
    "de.yaml": """\
language: de
intents:
  LightOn:
    data:
      - sentences: ["schalte das licht in der {area} ein"]
lists:
  area:
    values: [{in: küche, out: kitchen}]
""",
    "pt.yaml": """\
language: pt_BR
intents:
  LightOn:
    data:
      - sentences: ["acenda a luz da {area}"]
lists:
  area:
    values: [{in: cozinha, out: kitchen}]
""",
}


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory: pytest.TempPathFactory) -> IntentRecognizer:
    folder = tmp_path_factory.mktemp("intents")
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return IntentRecognizer.load([folder], "en", fuzzy=False)


def test_built_from_the_recognizer(recognizer: IntentRecognizer) -> None:
    intents = asr_intents(recognizer)
    assert intents.language == "en"
    assert intents.intents is recognizer.intents
    assert intents.document == recognizer.document
    assert list(intents.vocabulary) == ["en", "de", "pt-br"]
    for r in recognizer.languages():
        assert intents.vocabulary[r.language] == r.vocabulary()
    assert {"xochimilco", "please", "küche", "cozinha"} <= intents.all_words()


@pytest.mark.parametrize("language", ["en", "EN", "en-GB", "de", "de_AT", "pt", "pt-BR",
                                      "pt_br", "fr", " ", "zh-Hant"])
def test_words_for_a_language_are_the_recognizers_choice(recognizer: IntentRecognizer,
                                                         language: str) -> None:
    """Whisper's prompt uses the sentences the recognizer will match its text with."""
    assert (asr_intents(recognizer).words_for(language)
            == recognizer.for_language(language).vocabulary())


def test_the_document_crosses_to_a_process_and_rebuilds_the_same_grammar(
        recognizer: IntentRecognizer) -> None:
    intents = asr_intents(recognizer)
    portable = to_portable(intents)
    assert portable is not None
    language, document, vocabulary = pickle.loads(pickle.dumps(portable))
    assert (language, vocabulary) == (intents.language, intents.vocabulary)
    rebuilt = compile_grammar(Intents.from_dict(dict(document)), language=language)
    assert rebuilt.jsgf == compile_grammar(intents.intents, language=intents.language).jsgf


def test_intents_built_in_code_have_no_document(recognizer: IntentRecognizer) -> None:
    in_code = asr_intents(IntentRecognizer(recognizer.intents, "en", fuzzy=False))
    assert in_code.document is None and to_portable(in_code) is None
    assert in_code.vocabulary == {"en": recognizer.vocabulary()}


def test_backends_do_not_import_the_intents_package() -> None:
    code = ("import sys\n"
            "import voiced.asr.base, voiced.asr.grammar, voiced.asr.pocketsphinx\n"
            "import voiced.asr.whisper, voiced.asr.whisper_prompt, voiced.asr.workers\n"
            "print(sorted(m for m in sys.modules if m.startswith('voiced.intents')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
