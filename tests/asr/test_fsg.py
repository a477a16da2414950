"""The grammar as a minimal automaton (voiced.asr.fsg): it says exactly what the JSGF
grammar says, is far smaller, and is what pocketsphinx decodes with."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from voiced.asr.fsg import Arc, Fsg, accepts, jsgf_fsg, minimal_fsg, weight
from voiced.asr.grammar import Grammar, compile_grammar
from voiced.asr.pocketsphinx import SEARCH, PocketsphinxTranscriber
from voiced.asr.service import asr_intents
from voiced.audio.wav import read_wav_file
from voiced.config import AsrConfig
from voiced.intents.recognizer import IntentRecognizer

REPO = Path(__file__).resolve().parents[2]


def say(fsg: Fsg, rng: random.Random) -> list[str]:
    """A random sentence of `fsg` (a walk from its start to its final state)."""
    out: dict[int, list[Arc]] = {}
    for arc in fsg.arcs:
        out.setdefault(arc[0], []).append(arc)
    words: list[str] = []
    state = fsg.start
    while state != fsg.final:
        arc = rng.choice(out[state])
        if len(arc) == 4:
            words.append(arc[3])
        state = arc[1]
    return words


def mutations(words: list[str], vocabulary: list[str], rng: random.Random) -> list[list[str]]:
    """Near misses: a word dropped, doubled, swapped with its neighbour, replaced, added."""
    out = []
    i = rng.randrange(len(words))
    out.append(words[:i] + words[i + 1:])
    out.append([*words[:i], words[i], *words[i:]])
    if len(words) > 1:
        j = min(i, len(words) - 2)
        out.append([*words[:j], words[j + 1], words[j], *words[j + 2:]])
    out.append([*words[:i], rng.choice(vocabulary), *words[i + 1:]])
    out.append([*words, rng.choice(vocabulary)])
    return out


@pytest.fixture(scope="module")
def grammar() -> Grammar:
    return compile_grammar(IntentRecognizer.load([REPO / "config" / "intents"]).intents)


def test_the_automaton_says_exactly_what_the_grammar_says(grammar: Grammar) -> None:
    source = jsgf_fsg(grammar.jsgf, grammar.name)
    fsg = minimal_fsg(source)
    assert fsg is not None
    rng = random.Random(5)
    vocabulary = sorted(grammar.words)
    near = 0
    for _ in range(2000):
        words = say(source, rng)
        assert accepts(fsg, words), words
        # the search scores the sentence as it did with pocketsphinx's own automaton
        assert weight(fsg, words) == pytest.approx(weight(source, words), abs=1e-6)
        for other in mutations(words, vocabulary, rng):
            assert accepts(fsg, other) == grammar.accepts(" ".join(other)), other
            near += not grammar.accepts(" ".join(other))
    assert near > 2000  # most near misses are not sentences, and are refused
    assert not accepts(fsg, [])


def test_the_automaton_is_minimal_and_small(grammar: Grammar) -> None:
    source = jsgf_fsg(grammar.jsgf, grammar.name)
    fsg = minimal_fsg(source)
    assert fsg is not None
    assert (source.states, source.word_arcs) == (1635, 1276)
    assert fsg.states < 100 and fsg.word_arcs < 500
    # deterministic: no state says a word twice; minimal: doing it again changes nothing
    seen = set()
    for arc in fsg.arcs:
        if len(arc) == 4:
            assert (arc[0], arc[3]) not in seen
            seen.add((arc[0], arc[3]))
    assert minimal_fsg(fsg) == fsg
    assert minimal_fsg(source, max_states=10) is None


def test_a_grammar_of_many_overlapping_sentences_stays_small(tmp_path: Path) -> None:
    # every combination of area and device, said in three orders, each with numbers
    areas = [f"area{i}" for i in range(12)]
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump({"language": "en", "intents": {"Set": {"data": [{
        "sentences": ["set [the] {area} {device} to {n} [percent]",
                      "{device} in [the] {area} to {n} [percent]",
                      "[please] make [the] {area} {device} {n} [percent]"]}]}},
        "lists": {"area": {"values": areas},
                  "device": {"values": ["lamp", "fan", "heater", "blind"]},
                  "n": {"range": {"from": 0, "to": 100}}}}))
    grammar = compile_grammar(IntentRecognizer.load([path]).intents)
    source = jsgf_fsg(grammar.jsgf, grammar.name)
    fsg = minimal_fsg(source)
    assert fsg is not None
    assert fsg.word_arcs * 3 < source.word_arcs
    rng = random.Random(2)
    for _ in range(300):
        words = say(source, rng)
        assert weight(fsg, words) == pytest.approx(weight(source, words), abs=1e-6)


def test_pocketsphinx_decodes_with_the_automaton(tmp_path: Path) -> None:
    recognizer = IntentRecognizer.load([REPO / "config" / "intents"])
    asr = PocketsphinxTranscriber(AsrConfig(processes=1, search="automaton"),
                                  asr_intents(recognizer))
    asr.load()
    assert asr._fsg is not None and asr._fsg.states < 100
    pcm = read_wav_file(REPO / "tests" / "fixtures" / "commands" / "set_living_room_75.wav")
    heard = asr.transcribe(pcm).text
    slots = recognizer.recognize(heard, {}).slot_values()
    assert (slots["area"], slots["brightness"]) == ("living_room", 75)
    # too big an automaton: pocketsphinx compiles the JSGF, and hears the same
    import voiced.asr.fsg as fsg_module

    cap = fsg_module.MAX_STATES
    fsg_module.MAX_STATES = 5
    try:
        fallback = PocketsphinxTranscriber(AsrConfig(processes=1, search="automaton"),
                                           asr_intents(recognizer))
        fallback.load()
    finally:
        fsg_module.MAX_STATES = cap
    assert fallback._fsg is None
    assert fallback.transcribe(pcm).text == heard
    default = PocketsphinxTranscriber(AsrConfig(processes=1), asr_intents(recognizer))
    default.load()
    assert default._fsg is None  # asr.search: jsgf (the default)
    assert default.transcribe(pcm).text == heard
    # the weights are those of the decoder's own JSGF search (its language weight)
    written = tmp_path / "decoder.fsg"
    default._new_decoder().get_fsg(SEARCH).writefile(str(written))
    own = {tuple(line.split()[1:]) for line in written.read_text().splitlines()
           if line.startswith("TRANSITION") and "<sil>" not in line and "[" not in line
           and "(" not in line}
    source = jsgf_fsg(default._grammar.jsgf, default._grammar.name)  # type: ignore[union-attr]
    assert own == {(str(a), str(b), f"{p:.6f}", *rest) for a, b, p, *rest in source.arcs}
