"""The pure endpointing state machine, driven by synthetic VAD decisions."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from voiced.config import VadConfig
from voiced.const import VAD_FRAME_BYTES, VAD_FRAME_MS, bytes_to_ms
from voiced.errors import AudioFormatError
from voiced.models import EndReason
from voiced.vad.segmenter import (
    EndpointCheck,
    Segmenter,
    SegmenterSettings,
    SegmentEvent,
    SpeechAudio,
    SpeechDiscarded,
    SpeechEnded,
    SpeechStarted,
)

FRAME = VAD_FRAME_MS


def frame(i: int) -> bytes:
    """A distinct frame per index, so audio order and content can be checked."""
    return i.to_bytes(4, "little") * (VAD_FRAME_BYTES // 4)


def pattern(spec: str) -> list[bool]:
    """'S' speech frame, '.' silence frame; '5S' repeats: '10. 20S 30.'."""
    out: list[bool] = []
    for token in spec.split():
        count = int(token[:-1]) if len(token) > 1 else 1
        out += [token[-1] == "S"] * count
    return out


def run(seg: Segmenter, decisions: Iterable[bool], start: int = 0) -> list[SegmentEvent]:
    events: list[SegmentEvent] = []
    for i, speech in enumerate(decisions, start):
        events += seg.process(frame(i), speech)
    return events


def frames_of(audio: bytes) -> list[int]:
    return [
        int.from_bytes(audio[i : i + 4], "little") for i in range(0, len(audio), VAD_FRAME_BYTES)
    ]


def check_invariant(events: list[SegmentEvent]) -> None:
    """Started + every SpeechAudio == Ended.audio, for each utterance."""
    acc: bytearray | None = None
    for ev in events:
        if isinstance(ev, SpeechStarted):
            assert acc is None
            acc = bytearray(ev.audio)
        elif isinstance(ev, SpeechAudio):
            assert acc is not None
            acc += ev.audio
        elif isinstance(ev, SpeechEnded):
            assert acc is not None and bytes(acc) == ev.audio
            acc = None
        elif isinstance(ev, EndpointCheck):
            assert acc is not None
        else:
            acc = None


def test_one_utterance_with_pre_roll_and_end_silence() -> None:
    seg = Segmenter(SegmenterSettings())
    events = run(seg, pattern("40. 30S 40."))
    check_invariant(events)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(started) == len(ended) == 1
    # the start is declared on the 3rd speech frame (60 ms); audio begins 300 ms earlier
    assert frames_of(started[0].audio) == list(range(40 - 300 // FRAME, 43))
    end = ended[0]
    assert end.reason is EndReason.SILENCE
    assert end.speech_ms == 30 * FRAME
    assert end.trailing_silence_ms == 500
    assert frames_of(end.audio) == list(range(25, 70 + 500 // FRAME))
    assert not seg.in_speech


def test_pre_roll_is_what_exists_when_speech_starts_early() -> None:
    seg = Segmenter(SegmenterSettings())
    events = run(seg, pattern("3. 20S 30."))
    started = next(e for e in events if isinstance(e, SpeechStarted))
    assert frames_of(started.audio) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("pre_roll_ms", [300, 500, 1000])
def test_pre_roll_length_follows_settings(pre_roll_ms: int) -> None:
    seg = Segmenter(SegmenterSettings(pre_roll_ms=pre_roll_ms))
    events = run(seg, pattern("100. 20S 30."))
    started = next(e for e in events if isinstance(e, SpeechStarted))
    speech_in_start = 3 * FRAME
    assert bytes_to_ms(len(started.audio)) == pre_roll_ms + speech_in_start


def test_start_needs_enough_speech_within_the_window() -> None:
    seg = Segmenter(SegmenterSettings())
    # isolated speech frames never gather 3 within a 6-frame window
    assert run(seg, pattern("S 3. S 3. S 3. S 3.")) == []
    assert not seg.in_speech
    # with one gap inside the window they do; pre-roll starts at the first speech frame
    events = run(seg, pattern("20. S . S S"), start=100)
    assert seg.in_speech
    started = events[0]
    assert isinstance(started, SpeechStarted)
    assert frames_of(started.audio)[-4:] == [120, 121, 122, 123]
    assert bytes_to_ms(len(started.audio)) == 300 + 4 * FRAME


def test_too_little_speech_is_discarded() -> None:
    seg = Segmenter(SegmenterSettings(min_speech_ms=200))
    events = run(seg, pattern("20. 5S 30."))  # 100 ms of speech
    assert any(isinstance(e, SpeechStarted) for e in events)
    assert not any(isinstance(e, SpeechEnded) for e in events)
    assert events[-1] == SpeechDiscarded("too_short", 5 * FRAME)
    assert not seg.in_speech


def test_max_length_cuts_long_speech() -> None:
    seg = Segmenter(SegmenterSettings(max_utterance_ms=2000))
    events = run(seg, pattern("20. 200S"))
    check_invariant(events)
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert ended and ended[0].reason is EndReason.MAX_LENGTH
    assert bytes_to_ms(len(ended[0].audio)) == 2000
    assert ended[0].trailing_silence_ms == 0


def test_hangover_keeps_words_together_and_ignores_blips_in_silence() -> None:
    settings = SegmenterSettings(end_silence_ms=200)  # 10 frames
    seg = Segmenter(settings)
    # gaps shorter than the end silence inside the utterance, and single-frame speech
    # blips inside the final silence: none of them may split it or postpone the end
    events = run(seg, pattern("20. 10S . 10S 8. 10S 4. S 4. S 4."))
    check_invariant(events)
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == 1
    assert sum(isinstance(e, SpeechStarted) for e in events) == 1
    # the end came 10 frames after the last confirmed speech, blips notwithstanding
    assert frames_of(ended[0].audio)[-1] == 20 + 10 + 1 + 10 + 8 + 10 + 10 - 1
    assert ended[0].trailing_silence_ms == 200
    assert ended[0].speech_ms == 32 * FRAME


def test_two_utterances_and_the_tail_serves_as_pre_roll() -> None:
    seg = Segmenter(SegmenterSettings())
    events = run(seg, pattern("20. 20S 30. 20S 30."))
    check_invariant(events)
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == 2
    second_start = [e for e in events if isinstance(e, SpeechStarted)][1]
    assert bytes_to_ms(len(second_start.audio)) == 300 + 3 * FRAME


def test_stop_ends_or_discards_and_resets() -> None:
    seg = Segmenter(SegmenterSettings())
    assert seg.stop(EndReason.STOP_LISTENING) == []
    events = run(seg, pattern("20. 15S"))
    assert seg.in_speech
    stopped = seg.stop(EndReason.STOP_LISTENING)
    check_invariant(events + stopped)
    assert len(stopped) == 1 and isinstance(stopped[0], SpeechEnded)
    assert stopped[0].reason is EndReason.STOP_LISTENING
    assert stopped[0].speech_ms == 15 * FRAME
    assert not seg.in_speech
    run(seg, pattern("20. 4S"))
    assert seg.stop(EndReason.SHUTDOWN) == [SpeechDiscarded("too_short", 4 * FRAME)]
    # reset also forgets the pre-roll
    run(seg, pattern("20."))
    seg.reset()
    started = run(seg, pattern("3S"))[0]
    assert isinstance(started, SpeechStarted) and len(started.audio) == 3 * VAD_FRAME_BYTES


def test_invariant_holds_on_a_random_decision_stream() -> None:
    import random

    rnd = random.Random(7)
    decisions: list[bool] = []
    speaking = False
    for _ in range(3000):
        if rnd.random() < 0.03:
            speaking = not speaking
        decisions.append(speaking if rnd.random() > 0.15 else not speaking)
    seg = Segmenter(SegmenterSettings(max_utterance_ms=1500))
    events = run(seg, decisions)
    events += seg.stop(EndReason.SHUTDOWN)
    check_invariant(events)
    ends = [e for e in events if isinstance(e, SpeechEnded | SpeechDiscarded)]
    assert len(ends) == sum(isinstance(e, SpeechStarted) for e in events) > 5


def test_wrong_frame_size_is_an_audio_error() -> None:
    with pytest.raises(AudioFormatError) as info:
        Segmenter(SegmenterSettings()).process(b"\x00" * 10, True)
    assert info.value.code == "frame_size"


def test_settings_from_config_use_the_preset() -> None:
    settings = SegmenterSettings.from_config(VadConfig(preset="patient", pre_roll_ms=400))
    assert settings.end_silence_ms == 900
    assert settings.pre_roll_ms == 400
    assert SegmenterSettings.from_config(VadConfig(end_silence_ms=700)).end_silence_ms == 700


# ---- adaptive endpointing -------------------------------------------------------------

ADAPTIVE = SegmenterSettings(min_silence_ms=200)


def feed(seg: Segmenter, spec: str, start: int = 0,
         judge: dict[int, float] | None = None) -> list[SegmentEvent]:
    """Run `spec`; at each EndpointCheck whose index (0, 1, ...) is in `judge`, answer
    end_after(epoch, judge[index]) as a site does, at once."""
    events: list[SegmentEvent] = []
    checks = 0
    for i, speech in enumerate(pattern(spec), start):
        out = seg.process(frame(i), speech)
        events += out
        for ev in out:
            if isinstance(ev, EndpointCheck):
                if judge is not None and checks in judge:
                    events += seg.end_after(ev.epoch, judge[checks])
                checks += 1
    return events


def test_fixed_endpointing_never_asks() -> None:
    events = run(Segmenter(SegmenterSettings()), pattern("40. 30S 40."))
    assert not any(isinstance(e, EndpointCheck) for e in events)


def test_a_complete_command_ends_at_the_minimum_silence() -> None:
    seg = Segmenter(ADAPTIVE)
    events = feed(seg, "40. 30S 40.", judge={0: 200})
    check_invariant(events)
    checks = [e for e in events if isinstance(e, EndpointCheck)]
    assert len(checks) == 1 and checks[0].silence_ms == 200
    end = next(e for e in events if isinstance(e, SpeechEnded))
    assert end.reason is EndReason.COMPLETE
    assert end.trailing_silence_ms == 200
    assert frames_of(end.audio)[-1] == 70 + 200 // FRAME - 1
    assert not seg.in_speech


def test_a_later_allowance_ends_when_the_silence_reaches_it() -> None:
    seg = Segmenter(ADAPTIVE)
    events = feed(seg, "40. 30S 40.", judge={0: 350})
    end = next(e for e in events if isinstance(e, SpeechEnded))
    assert end.reason is EndReason.COMPLETE
    assert end.trailing_silence_ms == 360  # whole frames: 18 x 20 ms
    # never later than the configured silence
    seg = Segmenter(ADAPTIVE)
    end = next(e for e in feed(seg, "40. 30S 40.", judge={0: 5000})
               if isinstance(e, SpeechEnded))
    assert end.reason is EndReason.SILENCE and end.trailing_silence_ms == 500


def test_without_an_answer_the_configured_silence_ends_it() -> None:
    seg = Segmenter(ADAPTIVE)
    events = feed(seg, "40. 30S 40.")
    end = next(e for e in events if isinstance(e, SpeechEnded))
    assert end.reason is EndReason.SILENCE
    assert end.trailing_silence_ms == 500


def test_a_pause_inside_the_command_is_judged_afresh_after_speech_resumes() -> None:
    # "set the lights to" ... pause ... "fifty percent": the first check is answered
    # with nothing (a prefix); the second silence is complete
    seg = Segmenter(ADAPTIVE)
    events = feed(seg, "40. 30S 15. 20S 40.", judge={1: 200})
    check_invariant(events)
    checks = [e for e in events if isinstance(e, EndpointCheck)]
    assert len(checks) == 2 and checks[0].epoch != checks[1].epoch
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == 1 and ended[0].reason is EndReason.COMPLETE
    assert ended[0].speech_ms == 50 * FRAME


def test_a_stale_answer_is_ignored() -> None:
    seg = Segmenter(ADAPTIVE)
    events = feed(seg, "40. 30S 10.")
    check = next(e for e in events if isinstance(e, EndpointCheck))
    # speech resumed before the answer came: that silence is over
    events += run(seg, pattern("5S 3."), start=80)
    assert seg.end_after(check.epoch, 200) == []
    assert seg.in_speech
    # an answer for an utterance that already ended is ignored too
    seg = Segmenter(ADAPTIVE)
    events = feed(seg, "40. 30S 40.")
    check = next(e for e in events if isinstance(e, EndpointCheck))
    assert not seg.in_speech
    assert seg.end_after(check.epoch, 200) == []


def test_blips_in_the_silence_do_not_restart_the_check() -> None:
    seg = Segmenter(ADAPTIVE)
    events = feed(seg, "40. 30S 5. S 30.", judge={0: 200})
    checks = [e for e in events if isinstance(e, EndpointCheck)]
    assert len(checks) == 1
    end = next(e for e in events if isinstance(e, SpeechEnded))
    assert end.reason is EndReason.COMPLETE and end.trailing_silence_ms == 200


def test_adaptive_settings_from_config() -> None:
    assert SegmenterSettings.from_config(VadConfig()).min_silence_ms is None
    adaptive = VadConfig(endpoint="adaptive", min_silence_ms=180)
    assert SegmenterSettings.from_config(adaptive).min_silence_ms == 180
    assert adaptive.continuable_silence_ms == (180 + 500) // 2
    with pytest.raises(ValueError):
        VadConfig(endpoint="early")  # type: ignore[arg-type]


def test_after_the_start_of_a_command_the_silence_may_last_longer() -> None:
    settings = SegmenterSettings(min_silence_ms=200, max_silence_ms=1000)
    # a 600 ms pause after "set the lights to": the first silence may last 1000 ms,
    # the silence after "fifty percent" 200 ms
    events = feed(Segmenter(settings), "40. 30S 30. 20S 60.", judge={0: 1000, 1: 200})
    check_invariant(events)
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == 1 and ended[0].reason is EndReason.COMPLETE
    assert ended[0].speech_ms == 50 * FRAME
    # unanswered, the same pause ends the utterance at the usual 500 ms
    events = feed(Segmenter(settings), "40. 30S 30. 20S 60.")
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(ended) == 2 and ended[0].reason is EndReason.SILENCE
    # a long wait ends with `silence`, and never after max_silence_ms
    events = feed(Segmenter(settings), "40. 30S 80.", judge={0: 5000})
    (end,) = [e for e in events if isinstance(e, SpeechEnded)]
    assert end.reason is EndReason.SILENCE and end.trailing_silence_ms == 1000


def test_the_waits_for_each_judgement() -> None:
    vad = VadConfig(endpoint="adaptive")
    assert vad.adaptive_silence_ms("complete") == 200
    assert vad.adaptive_silence_ms("continuable") == 350
    assert vad.adaptive_silence_ms("prefix") == 1000
    assert vad.adaptive_silence_ms("none") is None
    assert vad.adaptive_silence_ms(None) is None
    patient = VadConfig(endpoint="adaptive", preset="patient", max_silence_ms=700)
    assert patient.adaptive_silence_ms("prefix") == 900  # never less than the preset's
    assert SegmenterSettings.from_config(patient).max_silence_ms == 900
