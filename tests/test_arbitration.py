"""The arbiter and its measurements, pure: no asyncio, no network, time as an argument.

Rounds, contests, deadlines, swaps, conversations and late starts through
`voiced.arbitration.Arbiter`; the speech-band meter (`voiced.audio.levels`) on synthetic
signals with known levels and on the espeak-ng fixtures made near and far with webrtcvad.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from support import FIXTURES

from voiced.arbitration import (
    Anchor,
    Announce,
    Arbiter,
    ArbitrationSettings,
    Decision,
    Fate,
    Lose,
    Policy,
    Reason,
    Release,
    Verdict,
    Win,
    combined_score,
)
from voiced.audio.levels import Evidence, Meter, frame_levels
from voiced.audio.wav import read_wav_file
from voiced.const import SAMPLE_RATE, VAD_FRAME_BYTES, VAD_FRAME_SAMPLES

GROUPS = {"kitchen": "home", "hall": "home", "lounge": "home", "attic": "top"}


def ev(quality: float, level: float | None = None, ratio: float = 1.0, clipped: float = 0.0,
       modulation: float | None = None, onset: float | None = None) -> Evidence:
    """Evidence that scores higher the higher `quality` is (its SNR, in dB)."""
    level = -60.0 + quality if level is None else level
    return Evidence(quality, level, level - quality,
                    quality / 3 if modulation is None else modulation,
                    quality / 2 if onset is None else onset, ratio, clipped, 600.0,
                    flux_db=quality / 10, rise_db=quality / 4, band_modulation_db=quality / 3)


class Room:
    """An arbiter with evidence per site that a test sets."""

    def __init__(self, policy: Policy = Policy.SCORE, **settings: float) -> None:
        self.arbiter = Arbiter(ArbitrationSettings(policy, **settings), GROUPS)
        self.evidence: dict[str, Evidence | None] = {}
        self.asked: list[str] = []

    def measure(self, site: str) -> Evidence | None:
        self.asked.append(site)
        return self.evidence.get(site)

    def start(self, site: str, at: float) -> tuple[Verdict, list[object]]:
        verdict, actions = self.arbiter.start(site, f"sid-{site}", at, self.measure)
        return verdict, list(actions)

    def ready(self, site: str, at: float) -> list[object]:
        return list(self.arbiter.ready(site, at, self.measure))

    def end(self, site: str, at: float, spoke: bool = True) -> tuple[Fate, list[object]]:
        fate, actions = self.arbiter.ended(site, at, spoke, self.measure)
        return fate, list(actions)

    def due(self, at: float) -> list[object]:
        return list(self.arbiter.due(at, self.measure))


def decision(actions: list[object]) -> Decision:
    found = [a.decision for a in actions if isinstance(a, Announce)]
    assert len(found) == 1, actions
    return found[0]


def test_a_site_in_no_group_is_never_arbitrated() -> None:
    room = Room()
    assert room.start("garage", 0.0) == (Verdict.GO, [])
    assert room.end("garage", 1.0) == (Fate.SUBMIT, [])
    assert room.end("garage", 2.0, spoke=False) == (Fate.NONE, [])
    assert room.asked == []


def test_a_single_satellite_goes_at_once_and_is_never_scored() -> None:
    room = Room()
    assert room.start("kitchen", 0.0) == (Verdict.GO, [])
    assert room.ready("kitchen", 0.4) == []
    assert room.end("kitchen", 1.5) == (Fate.SUBMIT, [])
    assert room.asked == [] and room.arbiter.next_due() is None


def test_two_satellites_the_one_that_hears_best_wins() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(12.0), "hall": ev(30.0)}
    assert room.start("kitchen", 0.0) == (Verdict.GO, [])
    verdict, actions = room.start("hall", 0.05)
    assert verdict == Verdict.WAIT and actions == []
    assert room.arbiter.next_due() == pytest.approx(0.75)  # window_ms after the contest
    assert room.ready("kitchen", 0.4) == []  # hall has not heard enough yet
    actions = room.ready("hall", 0.45)
    made = decision(actions)
    assert made.winner == "hall" and made.reason == Reason.SCORED
    assert made.losers == ("kitchen",)
    assert [type(a) for a in actions] == [Announce, Lose, Win]
    assert {c.site: c.score for c in made.candidates} == {
        "kitchen": pytest.approx(combined_score(ev(12.0))),
        "hall": pytest.approx(combined_score(ev(30.0)))}
    # the loser's utterance is kept (a swap may need it) until the winner's runs
    assert room.end("kitchen", 1.6) == (Fate.KEEP, [])
    fate, actions = room.end("hall", 1.7)
    assert fate == Fate.SUBMIT and actions == [Release("kitchen")]
    assert room.arbiter.next_due() is None


def test_the_leader_keeps_its_place_when_it_hears_best() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(30.0), "hall": ev(10.0), "lounge": ev(20.0)}
    room.start("kitchen", 0.0)
    assert room.start("hall", 0.02)[0] == Verdict.WAIT
    assert room.start("lounge", 0.1)[0] == Verdict.WAIT
    room.ready("kitchen", 0.4)
    room.ready("hall", 0.42)
    made = decision(room.ready("lounge", 0.5))
    assert made.winner == "kitchen" and set(made.losers) == {"hall", "lounge"}
    # the losers speak on after the winner's utterance is taken: released at their end
    assert room.end("kitchen", 1.5) == (Fate.SUBMIT, [])
    assert room.end("hall", 1.6) == (Fate.RELEASE, [])
    assert room.end("lounge", 1.7) == (Fate.RELEASE, [])


def test_the_window_closes_on_a_candidate_that_never_has_enough_speech() -> None:
    room = Room(window_ms=300)
    room.evidence = {"kitchen": ev(25.0), "hall": None}
    room.start("kitchen", 0.0)
    room.start("hall", 0.1)
    room.ready("kitchen", 0.4)
    assert room.due(0.39) == []
    made = decision(room.due(0.4))
    assert made.reason == Reason.DEADLINE and made.winner == "kitchen"
    hall = next(c for c in made.candidates if c.site == "hall")
    assert hall.score is None and hall.evidence is None and not hall.won


def test_an_utterance_that_ends_before_the_decision_waits_for_it() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(25.0), "hall": ev(10.0)}
    room.start("kitchen", 0.0)
    room.start("hall", 0.3)
    assert room.end("kitchen", 0.65) == (Fate.PARK, [])
    actions = room.ready("hall", 0.7)
    assert decision(actions).winner == "kitchen"
    # the parked winner runs now (Win on an ended utterance); hall still speaks
    assert [type(a) for a in actions] == [Announce, Lose, Win]
    assert room.end("hall", 1.2) == (Fate.RELEASE, [])


def test_a_parked_loser_is_kept_and_released_when_the_winner_runs() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(5.0), "hall": ev(25.0)}
    room.start("kitchen", 0.0)
    room.start("hall", 0.3)
    assert room.end("kitchen", 0.65)[0] == Fate.PARK
    actions = room.ready("hall", 0.7)
    assert decision(actions).winner == "hall"
    assert Lose("kitchen", decision(actions)) in actions
    assert room.end("hall", 1.5) == (Fate.SUBMIT, [Release("kitchen")])


def test_a_winner_whose_vad_finds_no_speech_is_swapped_for_the_best_loser() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(30.0), "hall": ev(12.0), "lounge": ev(20.0)}
    room.start("kitchen", 0.0)
    room.start("hall", 0.0)
    room.start("lounge", 0.0)
    for site in ("kitchen", "hall", "lounge"):
        actions = room.ready(site, 0.4)
    assert decision(actions).winner == "kitchen"
    assert room.end("hall", 0.9) == (Fate.KEEP, [])
    assert room.end("lounge", 1.0) == (Fate.KEEP, [])
    fate, actions = room.end("kitchen", 1.1, spoke=False)
    swap = decision(actions)
    assert fate == Fate.NONE and swap.reason == Reason.SWAP and swap.winner == "lounge"
    # the kept lounge utterance runs (Win), hall's is released: one answer
    assert actions[1:] == [Win("lounge", swap), Release("hall")]
    assert room.arbiter.next_due() is None


def test_a_swap_to_a_loser_still_speaking_feeds_it_from_then_on() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(30.0), "hall": ev(12.0)}
    room.start("kitchen", 0.0)
    room.start("hall", 0.0)
    room.ready("kitchen", 0.4)
    room.ready("hall", 0.4)
    fate, actions = room.end("kitchen", 0.5, spoke=False)
    assert fate == Fate.NONE
    assert decision(actions).winner == "hall" and isinstance(actions[-1], Win)
    assert room.end("hall", 1.5) == (Fate.SUBMIT, [])


def test_a_loser_kept_too_long_is_released() -> None:
    room = Room(keep_ms=1000)
    room.evidence = {"kitchen": ev(30.0), "hall": ev(12.0)}
    room.start("kitchen", 0.0)
    room.start("hall", 0.0)
    room.ready("kitchen", 0.4)
    room.ready("hall", 0.4)
    assert room.end("hall", 1.0) == (Fate.KEEP, [])
    assert room.arbiter.next_due() == pytest.approx(2.0)
    assert room.due(2.0) == [Release("hall")]
    assert room.end("kitchen", 9.0) == (Fate.SUBMIT, [])  # nothing left to release


def test_a_satellite_in_a_conversation_owns_its_groups_next_utterance() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(5.0), "hall": ev(40.0)}
    room.arbiter.converse("kitchen", 10.0, for_s=8.0)
    verdict, actions = room.start("hall", 11.0)  # hall hears the answer first, and better
    assert verdict == Verdict.LOSE
    made = decision(actions)
    assert made.reason == Reason.CONVERSATION and made.winner == "kitchen"
    assert room.start("kitchen", 11.1) == (Verdict.GO, [])
    verdict, actions = room.start("lounge", 11.2)
    assert verdict == Verdict.LOSE and decision(actions).reason == Reason.CONVERSATION
    assert room.end("hall", 12.0) == (Fate.RELEASE, [])
    assert room.end("kitchen", 12.1) == (Fate.SUBMIT, [])
    assert room.asked == []  # nobody was scored: the conversation decided


def test_a_conversation_that_gets_no_answer_frees_the_group() -> None:
    room = Room()
    room.arbiter.converse("kitchen", 0.0, for_s=8.0)
    assert room.start("hall", 8.5) == (Verdict.GO, [])
    # another group is not affected by a conversation in this one
    room.arbiter.converse("kitchen", 20.0, for_s=8.0)
    assert room.start("attic", 21.0) == (Verdict.GO, [])


def test_a_start_after_the_command_was_taken_stays_quiet() -> None:
    room = Room(window_ms=500)
    room.start("kitchen", 0.0)
    assert room.end("kitchen", 1.5) == (Fate.SUBMIT, [])
    verdict, actions = room.start("hall", 1.8)  # the far satellite's late tail
    assert verdict == Verdict.LOSE and decision(actions).reason == Reason.LATE
    assert room.end("hall", 2.5) == (Fate.RELEASE, [])
    assert room.start("hall", 2.1 + 0.5)[0] == Verdict.GO  # the group is free again
    # the winner itself may speak again at once: a new command
    room2 = Room()
    room2.start("kitchen", 0.0)
    room2.end("kitchen", 1.5)
    assert room2.start("kitchen", 1.7) == (Verdict.GO, [])


def test_a_decided_winner_is_challenged_by_a_newcomer_that_hears_better() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(20.0), "hall": ev(10.0), "lounge": ev(35.0)}
    room.start("kitchen", 0.0)
    room.start("hall", 0.0)
    room.ready("kitchen", 0.4)
    assert decision(room.ready("hall", 0.4)).winner == "kitchen"
    verdict, actions = room.start("lounge", 0.6)
    # the kitchen keeps the evidence of its onset: the lounge's own decides
    assert verdict == Verdict.WAIT and actions == []
    actions = room.ready("lounge", 1.0)
    made = decision(actions)
    assert made.winner == "lounge" and Lose("kitchen", made) in actions
    # hall lost before and stays lost; it is listed with its old score
    assert next(c for c in made.candidates if c.site == "hall").won is False


def test_a_satellite_hearing_a_television_is_scored_on_the_same_moment_as_the_rest() -> None:
    """The lounge's VAD took its television for speech long ago; the kitchen hears a command
    now: the lounge is anchored to the kitchen's start, and its old utterance does not make
    it ready at once."""
    room = Room()
    room.evidence = {"lounge": ev(4.0, modulation=2.0, onset=3.0), "kitchen": ev(30.0)}
    assert room.start("lounge", 0.0) == (Verdict.GO, [])
    assert room.ready("lounge", 0.4) == []
    verdict, actions = room.start("kitchen", 5.0)
    assert verdict == Verdict.WAIT and actions == [Anchor("lounge")]
    assert room.ready("kitchen", 5.4) == []  # the lounge has not been measured anew yet
    actions = room.ready("lounge", 5.42)
    made = decision(actions)
    assert made.winner == "kitchen" and Lose("lounge", made) in actions
    # a newcomer shortly after the leader's start does not move the leader's onset, nor
    # does a second newcomer once the contest is open
    room2 = Room()
    room2.start("kitchen", 0.0)
    assert room2.start("hall", 0.1) == (Verdict.WAIT, [])
    assert room2.start("lounge", 0.95) == (Verdict.WAIT, [])


def test_regrouping_decides_a_changed_groups_contest_and_its_loser_stays_quiet() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(30.0), "hall": ev(10.0), "attic": ev(20.0)}
    room.start("kitchen", 0.0)
    room.start("hall", 0.05)
    # the reload takes the hall out of the group, and puts the attic in it
    groups = {"kitchen": "home", "lounge": "home", "attic": "home"}
    actions = list(room.arbiter.regroup(ArbitrationSettings(), groups, 0.2, room.measure))
    made = decision(actions)
    assert made.winner == "kitchen" and made.reason == Reason.DEADLINE
    assert Lose("hall", made) in actions and room.arbiter.open_rounds == 0
    assert room.end("hall", 1.0) == (Fate.RELEASE, [])  # ended quietly, though groupless
    assert room.end("kitchen", 1.2) == (Fate.SUBMIT, [])
    assert room.start("hall", 2.0) == (Verdict.GO, [])  # on its own now: never waits
    assert room.end("hall", 3.0) == (Fate.SUBMIT, [])
    room.start("kitchen", 5.0)
    assert room.start("attic", 5.05)[0] == Verdict.WAIT  # the new member contends


def test_regrouping_leaves_unchanged_groups_alone_and_applies_new_settings() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(30.0), "hall": ev(10.0)}
    room.start("kitchen", 0.0)
    room.start("hall", 0.05)
    settings = ArbitrationSettings(Policy.FIRST, window_ms=300)
    groups = {**GROUPS, "attic": "loft"}
    assert room.arbiter.regroup(settings, groups, 0.2, room.measure) == []
    assert room.arbiter.next_due() == pytest.approx(0.75)  # its contest goes on
    made = decision(room.ready("kitchen", 0.5) + room.ready("hall", 0.55))
    assert made.winner == "kitchen" and made.policy == Policy.FIRST


def test_first_policy_decides_at_once_without_scores() -> None:
    room = Room(Policy.FIRST)
    room.evidence = {"kitchen": ev(5.0), "hall": ev(40.0)}
    room.start("kitchen", 0.0)
    verdict, actions = room.start("hall", 0.08)
    assert verdict == Verdict.LOSE and decision(actions).winner == "kitchen"
    assert decision(actions).reason == Reason.FIRST
    assert room.arbiter.next_due() is None


def test_loudest_policy_picks_the_loudest_not_the_clearest() -> None:
    room = Room(Policy.LOUDEST)
    room.evidence = {"kitchen": ev(35.0, level=-40.0), "hall": ev(15.0, level=-20.0)}
    room.start("kitchen", 0.0)
    room.start("hall", 0.0)
    room.ready("kitchen", 0.4)
    assert decision(room.ready("hall", 0.4)).winner == "hall"


def test_score_penalizes_non_speech_and_clipping_and_uses_wake_scores_only_for_all() -> None:
    clean = ev(20.0)
    assert combined_score(ev(20.0, ratio=0.5)) == pytest.approx(combined_score(clean) - 5.0)
    assert combined_score(ev(20.0, clipped=0.05)) == pytest.approx(combined_score(clean) - 5.0)
    woke = replace(clean, wake_score=1.0)
    assert combined_score(woke, with_wake=True) == pytest.approx(combined_score(clean) + 10.0)
    assert combined_score(woke) == pytest.approx(combined_score(clean))


def test_a_new_start_decides_a_contest_its_previous_utterance_waits_for() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(30.0), "hall": ev(10.0)}
    room.start("kitchen", 0.0)
    room.start("hall", 0.3)
    assert room.end("kitchen", 0.6)[0] == Fate.PARK
    verdict, actions = room.start("kitchen", 0.65)
    assert decision(actions).winner == "kitchen"  # the parked one ran, before the new one
    assert Win("kitchen", decision(actions)) in actions
    assert verdict == Verdict.GO  # its own new command: a new round


def test_everything_open_is_settled_on_flush() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(30.0), "hall": ev(10.0)}
    room.start("kitchen", 0.0)
    room.start("hall", 0.0)
    assert room.end("kitchen", 0.2)[0] == Fate.PARK
    actions = list(room.arbiter.flush(0.3, room.measure))
    assert decision(actions).winner == "kitchen" and Win("kitchen", decision(actions)) in actions


def test_a_decision_is_plain_json() -> None:
    room = Room()
    room.evidence = {"kitchen": ev(30.0), "hall": None}
    room.start("kitchen", 0.0)
    room.start("hall", 0.1)
    made = decision(room.due(10.0))
    data = json.loads(json.dumps(made.to_json(), allow_nan=False))
    assert data["winner"] == "kitchen" and data["reason"] == "deadline"
    assert data["policy"] == "score" and data["group"] == "home"
    assert [c["site"] for c in data["candidates"]] == ["kitchen", "hall"]
    assert data["candidates"][0]["snrDb"] == 30.0 and data["candidates"][1]["score"] is None
    assert "kitchen answers" in made.summary()


# ---- the meter -----------------------------------------------------------------------
def _frames(x: np.ndarray) -> list[bytes]:
    pcm = np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2").tobytes()
    return [pcm[i:i + VAD_FRAME_BYTES] for i in range(0, len(pcm) - VAD_FRAME_BYTES + 1,
                                                      VAD_FRAME_BYTES)]


def _tone(hz: float, amplitude: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return amplitude * np.sin(2 * np.pi * hz * t)


def test_frame_levels_measure_the_speech_band_only() -> None:
    level, clipped = frame_levels(_frames(_tone(1000, 0.5, 0.02))[0])
    assert level == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.3)
    assert clipped == 0
    low, _ = frame_levels(_frames(_tone(60, 0.5, 0.02))[0])  # mains hum: not speech
    assert low < level - 25
    _, clipped = frame_levels(_frames(np.clip(_tone(1000, 2.0, 0.02), -1, 1))[0])
    assert clipped > VAD_FRAME_SAMPLES // 3
    assert frame_levels(bytes(VAD_FRAME_BYTES))[0] == -100.0
    with pytest.raises(ValueError):
        frame_levels(bytes(10))


def test_the_floor_is_the_sites_own_and_a_hot_microphone_gains_no_snr() -> None:
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.003, int(3 * SAMPLE_RATE))
    burst = _tone(700, 0.1, 0.5) * (1 + np.sin(2 * np.pi * 4 * np.arange(8000) / 8000))
    results = []
    for gain in (1.0, 4.0):  # the same room, one microphone 12 dB hotter
        meter = Meter()
        for frame in _frames(gain * noise):
            meter.push(frame, False)
        first = meter.count
        for frame in _frames(gain * (burst + rng.normal(0, 0.003, burst.size))):
            meter.push(frame, True)
        got = meter.evidence(first, None, 20)
        assert got is not None
        results.append(got)
    quiet, hot = results
    assert hot.level_dbfs == pytest.approx(quiet.level_dbfs + 12.0, abs=0.5)
    assert hot.snr_db == pytest.approx(quiet.snr_db, abs=0.5)
    assert quiet.snr_db > 25 and quiet.speech_ratio == 1.0 and quiet.scored_ms == 400
    assert quiet.modulation_db > 3 and quiet.clipped == 0.0


def test_evidence_is_limited_to_the_utterance_and_to_what_is_remembered() -> None:
    meter = Meter(history_s=1.0)
    assert meter.evidence(0, None, 10) is None
    for frame in _frames(_tone(500, 0.1, 0.4)):
        meter.push(frame, True)
    got = meter.evidence(15, None, 10)
    assert got is not None and got.scored_ms == 100  # only frames 15..19 are its own
    assert meter.evidence(0, 12, 5) is not None and meter.evidence(12, 12, 5) is None
    for frame in _frames(_tone(500, 0.1, 2.0)):
        meter.push(frame, True)
    assert meter.evidence(0, 10, 5) is None  # long forgotten


def _vad_meter(pcm: bytes) -> tuple[Meter, int]:
    from voiced.vad.webrtc import WebrtcVad

    vad, meter, first = WebrtcVad(2), Meter(), None
    for i in range(0, len(pcm) - VAD_FRAME_BYTES + 1, VAD_FRAME_BYTES):
        frame = pcm[i:i + VAD_FRAME_BYTES]
        speech = vad.is_speech(frame)
        if speech and first is None and meter.count > 25:
            first = meter.count
        meter.push(frame, speech)
    assert first is not None
    return meter, first


def test_near_speech_scores_above_far_speech_heard_in_the_same_room() -> None:
    """One espeak-ng command, as a near and a far microphone hear it: the far one is
    reverberant (a decaying noise tail) and 12 dB down, with the same room noise."""
    speech = np.frombuffer(read_wav_file(FIXTURES / "commands" / "on_kitchen.wav"),
                           dtype="<i2").astype(np.float64) / 32768
    rng = np.random.default_rng(7)
    lead = np.zeros(SAMPLE_RATE)
    dry = np.concatenate([lead, speech])
    tail = rng.normal(0, 1, int(0.6 * SAMPLE_RATE)) * np.exp(
        -6.9 * np.arange(int(0.6 * SAMPLE_RATE)) / (0.6 * SAMPLE_RATE))
    tail *= 3.0 / math.sqrt(float(np.sum(tail**2)))  # reverberant energy above the direct
    far = np.convolve(dry, np.concatenate([[1.0], tail]))[: dry.size] / 4
    noise = rng.normal(0, 0.002, dry.size)
    scores = {}
    for name, signal in (("near", dry + noise), ("far", far + noise)):
        pcm = np.clip(np.rint(signal * 32767), -32768, 32767).astype("<i2").tobytes()
        meter, first = _vad_meter(pcm)
        got = meter.evidence(first, first + 20, 20)  # its first 400 ms of speech
        assert got is not None
        scores[name] = got
    near, far_ev = scores["near"], scores["far"]
    assert near.snr_db > far_ev.snr_db
    assert near.modulation_db > far_ev.modulation_db
    assert near.flux_db > far_ev.flux_db and near.rise_db > far_ev.rise_db
    assert combined_score(near) > combined_score(far_ev) + 5
