"""Speaker matching, calibration and error rates: pure functions over vectors and scores.

Scoring: each person's profile is the normalized mean (centroid) of their L2-normalized
enrollment vectors; an utterance's score for a person is the cosine between its vector and
that centroid. The decision takes the best person when their score reaches the threshold
AND beats the second best by the margin; otherwise the speaker is `unknown`.

Calibration: the enrollment material itself gives trials. Commands are shorter than
enrollment sentences, so enrollment also embeds command-length pieces ("probes") of each
sample. A probe scored against its person's centroid without the sample it came from gives
a genuine score; scored against every other person's centroid, impostor scores. A normal
distribution fitted to each set gives the expected false-accept rate (FAR) and
false-reject rate (FRR) at any threshold; the calibrated threshold minimizes
`far_weight * FAR + FRR`, because here a false accept (a stranger unlocking the door)
costs far more than a false reject (saying it again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.special import log_ndtr

from voiced.models import UNKNOWN_SPEAKER, SpeakerMatch
from voiced.speakers.base import Vector, l2_normalize

Matrix = npt.NDArray[np.float32]

ADAPTED_MAX_WEIGHT = 0.5
"""Adapted vectors never make up more than this share of a profile's centroid."""
MIN_SCORE_SD = 0.02
"""Floor of a fitted score spread: a handful of samples must not look like certainty."""
DEFAULT_FAR_WEIGHT = 10.0
"""How much worse a false accept is than a false reject, for calibration."""


def _as_matrix(vectors: Sequence[Vector] | Matrix) -> Matrix:
    m = np.asarray(vectors, dtype=np.float32)
    return m.reshape(0, 0) if m.size == 0 else m.reshape(len(m), -1)


def centroid(vectors: Sequence[Vector] | Matrix) -> Vector:
    """Normalized mean of normalized vectors."""
    m = _as_matrix(vectors)
    if m.size == 0:
        raise ValueError("centroid of no vectors")
    return l2_normalize(m.mean(axis=0))


@dataclass(frozen=True, slots=True)
class Profile:
    """One person's enrolled vectors, plus vectors learned from confident identifications."""

    name: str
    enrolled: Matrix
    """(n, dim) L2-normalized vectors from enrollment."""
    adapted: Matrix = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    """(m, dim) vectors added by adaptation (bounded; removable)."""

    @property
    def anchor(self) -> Vector:
        """Centroid of the enrollment alone: adaptation is always judged against it."""
        return centroid(self.enrolled)

    @property
    def centroid(self) -> Vector:
        """The vector utterances are scored against."""
        anchor = self.anchor
        m = len(self.adapted) if self.adapted.size else 0
        if m == 0:
            return anchor
        weight = min(ADAPTED_MAX_WEIGHT, m / (m + len(self.enrolled)))
        return l2_normalize((1 - weight) * anchor + weight * centroid(self.adapted))


def score_all(vector: Vector, profiles: Sequence[Profile]) -> dict[str, float]:
    """Cosine score of `vector` against each profile, by name."""
    return {p.name: float(np.dot(vector, p.centroid)) for p in profiles}


def decide(scores: Mapping[str, float], threshold: float, margin: float) -> SpeakerMatch:
    """Best person when at or over the threshold and ahead of the runner-up by the margin.

    An unknown speaker gets confidence 0 (the scores still say how close each person was),
    so nothing that compares confidences can mistake a stranger for a person.
    """
    if not scores:
        return SpeakerMatch(UNKNOWN_SPEAKER, 0.0, {})
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    best_name, best = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else -1.0
    if best >= threshold and best - second >= margin:
        return SpeakerMatch(best_name, float(np.clip(best, 0.0, 1.0)), dict(scores))
    return SpeakerMatch(UNKNOWN_SPEAKER, 0.0, dict(scores))


@dataclass(frozen=True, slots=True)
class Matcher:
    """Profiles plus decision settings: vector in, `SpeakerMatch` out."""

    profiles: tuple[Profile, ...]
    threshold: float
    margin: float

    def identify(self, vector: Vector) -> SpeakerMatch:
        """Who `vector` belongs to, or unknown."""
        return decide(score_all(vector, self.profiles), self.threshold, self.margin)

    def profile(self, name: str) -> Profile | None:
        """The profile of `name`, if enrolled."""
        return next((p for p in self.profiles if p.name == name), None)

    def may_adapt(self, vector: Vector, match: SpeakerMatch, extra: float) -> bool:
        """True when `vector` is safe to add to the matched person's profile.

        It must clear the threshold by `extra` against the enrollment-only centroid (so
        adapted vectors can never pull a profile towards someone else step by step) and
        beat the runner-up by twice the margin.
        """
        profile = self.profile(match.name) if match.known else None
        if profile is None:
            return False
        others = [s for n, s in match.scores.items() if n != match.name]
        runner_up = max(others, default=-1.0)
        anchored = float(np.dot(vector, profile.anchor))
        return anchored >= self.threshold + extra and anchored - runner_up >= 2 * self.margin


Probes = Mapping[str, Sequence[tuple[int, Vector]]]
"""Per person: (index of the enrollment sample it was cut from, vector of the piece)."""


