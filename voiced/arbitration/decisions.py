"""The arbiter's vocabulary: policies, verdicts, fates, decisions, the score, and the
actions it asks `voiced.arbiter_service` to carry out. Values only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from voiced.audio.levels import Evidence


class Policy(StrEnum):
    """How a contest is decided."""

    SCORE = "score"
    """How sharply each satellite heard the speech (spectral flux, attacks, level against
    its own noise floor), VAD speech ratio, clipping."""
    LOUDEST = "loudest"
    """The loudest speech-band level (what Willow does with the wake word)."""
    FIRST = "first"
    """The first satellite to hear speech (Rhasspy's and Home Assistant's rule)."""


class Verdict(StrEnum):
    """Where a candidate stands."""

    GO = "go"
    """Goes on: alone so far, or won."""
    WAIT = "wait"
    """In a contest: its models wait for the decision."""
    LOSE = "lose"
    """Another satellite answers: its utterance is heard by nobody."""


class Reason(StrEnum):
    """Why a decision was taken."""

    SCORED = "scored"
    """Every candidate had `score_ms` of speech (or ended)."""
    DEADLINE = "deadline"
    """`window_ms` passed first: the candidates were scored on what they had."""
    CONVERSATION = "conversation"
    """A satellite in a conversation owns its group's next utterance."""
    LATE = "late"
    """The group's command had been taken already when this one started."""
    SWAP = "swap"
    """The winner's VAD found no speech after all: the best loser answers instead."""
    FIRST = "first"
    """Policy `first`: the first to start won, at once."""


class Fate(StrEnum):
    """What becomes of an utterance that ended."""

    SUBMIT = "submit"
    """Run it now."""
    PARK = "park"
    """Hold it: its contest is undecided (a `Win` or `Lose` follows)."""
    KEEP = "keep"
    """A loser's: keep it unheard in case of a swap (a `Release` or `Win` follows)."""
    RELEASE = "release"
    """A loser's, and no swap can happen any more: end it now."""
    NONE = "none"
    """Nothing to run (no speech)."""


FLUX_WEIGHT = 10.0
"""Weight of the spectral flux (dB): how much the sub-bands' levels change from one frame
to the next. Reverberation and noise smear each sound into the next, so a far satellite's
spectrum changes less; the strongest single measure on the benchmark's homes."""
BAND_MODULATION_WEIGHT = 1.2
"""Weight of the sub-bands' level spread (dB): how far each band dips between sounds."""
RISE_WEIGHT = 1.6
"""Weight of the attacks (dB): the 95th percentile of the level's frame-to-frame rises."""
ONSET_WEIGHT = 1.3
"""Weight of the onset sharpness (dB): the steepest rise from one frame to the next."""
LEVEL_WEIGHT = 0.5
"""Weight of the speech-band level (dBFS): loudness, microphone gain included."""
SNR_WEIGHT = -0.8
"""Weight of the SNR over the satellite's own noise floor. Negative: noise lowers the flux
and the attacks as well as distance does, and this gives back the part of that due to
noise alone, so a near satellite in a noisy spot is not taken for a far one (found on the
benchmark's training homes; on its own, the SNR is a poor measure: a satellite in a
quiet neighbouring room hears a farther speaker at a better SNR than the one next to a
noisy speaker)."""
MODULATION_WEIGHT = 0.0
"""Weight of the speech-band level's spread (dB): shown in every decision, but once the
flux and the band spread are in, it adds nothing."""
SPEECH_RATIO_DB = 10.0
"""Score lost (dB) by a candidate none of whose scored frames the VAD called speech."""
CLIP_DB = 100.0
"""Score lost (dB) per unit fraction of clipped samples (1 % clipped: 1 dB)."""
WAKE_DB = 10.0
"""Score added (dB) for a wake word score of 1.0, when every candidate reports one."""


