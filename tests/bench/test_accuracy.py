"""`voiced bench accuracy`: the corpus and its split, the judging of outcomes, and the whole
benchmark end to end on a tiny corpus (real synthesizers, webrtcvad, pocketsphinx and
the intent recognizer on the example intents)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support import REPO

from voiced.bench import corpus
from voiced.bench.accuracy_worker import judge
from voiced.config import load_config
from voiced.intents.catalog import load_catalog
from voiced.intents.recognizer import IntentRecognizer

CONTEXT = {"site": "default", "speaker": "unknown"}


@pytest.fixture(scope="module")
def recognizer() -> IntentRecognizer:
    return load_catalog(load_config(None), [REPO / "config" / "intents"])


@pytest.fixture(scope="module")
def voices() -> list[corpus.BenchVoice]:
    found = corpus.installed_voices()
    assert {v.family for v in found} == set(corpus.FAMILIES)  # the test machine has them all
    return found


def test_voice_split_is_deterministic_disjoint_and_keeps_people_together(
        voices: list[corpus.BenchVoice]) -> None:
    split = corpus.split_voices(voices, seed=1, fraction=0.3)
    assert split == corpus.split_voices(list(reversed(voices)), seed=1, fraction=0.3)
    assert set(split) == {v.id for v in voices} and set(split.values()) == set(corpus.SPLITS)
    for family in corpus.FAMILIES:
        people: dict[str, set[str]] = {}
        for v in voices:
            if v.family == family:
                people.setdefault(v.voice.person, set()).add(split[v.id])
        assert all(len(s) == 1 for s in people.values())  # every rendering on one side
        held = sum(s == {corpus.HELD_OUT} for s in people.values())
        assert 1 <= held < len(people)
        assert held == max(1, round(0.3 * len(people)))
    assert corpus.split_voices(voices, seed=2, fraction=0.3) != split


def test_plan_keeps_the_splits_apart_and_a_smaller_run_is_part_of_a_larger(
        recognizer: IntentRecognizer, voices: list[corpus.BenchVoice]) -> None:
    commands = corpus.sample_commands(recognizer, CONTEXT, seed=1)
    everyday = corpus.everyday_sentences(recognizer, CONTEXT)
    assert commands == corpus.sample_commands(recognizer, CONTEXT, seed=1)

    def make(per_family: int, n: int) -> corpus.Plan:
        return corpus.plan(voices, commands, everyday, ["clean", "white-10"], seed=1,
                           fraction=0.3, per_family=per_family, n_commands=n, n_everyday=n)

    big, small = make(6, 5), make(2, 2)
    for p in (big, small):
        said: dict[str, set[str]] = {s: set() for s in corpus.SPLITS}
        for t in p.trials:
            assert t.split == p.splits[t.voice.id]
            assert corpus.sentence_split(t.sentence.text, 1, 0.3) == t.split
            said[t.split].add(t.sentence.text)
        assert said[corpus.TRAINING] and said[corpus.HELD_OUT]
        assert not said[corpus.TRAINING] & said[corpus.HELD_OUT]
        assert Counter(v.family for v in p.voices) == dict.fromkeys(
            corpus.FAMILIES, 6 if p is big else 2)
    key = [(t.voice.id, t.sentence.text, t.condition) for t in small.trials]
    assert set(key) <= {(t.voice.id, t.sentence.text, t.condition) for t in big.trials}
    # commands are spread over the intents, numbers over their ranges
    assert len({t.sentence.intent for t in big.trials if t.sentence.intent}) >= 8
    minutes = {s.slots["minutes"] for s in commands if "minutes" in s.slots}
    assert min(minutes) <= 10 and max(minutes) >= 50


def test_everyday_sentences_are_no_commands_even_with_an_area_and_a_known_speaker(
        recognizer: IntentRecognizer) -> None:
    plain = IntentRecognizer(recognizer.intents, recognizer.language, fuzzy=False)
    everyday = corpus.everyday_sentences(recognizer, CONTEXT)
    assert len(everyday) >= 250
    household = {"site": "kitchen", "area": "kitchen", "speaker": "alice"}
    assert [s.text for s in everyday if plain.recognize(s.text, household).name] == []
    vocabulary = recognizer.vocabulary() - {"the", "a", "to", "in", "on", "is", "my", "of"}
    sharing = [s for s in everyday if set(s.text.split()) & vocabulary]
    assert len(sharing) > len(everyday) / 3  # many share words with the commands


def heard(text: str, intent: str | None = None, confidence: float = 0.9,
          **slots: Any) -> dict[str, Any]:
    return {"text": text, "confidence": confidence, "intent": intent, "slots": slots}


def test_a_command_counts_only_with_its_intent_and_every_slot() -> None:
    want = corpus.Sentence("set a timer for five minutes", "HassStartTimer", {"minutes": 5})
    ok = heard("set a timer for five minutes", "HassStartTimer", minutes=5)
    assert judge(want, [ok], 0.5) == "understood"
    assert judge(want, [heard("x", "HassStartTimer", minutes=9)], 0.5) == "wrong"
    assert judge(want, [ok, heard("y", "HassGetTime")], 0.5) == "wrong"
    assert judge(want, [heard("", confidence=0.0), ok], 0.5) == "understood"
    assert judge(want, [heard("set a timer")], 0.5) == "no_intent"
    assert judge(want, [heard("set a timer", confidence=0.2)], 0.5) == "low_confidence"
    assert judge(want, [heard("", confidence=0.0)], 0.5) == "empty"
    assert judge(want, [], 0.5) == "no_speech"
    chatter = corpus.Sentence("the dog needs a walk")
    assert judge(chatter, [heard("what time is it", "HassGetTime")], 0.5) == "accepted"
    assert judge(chatter, [heard("what time is it", confidence=0.1)], 0.5) == "rejected"


def run_bench(tmp_path: Path, name: str,
              jobs: int) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    out = tmp_path / name
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "voiced.cli", "bench", "accuracy", "--families", "espeak-ng,flite",
         "--voices-per-family", "2", "--commands", "3", "--everyday", "1",
         "--conditions", "clean,babble-10", "--jobs", str(jobs), "--cache", str(tmp_path / "cache"),
         "--intents", str(REPO / "config" / "intents"), "--json",
         "--plot", str(out / "plot.png"), "--details", str(out / "trials.jsonl")],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    return json.loads(proc.stdout), rows, proc.stderr


@pytest.mark.slow
def test_tiny_benchmark_end_to_end(tmp_path: Path) -> None:
    report, rows, stderr = run_bench(tmp_path, "one", jobs=2)
    conditions = ["clean", "babble-10"]
    assert report["conditions"] == conditions
    assert report["trials"] == 4 * 4 * 2 and report["dropped_trials"] == 0
    assert len(rows) == 2 * 4 * 2 and {r["split"] for r in rows} == {"training"}
    assert "synthesizing" in stderr and "trials 32/32 (100%)" in stderr

    splits = report["splits"]
    assert set(splits) == {"training", "held_out"}
    for r in splits.values():
        assert len(r["voices"]) == 2 and set(r["by_family"]) == {"espeak-ng", "flite"}
        assert list(r["by_condition"]) == conditions
        o = r["overall"]
        assert o["commands"] == 12 and o["everyday"] == 4
        assert o["understood"] + sum(o["failures"].values()) == o["commands"]
        assert sum(c["commands"] for c in r["by_condition"].values()) == o["commands"]
        assert sum(c["accepted"] for c in r["by_family"].values()) == o["accepted"]
        assert sum(c["understood"] for c in r["by_family"].values()) == o["understood"]
        for cells in r["by_family_condition"].values():
            for c in cells.values():
                assert 0 <= c["accuracy"] <= 1 and 0 <= c["false_accept_rate"] <= 1
    train = splits["training"]["overall"]
    assert train["understood"] == sum(row["outcome"] == "understood" for row in rows)
    assert train["accepted"] == sum(row["outcome"] == "accepted" for row in rows)
    # the held-out voices are not the training ones (their sentences: test_plan_...)
    assert not set(splits["training"]["voices"]) & set(splits["held_out"]["voices"])
    assert set(splits["held_out"]["voices"]) <= set(report["split_voices"]["held_out"])
    assert {row["voice"] for row in rows} == set(splits["training"]["voices"])
    # the real pipeline understood a recorded speaker's voice in the clean room
    flite_clean = [row for row in rows if row["family"] == "flite"
                   and row["condition"] == "clean" and row["kind"] == "command"]
    assert sum(row["outcome"] == "understood" for row in flite_clean) >= 2
    assert all(row["heard"] and row["heard"][0]["seconds"] > 0.5 for row in flite_clean)
    png = (tmp_path / "one" / "plot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert 400 < int.from_bytes(png[16:20], "big") < 4000
    assert report["examples"]["false_accepts"] == [] or all(
        e["voice"] in splits["training"]["voices"] for e in report["examples"]["false_accepts"])

    # a second run (from the cache, in one process) makes the same trials and outcomes
    again, rows2, stderr2 = run_bench(tmp_path, "two", jobs=1)
    assert rows2 == rows
    assert again["splits"] == report["splits"]
    assert "synthesis failed" not in stderr2


@pytest.mark.parametrize("synth,name", [("espeak", "en-us"), ("flite", "slt"),
                                        ("festival", "ked")])
def test_voices_speak_at_the_rate_asked(tmp_path: Path, synth: str, name: str) -> None:
    from voiced.audio.wav import read_wav_file
    from voiced.const import BYTES_PER_SECOND
    from voiced.speakers.voices import Voice, synthesize

    def seconds(rate: float) -> float:
        out = synthesize(Voice("v", synth, name, "v", rate),  # type: ignore[arg-type]
                         "set a timer for twenty minutes", tmp_path / f"{rate}.wav")
        return len(read_wav_file(out)) / BYTES_PER_SECOND

    slow, fast = seconds(0.8), seconds(1.25)
    assert 1.25 < slow / fast < 1.9
    if synth == "espeak":  # a higher pitch: the same words, other audio
        assert read_wav_file(tmp_path / "0.8.wav") != read_wav_file(
            synthesize(Voice("v", "espeak", name, "v", 0.8, 80), "set a timer for twenty minutes",
                       tmp_path / "high.wav"))


def test_paused_speech_has_exactly_the_planned_pauses(
        voices: list[corpus.BenchVoice], tmp_path: Path) -> None:
    import numpy as np

    from voiced.bench import conditions as cond
    from voiced.bench.accuracy_worker import PAUSE_MS, load_speech, pause_plan, paused_speech
    from voiced.const import SAMPLE_RATE

    voice = next(v for v in voices if v.family == "espeak-ng")
    text = "set the bedroom lights to fifty percent"
    plan = pause_plan(1, voice, text)
    assert plan == pause_plan(1, voice, text)  # by the seed
    assert " ".join(part for part, _ in plan) == text
    assert 2 <= len(plan) <= 3 and plan[-1][1] == 0
    assert all(PAUSE_MS[0] <= pause <= PAUSE_MS[1] for _, pause in plan[:-1])
    assert {len(pause_plan(seed, voice, text)) for seed in range(20)} == {2, 3}
    assert pause_plan(1, voice, "stop") == [("stop", 0)]
    audio = paused_speech(tmp_path, 1, voice, text)
    parts = [load_speech(tmp_path, voice, part) for part, _ in plan]
    spans = [cond.active_span(p) for p in parts]
    inner = sum(b - a for a, b in spans) - (spans[0][1] - spans[0][0]) + spans[0][1]
    inner += len(parts[-1]) - spans[-1][1]
    pauses = sum(pause for _, pause in plan) * SAMPLE_RATE // 1000
    assert len(audio) == inner + pauses
    # the first pause is where the plan put it, all zeros
    end_first = spans[0][1]
    assert np.all(audio[end_first:end_first + plan[0][1] * SAMPLE_RATE // 1000] == 0)


def test_the_adaptive_endpoint_ends_sooner_and_keeps_a_paused_prefix(
        voices: list[corpus.BenchVoice], tmp_path: Path) -> None:
    """The benchmark's own endpointer (`accuracy_worker.endpoint`) with a real
    pocketsphinx stream judging each check, as the site worker does."""
    import numpy as np

    from voiced.asr.pocketsphinx import PocketsphinxTranscriber
    from voiced.asr.service import asr_intents
    from voiced.bench.accuracy_worker import endpoint, load_speech
    from voiced.bench.conditions import active_span
    from voiced.config import AsrConfig, VadConfig
    from voiced.const import SAMPLE_RATE

    recognizer = IntentRecognizer.load([REPO / "config" / "intents"], fuzzy=False)
    asr = PocketsphinxTranscriber(AsrConfig(), asr_intents(recognizer))
    asr.load()
    voice = next(v for v in voices if v.id == "espeak-en-us")

    def said(*parts: str | int) -> bytes:
        pieces = [np.zeros(SAMPLE_RATE // 2)]
        for part in parts:
            if isinstance(part, int):
                pieces.append(np.zeros(part * SAMPLE_RATE // 1000))
            else:
                speech = load_speech(tmp_path, voice, part)
                a, b = active_span(speech)
                pieces.append(speech[a:b])
        pieces.append(np.zeros(SAMPLE_RATE))
        return (np.concatenate(pieces) * 32767).astype("<i2").tobytes()

    fixed, adaptive = VadConfig(), VadConfig(endpoint="adaptive")
    whole = said("lock the front door")
    (f,), (a,) = endpoint(whole, fixed, asr.start_stream), endpoint(whole, adaptive,
                                                                     asr.start_stream)
    assert (f.reason, a.reason) == ("silence", "complete")
    assert f.end - a.end == 2 * (500 - adaptive.min_silence_ms) * SAMPLE_RATE // 1000
    paused = said("set the bedroom lights to", 400, "fifty percent")
    cuts = endpoint(paused, adaptive, asr.start_stream)
    assert [c.reason for c in cuts] == ["complete"]
    assert asr.transcribe(cuts[0].audio).text == "set the bedroom lights to fifty percent"


def test_commands_cut_short_are_counted_and_so_are_those_lost() -> None:
    from voiced.bench.accuracy_report import cell

    def row(outcome: str, truncated: bool) -> dict[str, Any]:
        return {"kind": "command", "outcome": outcome, "truncated": truncated}

    counts = cell([row("understood", True), row("wrong", True), row("empty", False),
                   row("understood", False),
                   {"kind": "everyday", "outcome": "accepted", "truncated": True}])
    assert (counts["commands"], counts["understood"]) == (4, 2)
    assert (counts["truncated"], counts["truncated_rate"]) == (2, 0.5)
    assert counts["truncated_not_understood"] == 1  # "what time is it | now" is not lost
    assert counts["failures"] == {"wrong": 1, "empty": 1}