def cross_scores(
    enrollments: Mapping[str, Sequence[Vector] | Matrix],
    probes: Probes | None = None,
) -> tuple[list[float], list[float]]:
    """(genuine, impostor) scores from enrollment material alone.

    Where a person has probes (command-length pieces of their samples), each probe is a
    trial: genuine against the centroid of their samples other than the one it was cut
    from, impostor against every other person's centroid. Enrollment samples are longer
    than commands and score higher, so probes predict what commands will score. Without
    probes each whole sample is a trial in the same way.
    """
    people = {n: _as_matrix(v) for n, v in enrollments.items() if _as_matrix(v).size}
    centroids = {n: centroid(m) for n, m in people.items()}
    genuine: list[float] = []
    impostor: list[float] = []
    for name, m in people.items():
        person_probes = (probes or {}).get(name) or [(i, v) for i, v in enumerate(m)]
        for parent, v in person_probes:
            if len(m) >= 2 and 0 <= parent < len(m):
                rest = np.delete(m, parent, axis=0)
                genuine.append(float(np.dot(v, centroid(rest))))
            impostor.extend(float(np.dot(v, c)) for other, c in centroids.items()
                            if other != name)
    return genuine, impostor


def rates_at(
    genuine: Sequence[float], impostor: Sequence[float], threshold: float
) -> tuple[float, float]:
    """Measured (FAR, FRR) at `threshold`: impostors at or over it, genuine under it."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    far = float(np.mean(i >= threshold)) if i.size else 0.0
    frr = float(np.mean(g < threshold)) if g.size else 0.0
    return far, frr


def equal_error_rate(
    genuine: Sequence[float], impostor: Sequence[float]
) -> tuple[float, float]:
    """(EER, threshold): the rate where false accepts and false rejects are equal.

    Every score is a candidate threshold; at the candidate where FAR and FRR are closest,
    the EER is their mean. Perfectly separated scores give 0 at the lowest genuine score.
    """
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    i = np.sort(np.asarray(impostor, dtype=np.float64))
    if not g.size or not i.size:
        raise ValueError("the EER needs genuine and impostor scores")
    candidates = np.unique(np.concatenate([g, i, [np.nextafter(i[-1], np.inf)]]))
    far = 1.0 - np.searchsorted(i, candidates, side="left") / i.size
    frr = np.searchsorted(g, candidates, side="left") / g.size
    k = int(np.argmin(np.abs(far - frr) + 1e-9 * candidates))
    return float((far[k] + frr[k]) / 2), float(candidates[k])


@dataclass(frozen=True, slots=True)
class Calibration:
    """A threshold chosen from enrollment cross-scores, with what to expect from it."""

    threshold: float
    expected_far: float
    """Modelled probability that a stranger's utterance reaches the threshold."""
    expected_frr: float
    """Modelled probability that an enrolled person's utterance falls short of it."""
    measured_far: float
    """Share of the impostor cross-scores at or over the threshold."""
    measured_frr: float
    """Share of the genuine cross-scores under the threshold."""
    eer: float
    """Equal error rate of the cross-scores."""
    genuine_trials: int
    impostor_trials: int
    genuine_mean: float
    impostor_mean: float


def _fit(scores: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(scores, dtype=np.float64)
    sd = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return float(a.mean()), max(sd, MIN_SCORE_SD)


def calibrate(
    enrollments: Mapping[str, Sequence[Vector] | Matrix],
    far_weight: float = DEFAULT_FAR_WEIGHT,
    probes: Probes | None = None,
) -> Calibration:
    """Choose the threshold for this household from its enrollment vectors (and probes).

    Needs two or more people, at least one of them with two or more vectors. Raises
    ValueError otherwise.
    """
    genuine, impostor = cross_scores(enrollments, probes)
    if not genuine or not impostor:
        raise ValueError(
            "calibration needs at least two enrolled people and two samples of someone"
        )
    g_mu, g_sd = _fit(genuine)
    i_mu, i_sd = _fit(impostor)
    grid = np.arange(-1.0, 1.0 + 1e-9, 0.0005)
    # in logs: with well-separated people both tails underflow to 0 across the whole gap,
    # and a plain argmin would pick an arbitrary point of it
    log_far = log_ndtr(-(grid - i_mu) / i_sd)
    log_frr = log_ndtr((grid - g_mu) / g_sd)
    log_cost = np.logaddexp(np.log(far_weight) + log_far, log_frr)
    k = int(np.argmin(log_cost))
    far, frr = np.exp(log_far), np.exp(log_frr)
    threshold = float(np.round(grid[k], 4))
    measured_far, measured_frr = rates_at(genuine, impostor, threshold)
    eer, _ = equal_error_rate(genuine, impostor)
    return Calibration(
        threshold=threshold,
        expected_far=float(far[k]),
        expected_frr=float(frr[k]),
        measured_far=measured_far,
        measured_frr=measured_frr,
        eer=eer,
        genuine_trials=len(genuine),
        impostor_trials=len(impostor),
        genuine_mean=g_mu,
        impostor_mean=i_mu,
    )
