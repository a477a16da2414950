"""Measure pocketsphinx grammar-mode accuracy, confidence and speed (the figures in
docs/intents-and-asr.md come from this script).

    .venv/bin/python tests/asr/measure_pocketsphinx.py            # the committed fixtures
    .venv/bin/python tests/asr/measure_pocketsphinx.py --survey   # + many voices, near misses
    .venv/bin/python tests/asr/measure_pocketsphinx.py --generic-cmn  # no adaptation
    .venv/bin/python tests/asr/measure_pocketsphinx.py --lattice      # lattice pass on

The recognizer is loaded as the server loads it (fuzzy fallback on), and the cepstral
mean is first adapted on the demo samples in config/samples. For every fixture: the
decoded text, whether the recognizer turned it into the manifest's
intent and slots, the confidence, the real-time factor of a whole-utterance decode
(decode seconds / audio seconds), and the endpoint latency of a stream fed in 20 ms
chunks (time spent in `finish()` after the last chunk).

`--survey` synthesizes (into a temporary folder) 14 commands in 18 espeak-ng voices and
12 non-commands in 6 voices (half of them near misses such as "turn on the bathroom
fan"), padded with exact digital silence, and reports the accuracy and the share of
non-commands accepted at each confidence threshold.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "fixtures"))

from make_fixtures import speak, write_wav  # noqa: E402

from voiced.asr.pocketsphinx import (  # noqa: E402
    RECOMMENDED_MIN_CONFIDENCE,
    PocketsphinxTranscriber,
)
from voiced.asr.service import asr_intents  # noqa: E402
from voiced.config import AsrConfig  # noqa: E402
from voiced.const import BYTES_PER_SECOND, ms_to_bytes  # noqa: E402
from voiced.intents.recognizer import IntentRecognizer  # noqa: E402
from voiced.models import IntentResult, Transcript  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7)

SURVEY_VOICES = ("en-us", "en-us+m1", "en-us+m2", "en-us+m3", "en-us+m4", "en-us+f1",
                 "en-us+f2", "en-us+f3", "en-us+f4", "en+m3", "en+f3", "en-gb", "en-gb-x-rp",
                 "en-us-nyc", "en+klatt", "en-us+klatt2", "en-029", "en-gb-scotland")
SURVEY_COMMANDS = (
    "turn on the kitchen lights", "switch off the living room light",
    "set the bedroom lights to thirty five percent", "set a timer for ten minutes",
    "set a timer for two minutes and thirty seconds", "cancel the timer", "what time is it",
    "what is the date today", "unlock the front door", "lock the back door", "play my music",
    "turn the garage lights off", "dim the office lights to twenty percent", "what day is it",
)
SURVEY_OTHERS = (
    "the weather was lovely yesterday afternoon", "my grandmother baked an apple pie",
    "can you recommend a good book about history", "the train to boston leaves at noon",
    "i think the dog needs a walk", "what a beautiful garden you have",
    # near misses: command-like sentences the intents do not cover
    "turn on the bathroom fan", "what is the weather like today", "set an alarm for seven",
    "open the kitchen window", "call my mother", "how tall is the eiffel tower",
)
SURVEY_OTHER_VOICES = ("en-us", "en-us+m1", "en-us+f2", "en+m3", "en-gb-x-rp", "en-us+f4")


def read_pcm(path: Path) -> bytes:
    """PCM frames of a 16 kHz 16-bit mono WAV file."""
    with wave.open(str(path)) as w:
        return w.readframes(w.getnframes())


def understood(result: IntentResult, intent: str | None, slots: dict[str, Any]) -> bool:
    """True when the recognizer's result is the expected intent with the expected slots."""
    got = result.slot_values()
    return result.name == intent and all(got.get(k) == v for k, v in slots.items())


def stream_decode(asr: PocketsphinxTranscriber, pcm: bytes) -> tuple[Transcript, float]:
    """Feed 20 ms chunks; returns the transcript and the seconds spent in finish()."""
    stream = asr.start_stream()
    step = ms_to_bytes(20)
    for start in range(0, len(pcm), step):
        stream.feed(pcm[start:start + step])
    started = time.perf_counter()
    transcript = stream.finish()
    return transcript, time.perf_counter() - started