def combined_score(evidence: Evidence, with_wake: bool = False) -> float:
    """The `score` policy's number for one candidate (higher wins), in dB-like units:
    10 × the spectral flux, plus 1.2 × the band spread, 1.6 × the attacks, 1.3 × the
    onset, ½ × the level, less 0.8 × the SNR and penalties for frames the VAD did not call
    speech and for clipping. Reverberation and noise fill the gaps between sounds and
    soften attacks, so a far satellite scores lower even where the room makes it as loud
    as a near one. The weights were fitted on `voiced bench arbitration`'s homes of
    training seeds (1, 2, 4, 5; README "Arbitration"), never on those its published
    figures use; only differences between candidates matter."""
    score = (FLUX_WEIGHT * evidence.flux_db
             + BAND_MODULATION_WEIGHT * evidence.band_modulation_db
             + RISE_WEIGHT * evidence.rise_db + ONSET_WEIGHT * evidence.onset_db
             + LEVEL_WEIGHT * evidence.level_dbfs + SNR_WEIGHT * evidence.snr_db
             + MODULATION_WEIGHT * evidence.modulation_db
             - SPEECH_RATIO_DB * (1.0 - evidence.speech_ratio) - CLIP_DB * evidence.clipped)
    if with_wake and evidence.wake_score is not None:
        score += WAKE_DB * evidence.wake_score
    return score


@dataclass(frozen=True, slots=True)
class ArbitrationSettings:
    """The arbiter's parameters (milliseconds)."""

    policy: Policy = Policy.SCORE
    window_ms: float = 700.0
    """Longest a contest waits for its candidates' evidence after it opened."""
    score_ms: float = 600.0
    """Speech each candidate is scored on (its most recent this much)."""
    keep_ms: float = 3000.0
    """How long after its end a loser's utterance can still be swapped in."""

    @classmethod
    def from_config(cls, config: Any) -> ArbitrationSettings:
        """From `sites.arbitration` (voiced.config.ArbitrationConfig)."""
        return cls(Policy(config.policy), float(config.window_ms), float(config.score_ms),
                   float(config.keep_ms))


@dataclass(frozen=True, slots=True)
class Scored:
    """One candidate as a decision saw it."""

    site: str
    session_id: str
    start_ms: float
    """When its utterance started, after the round's first start (ms)."""
    score: float | None
    """None: not scored (no evidence, or decided without scoring)."""
    evidence: Evidence | None
    won: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        ev = self.evidence
        return {"site": self.site, "sessionId": self.session_id,
                "startMs": round(self.start_ms, 1), "won": self.won,
                "score": None if self.score is None else round(self.score, 2),
                **(ev.to_json() if ev is not None else {})}


@dataclass(frozen=True, slots=True)
class Decision:
    """Who answers a group's command, and how that was decided."""

    group: str
    policy: Policy
    reason: Reason
    winner: str | None
    candidates: tuple[Scored, ...]
    opened_at: float
    """Monotonic seconds: the round's first start."""
    decided_at: float

    @property
    def losers(self) -> tuple[str, ...]:
        """The sites that do not answer."""
        return tuple(c.site for c in self.candidates if not c.won)

    def to_json(self) -> dict[str, Any]:
        """The `arbitration` event's fields."""
        return {"group": self.group, "policy": str(self.policy), "reason": str(self.reason),
                "winner": self.winner,
                "decidedMs": round((self.decided_at - self.opened_at) * 1000, 1),
                "candidates": [c.to_json() for c in self.candidates]}

    def summary(self) -> str:
        """One line: `kitchen answers (scored: kitchen 31.2, hall 18.4)`."""
        scores = ", ".join(f"{c.site} {c.score:.1f}" if c.score is not None else c.site
                           for c in self.candidates)
        who = f"{self.winner} answers" if self.winner else "nobody answers"
        return f"{who} ({self.reason}, {self.policy}: {scores})"


@dataclass(frozen=True, slots=True)
class Announce:
    """Make the decision visible (event, history, metrics)."""

    decision: Decision


@dataclass(frozen=True, slots=True)
class Win:
    """`site` answers: feed its models, or run its held utterance."""

    site: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class Lose:
    """`site` does not answer: close its models; its utterance is kept or released."""

    site: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class Release:
    """End `site`'s kept utterances: no swap can happen any more."""

    site: str


@dataclass(frozen=True, slots=True)
class Anchor:
    """`site` had been hearing "speech" for over ANCHOR_MS when a contest opened (a
    television, a long command): score it from now on, like the newcomer."""

    site: str


Action = Announce | Win | Lose | Release | Anchor
Measure = Callable[[str], Evidence | None]
"""`measure(site)`: the candidate's evidence now (None: none yet)."""
