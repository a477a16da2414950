"""Synthetic test voices for the speaker benchmark and tests (flite, festival, espeak-ng).

flite's awb, rms, slt and kal16 and festival's ked and kal diphone voices were each built
from recordings of one real person, so they differ the way people do; flite kal16 and
festival kal are the same person (Kal), recorded into two synthesizers. espeak-ng variants
are parameter tweaks of one formant synthesizer: unrealistically hard to tell apart, so
they are reported beside, never instead of, the real-speaker figures.

Every file is converted to the internal format and cached by voice, index and text.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Synth = Literal["flite", "festival", "espeak"]


@dataclass(frozen=True, slots=True)
class Voice:
    """One synthetic voice."""

    id: str
    """Stable id used in file names and reports, e.g. "flite-awb"."""
    synth: Synth
    voice: str
    """The synthesizer's own voice name."""
    person: str
    """Who it sounds like: voices of the same person share this."""
    rate: float = 1.0
    """Speaking rate relative to the synthesizer's default (1.25: a quarter faster)."""
    pitch: int | None = None
    """espeak-ng only: pitch 0-99 (None: the voice's own, 50)."""


REAL_VOICES: tuple[Voice, ...] = (
    Voice("flite-awb", "flite", "awb", "awb"),
    Voice("flite-rms", "flite", "rms", "rms"),
    Voice("flite-slt", "flite", "slt", "slt"),
    Voice("flite-kal16", "flite", "kal16", "kal"),
    Voice("festival-ked", "festival", "ked", "ked"),
    Voice("festival-kal", "festival", "kal", "kal"),
)
"""Voices of five real people (Kal twice)."""

ESPEAK_VOICES: tuple[Voice, ...] = tuple(
    Voice(f"espeak-{v}", "espeak", v, f"espeak-{v}")
    for v in ("en-us+m1", "en-us+m3", "en-us+m5", "en-us+f1", "en-us+f3", "en-gb+m2",
              "en-gb+f2", "en-gb-scotland+m4")
)
"""Eight espeak-ng variants, each counted as its own "person"."""

ALL_VOICES: dict[str, Voice] = {v.id: v for v in (*REAL_VOICES, *ESPEAK_VOICES)}

SENTENCES: tuple[str, ...] = (
    # the first five are enrollment sentences; the rest are commands to test with
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please remember that my favourite colour is green and I like tea.",
    "We walked along the beach until the sun went down behind the hills.",
    "My voice sounds like this when I speak to the house every morning.",
    "A rainbow appeared over the garden after the afternoon storm.",
    "Turn on the kitchen lights please.",
    "What is the weather like tomorrow morning?",
    "Set a timer for ten minutes.",
    "Play some jazz in the living room.",
    "Unlock the front door.",
    "How warm is it in the bedroom?",
    "Remind me to call my mother at six.",
    "Turn off all the lights downstairs.",
    "Add milk and eggs to the shopping list.",
    "Close the garage door.",
    "Start the vacuum cleaner in the hallway.",
    "Open the blinds in the study.",
    "Lower the thermostat by two degrees.",
    "Play my favourite playlist.",
    "Good night, turn everything off.",
)
ENROLL_SENTENCES = 5
"""`SENTENCES[:5]` are for enrollment, the rest for testing."""


ESPEAK_WPM = 175
"""espeak-ng's default speaking rate (words per minute)."""


def synth_available(synth: Synth) -> bool:
    """True when the synthesizer's program is installed."""
    program = {"flite": "flite", "festival": "text2wave", "espeak": "espeak-ng"}[synth]
    return shutil.which(program) is not None


def synthesize(voice: Voice, text: str, out: Path) -> Path:
    """Speak `text` with `voice` into `out` as an internal-format WAV file."""
    from voiced.audio.wav import read_wav_file, write_wav_file

    with tempfile.TemporaryDirectory(prefix="voiced-tts-") as tmp:
        raw = Path(tmp) / "raw.wav"
        stretch = [] if voice.rate == 1.0 else [f"{1 / voice.rate:.4f}"]
        if voice.synth == "flite":
            cmd = ["flite", "-voice", voice.voice, "-t", text, "-o", str(raw)]
            cmd += [a for s in stretch for a in ("--setf", f"duration_stretch={s}")]
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        elif voice.synth == "festival":
            cmd = ["text2wave", "-eval", f"(voice_{voice.voice}_diphone)", "-o", str(raw)]
            cmd += [a for s in stretch for a in ("-eval", f"(Parameter.set 'Duration_Stretch {s})")]
            subprocess.run(cmd, input=text.encode(), check=True, capture_output=True, timeout=60)
        else:
            cmd = ["espeak-ng", "-v", voice.voice, "-w", str(raw), text]
            if voice.rate != 1.0:
                cmd[1:1] = ["-s", str(round(ESPEAK_WPM * voice.rate))]
            if voice.pitch is not None:
                cmd[1:1] = ["-p", str(voice.pitch)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_wav_file(out, read_wav_file(raw))
    return out


def utterance_path(cache_dir: Path, voice: Voice, index: int) -> Path:
    """Cached file of `SENTENCES[index]` spoken by `voice`."""
    text = SENTENCES[index]
    key = f"{voice.synth}|{voice.voice}|{text}"
    if voice.rate != 1.0 or voice.pitch is not None:
        key += f"|{voice.rate}|{voice.pitch}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return cache_dir / f"{voice.id}-{index:02d}-{digest}.wav"


def utterances(
    voice: Voice | str, indices: range | list[int], cache_dir: Path, workers: int = 2
) -> list[Path]:
    """WAV files of the sentences at `indices` spoken by `voice`, made once and cached."""
    v = ALL_VOICES[voice] if isinstance(voice, str) else voice
    paths = [utterance_path(cache_dir, v, i) for i in indices]
    missing = [(i, p) for i, p in zip(indices, paths, strict=True) if not p.is_file()]
    if missing:
        log.debug("synthesizing %d utterances of %s", len(missing), v.id)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda ip: synthesize(v, SENTENCES[ip[0]], ip[1]), missing))
    return paths


def enrollment_and_test(
    voice: Voice | str, cache_dir: Path, n_enroll: int = 5, n_test: int = 3
) -> tuple[list[Path], list[Path]]:
    """(enrollment files, test files) for `voice`: different sentences in each."""
    if not 1 <= n_enroll <= ENROLL_SENTENCES:
        raise ValueError(f"n_enroll must be 1..{ENROLL_SENTENCES}")
    if not 0 <= n_test <= len(SENTENCES) - ENROLL_SENTENCES:
        raise ValueError(f"n_test must be 0..{len(SENTENCES) - ENROLL_SENTENCES}")
    enroll = utterances(voice, range(n_enroll), cache_dir)
    test = utterances(voice, range(ENROLL_SENTENCES, ENROLL_SENTENCES + n_test), cache_dir)
    return enroll, test
