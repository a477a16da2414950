"""Simulated rooms for arbitration: one spoken command as each satellite hears it, by sox.

A `Room` has a speaker, a reverberant field and 2-4 satellites at different distances.
Each satellite's recording is rendered with sox from the same dry command:

* the direct sound, `pad`ded by the time sound takes to travel the distance and scaled by
  1/distance (`-v` of `sox -m`);
* the reverberation, sox's `reverb -w` (wet only) of the same command, at a level that
  does not depend on the distance (a diffuse field: direct and reverberant energy are
  equal at the room's critical distance);
* noise, sox's `synth` (brown, pink or white noise, or `tv`: loud music, chords of plucked
  strings over pink noise, with a tremolo) at the satellite's own level;
* the satellite's microphone gain (hardware differs: a louder satellite is not nearer).

Each satellite's stream may also start late (`latency_ms`: buffering, Wi-Fi), so the first
satellite to hear speech is not always the nearest. A satellite with `hears=False` is out
of earshot (its recording is its noise only). sox is the only external program.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from voiced.audio.wav import read_wav_file
from voiced.const import SAMPLE_RATE

SPEED_OF_SOUND = 343.0
"""Metres per second."""
SPEECH_AT_1M_DBFS = -26.0
"""Level of the command's speech heard directly at 1 m (RMS over the whole command)."""
LEAD_S = 1.5
"""Noise before the command (every satellite's noise floor settles first)."""
TAIL_S = 1.2
"""Noise after it (the endpointer's silence)."""
NOISES = ("brown", "pink")
"""Room noise: brown (ventilation, a fridge, traffic) or pink (fans, a busy house)."""
SELF_NOISE_DBFS = -70.0
"""Every microphone's own hiss (white, before its gain): no satellite hears silence."""
SOX_NOISE = {"brown": "brownnoise", "pink": "pinknoise", "white": "whitenoise"}


@dataclass(frozen=True, slots=True)
class Mic:
    """One satellite in a room."""

    site: str
    distance_m: float
    """From the speaker."""
    noise: str = "brown"
    """brown, pink, white, or tv (loud music)."""
    noise_dbfs: float = -60.0
    """RMS level of its noise, before the microphone gain."""
    self_noise_dbfs: float = SELF_NOISE_DBFS
    """RMS level of its microphone's own white hiss, before the gain."""
    gain_db: float = 0.0
    """Its microphone's gain."""
    latency_ms: float = 0.0
    """How late its stream starts (transport, buffering)."""
    hears: bool = True
    """False: out of earshot, it hears its noise only."""
    wall_db: float = 0.0
    """Attenuation of the speech on its way (0: in the speaker's room; a neighbouring
    room hears it through a doorway)."""


@dataclass(frozen=True, slots=True)
class Room:
    """A speaker, a room and its satellites."""

    name: str
    mics: tuple[Mic, ...]
    critical_m: float = 1.0
    """Distance where direct and reverberant sound are equally loud."""
    reverberance: float = 50.0
    """sox reverb's reverberance (0-100 %): the length of the tail."""
    speech: Path = field(default=Path())
    """The dry command (a 16 kHz mono WAV)."""

    @property
    def nearest(self) -> Mic:
        """The satellite that should answer."""
        return min((m for m in self.mics if m.hears), key=lambda m: m.distance_m)

    def ratio(self) -> float:
        """Second-nearest distance over the nearest (inf: one satellite hears)."""
        heard = sorted(m.distance_m for m in self.mics if m.hears)
        return heard[1] / heard[0] if len(heard) > 1 else math.inf


def sox() -> str:
    """The sox program (RuntimeError when it is not installed)."""
    exe = shutil.which("sox")
    if exe is None:
        raise RuntimeError("sox is not installed (Debian package sox)")
    return exe


def _run(*args: str | Path) -> None:
    subprocess.run([sox(), *map(str, args)], check=True, capture_output=True, timeout=60)


def _rms(path: Path) -> float:
    pcm = np.frombuffer(read_wav_file(path), dtype="<i2").astype(np.float64) / 32768
    return float(np.sqrt(np.mean(np.square(pcm)))) if pcm.size else 0.0


CHORDS = (("C3", "E3", "G3"), ("A2", "C3", "E3"), ("F2", "A2", "C3"), ("G2", "B2", "D3"))
CHORD_S = 0.5


def _noise(kind: str, seconds: float, out: Path, seed: int) -> None:
    fmt = ("-n", "-r", str(SAMPLE_RATE), "-b", "16")
    length = f"{seconds:.3f}"
    if kind != "tv":
        _run("-D", *fmt, "-c", "1", out, "synth", length, SOX_NOISE[kind])
        return
    # a television playing music: plucked chords (one per channel, mixed down) changing
    # every half second, over pulsing pink noise; loud, and never speech
    order = list(CHORDS)
    random.Random(seed).shuffle(order)
    chain: list[str] = []
    for k in range(math.ceil(seconds / CHORD_S)):
        chain += [*([":"] if chain else []), "synth", f"{CHORD_S}",
                  *(x for note in order[k % len(order)] for x in ("pluck", note))]
    chords = out.with_suffix(".chords3.wav")
    _run(*fmt, "-c", "3", chords, *chain)
    mono = out.with_suffix(".chords.wav")
    _run(chords, "-c", "1", mono)
    hiss = out.with_suffix(".hiss.wav")
    _run("-D", *fmt, "-c", "1", hiss, "synth", length, "pinknoise", "tremolo", "5", "60")
    _run("-m", "-v", "1.0", mono, "-v", "0.3", hiss, out, "trim", "0", length)


