"""Intents → JSGF compilation: pure, no decoder (a real pocketsphinx parse is checked in
test_pocketsphinx.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from hassil import Intents, sample_intents

from voiced.asr.grammar import compile_grammar, sentence_words, words_of

REPO = Path(__file__).resolve().parents[2]


def _intents(text: str) -> Intents:
    return Intents.from_dict(yaml.safe_load(text))


TEMPLATES = _intents("""
language: en
intents:
  Lights:
    data:
      - sentences:
          - "(turn | switch) on [the] {area} light[s]"
          - "<dim> {area} to {level} percent"
        expansion_rules:
          dim: "(dim | set) [the]"
  Permute:
    data:
      - sentences:
          - "(open; the door)"
  Local:
    data:
      - sentences:
          - "choose {area}"
        lists:
          area:
            values: [attic]
lists:
  area:
    values:
      - kitchen
      - in: living room
        out: living_room
  level:
    range:
      from: 19
      to: 22
  anything:
    wildcard: true
skip_words: [please]
""")


def test_templates_compile_to_jsgf() -> None:
    grammar = compile_grammar(TEMPLATES)
    jsgf = grammar.jsgf
    assert jsgf.startswith("#JSGF V1.0;")
    # the skip words are said around every sentence, written once
    assert "public <voiced> = [ <skip> ] ( <sentence0> | <sentence1> | <sentence2> | " \
           "<sentence3> ) [ <skip> ];" in jsgf
    assert "<sentence0> = ( turn | switch ) on [ the ] <list_area> " \
           "( lights | light );" in jsgf
    assert "<list_area> = ( kitchen | living room );" in jsgf
    # range lists are spoken numbers, hyphenated words split
    assert "<list_level> = ( nineteen | twenty | twenty one | twenty two );" in jsgf
    assert "<rule_Lights_0_dim> = ( dim | set ) [ the ];" in jsgf
    assert "( open the door | the door open )" in jsgf
    # an intent-local list overrides the global one, under its own rule name
    assert "<list_Local_0_area> = attic;" in jsgf
    assert "<skip> = please;" in jsgf
    assert grammar.sentences == 4 and grammar.missing_words == frozenset()
    assert grammar.words == {
        "turn", "switch", "on", "the", "kitchen", "living", "room", "light", "lights", "dim",
        "set", "to", "percent", "nineteen", "twenty", "one", "two", "open", "door", "choose",
        "attic", "please"}


def test_accepts_exactly_the_sentences() -> None:
    grammar = compile_grammar(TEMPLATES)
    for sentence in ("turn on the kitchen light", "please switch on living room lights",
                     "dim kitchen to twenty one percent please", "the door open",
                     "choose attic", "set the living room to nineteen percent"):
        assert grammar.accepts(sentence), sentence
    for fragment in ("turn on the", "dim kitchen to twenty three percent", "choose kitchen",
                     "", "turn on the kitchen light light", "please please"):
        assert not grammar.accepts(fragment), fragment


def test_every_hassil_sample_is_in_the_grammar() -> None:
    intents = Intents.from_files(sorted((REPO / "config" / "intents").glob("*.yaml")))
    grammar = compile_grammar(intents)
    samples = list(sample_intents(intents, max_sentences_per_intent=40, language="en"))
    assert len(samples) > 200
    for _, sentence in samples:
        if any(c.isdigit() for c in sentence):
            continue  # digits are for typed text; speech says number words
        assert grammar.accepts(sentence), sentence


def test_words_missing_from_the_dictionary_drop_their_alternatives(
        caplog: pytest.LogCaptureFixture) -> None:
    known = {"turn", "switch", "on", "the", "kitchen", "light", "lights", "open", "door",
             "choose", "attic", "dim", "set", "to", "percent", "nineteen", "twenty", "one"}
    with caplog.at_level(logging.WARNING, logger="voiced.asr.grammar"):
        grammar = compile_grammar(TEMPLATES, known)
    # "living room" goes from the list, "lights"' sibling stays; "please" takes <skip>
    assert grammar.missing_words == {"living", "room", "two", "please"}
    assert "<list_area> = kitchen;" in grammar.jsgf
    assert "<list_level> = ( nineteen | twenty | twenty one );" in grammar.jsgf
    assert "<skip>" not in grammar.jsgf
    assert grammar.words <= known
    for word in ("living", "room", "two", "please"):
        assert any(repr(word) in r.getMessage() for r in caplog.records), word
    assert grammar.accepts("turn on kitchen lights")
    assert not grammar.accepts("turn on living room lights")


def test_a_sentence_with_nothing_left_is_dropped_and_reported() -> None:
    intents = _intents("""