def fixtures(asr: PocketsphinxTranscriber, recognizer: IntentRecognizer,
             generic_cmn: str | None = None) -> None:
    """Decode every committed fixture; print one line each and a summary.

    With `generic_cmn`, every utterance starts from that cepstral mean (no adaptation).
    """
    manifest = yaml.safe_load((FIXTURES / "commands.yaml").read_text())
    rtfs, finishes, seconds, good, rejected = [], [], [], 0, 0
    print(f"ok: a command understood with confidence >= {RECOMMENDED_MIN_CONFIDENCE}, "
          "a non-command rejected")
    print(f"{'file':38} {'conf':>5} {'rtf':>6} {'finish':>7}  ok  heard")
    for kind in ("commands", "out_of_grammar"):
        for entry in manifest[kind]:
            pcm = read_pcm(FIXTURES / entry["file"])
            if generic_cmn is not None:
                asr.cmn = generic_cmn
            started = time.perf_counter()
            transcript = asr.transcribe(pcm)
            rtf = (time.perf_counter() - started) / (len(pcm) / BYTES_PER_SECOND)
            if generic_cmn is not None:
                asr.cmn = generic_cmn
            _, finish_s = stream_decode(asr, pcm)
            result = recognizer.recognize(transcript.text, entry.get("context"))
            accepted = transcript.confidence >= RECOMMENDED_MIN_CONFIDENCE
            if kind == "commands":
                ok = accepted and understood(result, entry["intent"], entry["slots"] or {})
                good += ok
            else:
                ok = not (accepted and result.recognized)
                rejected += ok
            rtfs.append(rtf)
            seconds.append(len(pcm) / BYTES_PER_SECOND)
            finishes.append(finish_s * 1000)
            print(f"{entry['file']:38} {transcript.confidence:5.2f} {rtf:6.3f} "
                  f"{finish_s * 1000:5.1f}ms  {'yes' if ok else 'NO ':3} {transcript.text!r}")
    print(f"\ncommands understood: {good}/{len(manifest['commands'])}, non-commands rejected: "
          f"{rejected}/{len(manifest['out_of_grammar'])}")
    print(f"utterances: {statistics.median(seconds):.2f} s median, "
          f"{min(seconds):.2f}-{max(seconds):.2f} s")
    print(f"real-time factor (whole utterance): median {statistics.median(rtfs):.3f}, "
          f"max {max(rtfs):.3f}")
    print(f"streaming, time left at the endpoint: median {statistics.median(finishes):.1f} ms, "
          f"max {max(finishes):.1f} ms")


def survey(asr: PocketsphinxTranscriber, recognizer: IntentRecognizer) -> None:
    """Many voices, digital-silence padding, near-miss non-commands."""
    rows: list[tuple[str, float, bool]] = []  # kind, confidence, understood/accepted
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n, text in enumerate(SURVEY_COMMANDS):
            expected = recognizer.recognize(text, {"speaker": "alice"})
            for voice in SURVEY_VOICES:
                path = Path(tmp) / f"c{n}_{voice}.wav"
                write_wav(path, speak(text, voice, path.name, noise_dbfs=None))
                transcript = asr.transcribe(read_pcm(path))
                result = recognizer.recognize(transcript.text, {"speaker": "alice"})
                rows.append(("command", transcript.confidence, understood(
                    result, expected.name, expected.slot_values())))
        print(f"voice survey: commands done in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        for n, text in enumerate(SURVEY_OTHERS):
            for voice in SURVEY_OTHER_VOICES:
                path = Path(tmp) / f"o{n}_{voice}.wav"
                write_wav(path, speak(text, voice, path.name, noise_dbfs=None))
                transcript = asr.transcribe(read_pcm(path))
                result = recognizer.recognize(transcript.text, {"speaker": "alice"})
                kind = "near miss" if n >= 6 else "other"
                rows.append((kind, transcript.confidence, result.recognized))
    commands = [r for r in rows if r[0] == "command"]
    print(f"\nsurvey: {len(SURVEY_COMMANDS)} commands x {len(SURVEY_VOICES)} voices, "
          f"{len(SURVEY_OTHERS)} non-commands x {len(SURVEY_OTHER_VOICES)} voices")
    print(f"{'min_confidence':>14} {'commands understood':>20} {'other accepted':>15} "
          f"{'near miss accepted':>19}")
    for threshold in THRESHOLDS:
        ok = sum(1 for _, c, u in commands if u and c >= threshold)
        cells = []
        for kind in ("other", "near miss"):
            group = [r for r in rows if r[0] == kind]
            cells.append(f"{sum(1 for _, c, a in group if a and c >= threshold)}/{len(group)}")
        print(f"{threshold:14.2f} {f'{ok}/{len(commands)}':>20} {cells[0]:>15} {cells[1]:>19}")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--survey", action="store_true", help="also run the voice survey")
    parser.add_argument("--generic-cmn", action="store_true",
                        help="start every fixture from the model's initial cepstral mean")
    parser.add_argument("--lattice", action="store_true",
                        help="turn pocketsphinx's lattice best-path pass on")
    args = parser.parse_args()
    recognizer = IntentRecognizer.load([REPO / "config" / "intents"])
    asr = PocketsphinxTranscriber(AsrConfig(), asr_intents(recognizer))
    asr.lattice_pass = args.lattice
    started = time.perf_counter()
    asr.load()
    print(f"load (grammar, dictionary, warm-up): {time.perf_counter() - started:.2f} s")
    generic = asr.cmn
    # like a server that has heard speech before: adapt the cepstral mean on the demo
    # samples (config/samples), which are not part of the measured set
    for sample in sorted((REPO / "config" / "samples").glob("*.wav")):
        asr.transcribe(read_pcm(sample))
    fixtures(asr, recognizer, generic if args.generic_cmn else None)
    if args.survey:
        survey(asr, recognizer)


if __name__ == "__main__":
    main()
