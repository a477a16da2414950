"""The acoustic conditions of `voiced bench accuracy`: each does what its name says,
measured independently of the module's own helpers."""

from __future__ import annotations

import numpy as np
import pytest

from voiced.bench import conditions as cond
from voiced.const import SAMPLE_RATE


def speechlike(seed: int, seconds: float = 2.0) -> np.ndarray:
    """A voiced, syllabic signal with silence around it (a stand-in for a talker)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pitch = 100 + 80 * rng.random() + 15 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 10))
    syllables = np.clip(np.sin(2 * np.pi * (2.5 + rng.random()) * t), 0, None)
    pad = np.zeros(SAMPLE_RATE // 4)
    return np.concatenate([pad, 0.2 * voice * syllables, pad])


def db_ratio(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * float(np.log10(np.mean(a**2) / np.mean(b**2)))


TALKERS = [speechlike(s) for s in range(1, 7)]


@pytest.mark.parametrize("noise", cond.NOISES)
@pytest.mark.parametrize("snr", [20, 15, 10, 0])
@pytest.mark.parametrize("room", ["", "reverb-medium+"])
def test_noise_is_mixed_at_the_target_snr_over_the_speech(noise: str, snr: int,
                                                          room: str) -> None:
    name = f"{room}{noise}-{snr}"
    out = cond.render(cond.parse_condition(name), speechlike(0), np.random.default_rng(7),
                      TALKERS)
    a, b = out.span
    noise_part = out.mix - out.speech
    assert db_ratio(out.speech[a:b], noise_part[a:b]) == pytest.approx(snr, abs=0.5)
    # the noise is there before and after the speech too: the VAD has to cope with it
    assert np.sqrt(np.mean(out.mix[:a] ** 2)) > 0
    assert np.sqrt(np.mean(out.mix[b:] ** 2)) > 0


def test_clean_speech_is_level_normalized_and_padded_with_silence() -> None:
    out = cond.render(cond.parse_condition("clean"), 3.0 * speechlike(0),
                      np.random.default_rng(0))
    a, b = out.span
    level = 20 * np.log10(np.sqrt(np.mean(out.mix[a:b] ** 2)))
    assert level == pytest.approx(cond.SPEECH_DBFS, abs=0.1)
    assert a == int(cond.LEAD_S * SAMPLE_RATE)
    assert len(out.mix) - b == int(cond.TAIL_S * SAMPLE_RATE)
    assert not out.mix[:a].any() and not out.mix[b:].any()


def test_quiet_speaker_is_25_db_down() -> None:
    rng = np.random.default_rng(0)
    clean = cond.render(cond.parse_condition("clean"), speechlike(0), rng)
    quiet = cond.render(cond.parse_condition("quiet"), speechlike(0), rng)
    assert db_ratio(clean.mix, quiet.mix) == pytest.approx(25.0, abs=0.01)
    assert db_ratio(clean.mix, cond.render(cond.parse_condition("quiet-10"), speechlike(0),
                                           rng).mix) == pytest.approx(10.0, abs=0.01)


def test_clipping_clips() -> None:
    out = cond.render(cond.parse_condition("clip"), speechlike(0), np.random.default_rng(0))
    linear = out.speech * 10 ** (cond.CLIP_DB / 20)
    assert np.abs(linear).max() > 1.5  # 20 dB of gain drives the peaks past full scale
    assert np.abs(out.mix).max() == 1.0
    flat = np.abs(out.mix) >= 1.0
    a, b = out.span
    assert flat[a:b].mean() > 0.05  # a good part of the speech sits at the limit
    assert np.array_equal(out.mix[~flat], linear[~flat])  # below the limit: only the gain
    pcm = np.frombuffer(out.pcm(), dtype="<i2")
    assert pcm.max() == 32767 and pcm.min() == -32767


def test_rooms_keep_the_level_and_ring_longer_as_they_grow() -> None:
    tails = []
    for room in cond.ROOMS:
        out = cond.render(cond.parse_condition(f"reverb-{room}"), speechlike(0),
                          np.random.default_rng(3))
        a, b = out.span
        clean = cond.prepare(speechlike(0))[0]
        assert db_ratio(out.mix[a:b], clean[a:b]) == pytest.approx(0.0, abs=0.01)
        late = out.mix[b + SAMPLE_RATE // 5:b + SAMPLE_RATE // 2]  # 200-500 ms after
        tails.append(float(np.mean(late**2)))
        assert not np.allclose(out.mix[a:b], clean[a:b], atol=1e-3)
    assert tails[0] < tails[1] < tails[2]


def test_impulse_response_has_the_rooms_decay_and_direct_to_reverberant_ratio() -> None:
    for room in cond.ROOMS.values():
        h = cond.room_impulse(room, np.random.default_rng(5))
        assert h[0] == 1.0
        reverberant = float(np.sum(h[1:] ** 2))
        assert 10 * np.log10(1.0 / reverberant) == pytest.approx(room.drr_db, abs=0.01)
        # energy of the second half of the response is about 30 dB below the first
        half = len(h) // 2
        drop = 10 * np.log10(np.sum(h[1:half] ** 2) / np.sum(h[half:] ** 2))
        assert 25 < drop < 45


def test_rendering_is_deterministic_for_a_seed() -> None:
    c = cond.parse_condition("reverb-large+babble-10")
    one = cond.render(c, speechlike(0), np.random.default_rng(11), TALKERS)
    two = cond.render(c, speechlike(0), np.random.default_rng(11), TALKERS)
    other = cond.render(c, speechlike(0), np.random.default_rng(12), TALKERS)
    assert np.array_equal(one.mix, two.mix)
    assert not np.array_equal(one.mix, other.mix)


def test_noises_differ_in_colour() -> None:
    rng = np.random.default_rng(0)
    n = 4 * SAMPLE_RATE

    def low_share(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
        return float(spectrum[freqs < 500].sum() / spectrum.sum())

    assert low_share(cond.white(n, rng)) < 0.1
    assert low_share(cond.brown(n, rng)) > 0.9
    for kind in cond.NOISES:
        x = cond.noise_signal(kind, n, rng, TALKERS)
        assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="babble needs"):
        cond.babble(n, [], rng)


@pytest.mark.parametrize("bad", ["reverb-huge", "pink-10", "white-", "clean+quiet",
                                 "white-10+brown-10", "quiet-loud", ""])
def test_a_bad_condition_name_names_the_bad_part(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown condition part"):
        cond.parse_condition(bad)


def test_every_default_condition_parses_to_its_own_name() -> None:
    for name in cond.DEFAULT_CONDITIONS:
        assert cond.parse_condition(name).name == name
    far = cond.parse_condition("reverb-medium+brown-15")
    assert far.room == cond.ROOMS["medium"] and far.noise == "brown" and far.snr_db == 15
    assert cond.parse_condition("CLIP-6").clip_db == 6.0