language: en
intents:
  Foo:
    data:
      - sentences: ["zyzzyva now", "stop now", "say {anything}"]
lists:
  anything:
    wildcard: true
""")
    grammar = compile_grammar(intents, {"stop", "now", "say"})
    assert grammar.sentences == 1
    assert set(grammar.dropped_sentences) == {"Foo: zyzzyva now", "Foo: say {anything}"}
    assert grammar.missing_words == {"zyzzyva"}
    nothing = compile_grammar(intents, set())
    assert nothing.sentences == 0 and "<VOID>" in nothing.jsgf


def test_glued_pieces_become_whole_words() -> None:
    intents = _intents("""
language: en
intents:
  Foo:
    data:
      - sentences: ["{n}th floor", "un(lock|do) it", "what's [the ]time?"]
lists:
  n:
    values: ["four", "six"]
""")
    grammar = compile_grammar(intents)
    assert grammar.accepts("fourth floor") and grammar.accepts("sixth floor")
    assert grammar.accepts("unlock it") and grammar.accepts("undo it")
    assert grammar.accepts("what's time") and grammar.accepts("what's the time")
    assert not grammar.accepts("four th floor")


def test_words_of_and_sentence_words() -> None:
    assert words_of("What's   the time? Twenty-one_percent!") == [
        "what's", "the", "time", "twenty", "one", "percent"]
    intents = Intents.from_files(sorted((REPO / "config" / "intents").glob("*.yaml")))
    vocabulary = sentence_words(intents)
    assert {"kitchen", "hallway", "fifty", "hundred", "percent", "today's", "hey"} <= vocabulary
    assert "{area}" not in vocabulary and "" not in vocabulary


# ---- completion: may the utterance end here? (adaptive endpointing) -----------------

EXAMPLES = Intents.from_files(sorted((REPO / "config" / "intents").glob("*.yaml")))


@pytest.mark.parametrize(("text", "expected"), [
    # a whole sentence nothing goes on from
    ("turn on the kitchen lights", "complete"),
    ("set the bedroom lights to fifty percent", "complete"),
    ("set a timer for two minutes and fifteen seconds", "complete"),
    ("lock the garage door", "complete"),
    # skip words after a command are no reason to wait
    ("turn on the kitchen lights please", "complete"),
    # the start of a longer sentence
    ("set the bedroom lights to", "prefix"),
    ("set the bedroom lights", "prefix"),
    ("turn on the", "prefix"),
    ("please", "prefix"),
    # a number that can go on: "twenty" → "twenty five"
    ("set a timer for twenty", "prefix"),
    ("set the living room lights to seventy", "prefix"),
    ("set the living room lights to seventy five", "prefix"),
    # whole, and a longer sentence starting with it adds a value: a list of items
    # ("... and {seconds} seconds")
    ("set a timer for ten minutes", "continuable"),
    # optional words at the end ("what time is it [now]") change nothing: complete
    ("what time is it", "complete"),
    ("what is the date", "complete"),
    ("play music", "complete"),
    # nothing to do with the grammar
    ("", "none"),
    ("banana bread", "none"),
    ("kitchen turn on", "none"),
])
def test_completion_of_the_example_intents(text: str, expected: str) -> None:
    assert compile_grammar(EXAMPLES).completion(text) == expected


def test_completion_agrees_with_accepts() -> None:
    grammar = compile_grammar(TEMPLATES)
    for text in ["turn on the kitchen lights", "dim kitchen to twenty percent",
                 "open the door", "the door open", "choose attic", "please choose attic",
                 "choose attic please"]:
        assert grammar.accepts(text)
        assert grammar.completion(text) in ("complete", "continuable"), text
    # "turn on kitchen light" can go on with "s" only as another word: complete
    assert grammar.completion("turn on kitchen light") == "complete"
    assert grammar.completion("dim kitchen to twenty") == "prefix"
    assert grammar.completion("dim kitchen to nineteen percent") == "complete"
    assert grammar.completion("choose") == "prefix"


def test_text_judge_for_backends_without_a_grammar() -> None:
    from voiced.asr.text_judge import TextJudge

    judge = TextJudge(EXAMPLES)
    assert judge("Turn on the kitchen lights.") == "complete"
    assert judge("Set the bedroom lights to") == "prefix"
    # digits are not in the grammar: a whole hassil match, whether it goes on unknown
    assert judge("set the bedroom lights to 50 percent") == "continuable"
    assert judge("set the bedroom lights to 50") == "none"
    assert judge("") == "none"