def render(room: Room, workdir: Path, seed: int = 0) -> dict[str, bytes]:
    """Each satellite's recording (internal-format PCM, all the same length)."""
    workdir.mkdir(parents=True, exist_ok=True)
    dry = workdir / "dry.wav"
    _run(room.speech, "-r", str(SAMPLE_RATE), "-b", "16", "-c", "1", dry,
         "pad", f"{LEAD_S}", f"{TAIL_S}")
    seconds = len(read_wav_file(dry)) / 2 / SAMPLE_RATE + 0.1
    dry_rms = _rms(room.speech)
    out: dict[str, bytes] = {}
    for i, mic in enumerate(room.mics):
        base = workdir / mic.site
        noise = base.with_suffix(".noise.wav")
        _noise(mic.noise, seconds, noise, seed * 31 + i)
        noise_rms = _rms(noise) or 1.0
        gain = 10 ** (mic.gain_db / 20)
        hiss = base.with_suffix(".hiss.wav")
        _noise("white", seconds, hiss, seed * 31 + i)
        parts: list[str | Path] = [
            "-v", f"{gain * 10 ** (mic.noise_dbfs / 20) / noise_rms:.6f}", noise,
            "-v", f"{gain * 10 ** (mic.self_noise_dbfs / 20) / (_rms(hiss) or 1.0):.6f}", hiss]
        if mic.hears:
            direct = base.with_suffix(".direct.wav")
            _run(dry, direct, "pad", f"{mic.distance_m / SPEED_OF_SOUND:.4f}")
            wet = base.with_suffix(".wet.wav")
            # a different pre-delay and room scale per satellite: decorrelated tails
            _run(direct, wet, "reverb", "-w", f"{room.reverberance:.0f}", "50",
                 f"{60 + 40 * ((i * 37) % 10) / 10:.0f}", "100", f"{5 + 3 * i}")
            target = 10 ** (SPEECH_AT_1M_DBFS / 20)
            target *= 10 ** (-mic.wall_db / 20)
            direct_level = target / mic.distance_m / (dry_rms or 1.0)
            # a diffuse field, as loud everywhere as the direct sound is at the critical
            # distance (the wet file's level relative to its input sets the scale)
            wet_level = target / room.critical_m / ((_rms(wet) or 1e-9) / _rms(direct) * dry_rms)
            parts += ["-v", f"{gain * direct_level:.6f}", direct,
                      "-v", f"{gain * wet_level:.6f}", wet]
        mixed = base.with_suffix(".wav")
        _run("-m", *parts, "-b", "16", mixed, "trim", "0", f"{seconds:.3f}")
        out[mic.site] = read_wav_file(mixed)
    longest = max(len(p) for p in out.values())
    return {site: pcm + bytes(longest - len(pcm)) for site, pcm in out.items()}


def dry_command(text: str, voice: str, out: Path) -> Path:
    """`text` spoken by espeak-ng's `voice`, as a 16 kHz mono WAV at `out` (no noise: the
    room adds it)."""
    raw = out.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True,
                   capture_output=True, timeout=60)
    _run(raw, "-r", str(SAMPLE_RATE), "-b", "16", "-c", "1", out)
    raw.unlink()
    return out


def random_room(name: str, speech: Path, rng: random.Random, *, satellites: int | None = None,
                silent: bool = False, tv: bool = False, same_room: float = 0.4) -> Room:
    """A home drawn at random around one speaker: 2-4 satellites of one group. The first
    is in the speaker's room, each other one too with probability `same_room`, else in a
    neighbouring room that hears through a doorway (6-15 dB down). Same room: 0.4-5 m from
    the speaker, the room's noise (one colour, -75 to -45 dBFS) within ±2 dB; neighbouring
    room: 2.5-8 m, a noise level of its own. The room has a critical distance of 0.5-1.5 m
    and a reverberance of 20-80 %; each satellite its own microphone gain (±6 dB) and stream
    latency (0-120 ms). `silent` adds a satellite out of earshot; `tv` puts a loud
    television (-30 to -20 dBFS) next to the farthest satellite."""
    count = satellites or rng.randint(2, 4)
    colour = rng.choice(NOISES)
    level = rng.uniform(-75, -45)

    def mic(i: int, near: bool) -> Mic:
        return Mic(f"{name}-s{i}",
                   round(rng.uniform(0.4, 5.0) if near else rng.uniform(2.5, 8.0), 2),
                   noise=colour if near else rng.choice(NOISES),
                   noise_dbfs=round(level + rng.uniform(-2, 2) if near
                                    else rng.uniform(-75, -45), 1),
                   self_noise_dbfs=round(SELF_NOISE_DBFS + rng.uniform(-3, 3), 1),
                   gain_db=round(rng.uniform(-6, 6), 1), latency_ms=round(rng.uniform(0, 120)),
                   wall_db=0.0 if near else round(rng.uniform(6, 15), 1))

    mics = [mic(i, i == 0 or rng.random() < same_room) for i in range(count)]
    if tv:
        far = max(range(count), key=lambda i: mics[i].distance_m)
        mics[far] = replace(mics[far], noise="tv", noise_dbfs=round(rng.uniform(-30, -20), 1))
    if silent:
        mics.append(replace(mic(count, False), distance_m=50.0, hears=False))
    rng.shuffle(mics)
    return Room(name, tuple(mics), round(rng.uniform(0.5, 1.5), 2),
                round(rng.uniform(20, 80)), speech)
