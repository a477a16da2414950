"""Pure speaker matching: decisions, profiles, error rates and calibration."""

from __future__ import annotations

import numpy as np
import pytest

from voiced.models import UNKNOWN_SPEAKER
from voiced.speakers.matching import (
    Matcher,
    Profile,
    calibrate,
    centroid,
    cross_scores,
    decide,
    equal_error_rate,
    rates_at,
    score_all,
)


def unit(v: list[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return (a / np.linalg.norm(a)).astype(np.float32)


def cluster(center: np.ndarray, n: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """`n` unit vectors scattered around `center`."""
    return np.stack([unit(center + rng.normal(0, spread, center.size)) for _ in range(n)])


def test_decide_takes_best_over_threshold_and_margin() -> None:
    match = decide({"alice": 0.82, "bob": 0.60}, threshold=0.75, margin=0.05)
    assert match.name == "alice"
    assert match.confidence == pytest.approx(0.82)
    assert match.scores == {"alice": 0.82, "bob": 0.60}


def test_decide_below_threshold_is_unknown_with_zero_confidence() -> None:
    match = decide({"alice": 0.74, "bob": 0.20}, threshold=0.75, margin=0.05)
    assert match.name == UNKNOWN_SPEAKER
    assert not match.known
    assert match.confidence == 0.0
    assert match.scores["alice"] == pytest.approx(0.74)


def test_decide_too_close_to_runner_up_is_unknown() -> None:
    assert decide({"alice": 0.90, "bob": 0.87}, 0.75, 0.05).name == UNKNOWN_SPEAKER
    assert decide({"alice": 0.90, "bob": 0.85}, 0.75, 0.05).name == "alice"


def test_decide_with_nobody_enrolled() -> None:
    match = decide({}, 0.5, 0.05)
    assert match.name == UNKNOWN_SPEAKER and match.scores == {}


def test_single_person_needs_only_the_threshold() -> None:
    assert decide({"alice": 0.8}, 0.75, 0.05).name == "alice"


def test_matcher_scores_against_centroids() -> None:
    a = Profile("alice", np.stack([unit([1, 0.1, 0]), unit([1, -0.1, 0])]))
    b = Profile("bob", np.stack([unit([0, 1, 0])]))
    matcher = Matcher((a, b), threshold=0.9, margin=0.05)
    assert matcher.identify(unit([1, 0, 0])).name == "alice"
    assert matcher.identify(unit([0, 1, 0.05])).name == "bob"
    assert matcher.identify(unit([0, 0, 1])).name == UNKNOWN_SPEAKER
    scores = score_all(unit([1, 0, 0]), [a, b])
    assert scores["alice"] == pytest.approx(1.0, abs=1e-6)
    assert scores["bob"] == pytest.approx(0.0, abs=1e-6)


def test_adapted_vectors_weigh_at_most_half() -> None:
    enrolled = np.stack([unit([1, 0])])
    adapted = np.stack([unit([0, 1])] * 50)
    profile = Profile("alice", enrolled, adapted)
    c = profile.centroid
    # even 50 adapted vectors only pull the centroid half-way (45 degrees)
    assert float(c @ unit([1, 0])) == pytest.approx(float(c @ unit([0, 1])), abs=1e-6)
    assert np.allclose(profile.anchor, unit([1, 0]))


def test_may_adapt_is_judged_against_the_enrollment_only() -> None:
    enrolled = np.stack([unit([1, 0, 0])])
    drifted = np.stack([unit([0.6, 0.8, 0])] * 10)
    matcher = Matcher((Profile("alice", enrolled, drifted),
                       Profile("bob", np.stack([unit([0, 0, 1])]))), 0.7, 0.05)
    near_drift = unit([0.55, 0.83, 0])
    match = matcher.identify(near_drift)
    assert match.name == "alice"  # the adapted centroid accepts it...
    assert not matcher.may_adapt(near_drift, match, extra=0.1)  # ...but it cannot feed drift
    close = unit([1, 0.05, 0])
    assert matcher.may_adapt(close, matcher.identify(close), extra=0.1)


def test_rates_and_eer_on_known_scores() -> None:
    genuine = [0.9, 0.8, 0.7, 0.6]
    impostor = [0.65, 0.5, 0.4, 0.3]
    assert rates_at(genuine, impostor, 0.65) == (0.25, 0.25)
    assert rates_at(genuine, impostor, 0.95) == (0.0, 1.0)
    eer, threshold = equal_error_rate(genuine, impostor)
    assert eer == pytest.approx(0.25)
    assert 0.6 < threshold <= 0.7


def test_eer_is_zero_when_separated() -> None:
    eer, threshold = equal_error_rate([0.9, 0.85, 0.8], [0.5, 0.6])
    assert eer == 0.0
    assert 0.6 < threshold <= 0.8


def test_eer_is_half_when_indistinguishable() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(0.5, 0.1, 4000)
    eer, _ = equal_error_rate(scores[:2000], scores[2000:])
    assert eer == pytest.approx(0.5, abs=0.03)


def test_cross_scores_counts() -> None:
    rng = np.random.default_rng(2)
    people = {n: cluster(rng.normal(size=16), 4, 0.1, rng) for n in ("a", "b", "c")}
    people["d"] = cluster(rng.normal(size=16), 1, 0.1, rng)  # one sample: no genuine trial
    genuine, impostor = cross_scores(people)
    assert len(genuine) == 3 * 4
    assert len(impostor) == 3 * 4 * 3 + 1 * 3


def test_calibrate_puts_the_threshold_between_people_and_strangers() -> None:
    rng = np.random.default_rng(3)
    centers = [rng.normal(size=64) for _ in range(4)]
    people = {f"p{i}": cluster(c, 5, 0.08, rng) for i, c in enumerate(centers)}
    cal = calibrate(people)
    assert cal.genuine_mean > cal.threshold > cal.impostor_mean
    assert cal.expected_far < 0.01 and cal.expected_frr < 0.05
    assert cal.measured_far == 0.0 and cal.eer == 0.0
    # new utterances of the same people pass, a fifth person's do not
    matcher = Matcher(tuple(Profile(n, m) for n, m in people.items()), cal.threshold, 0.05)
    for i, c in enumerate(centers):
        assert matcher.identify(cluster(c, 1, 0.08, rng)[0]).name == f"p{i}"
    stranger = rng.normal(size=64)
    assert all(not matcher.identify(v).known for v in cluster(stranger, 10, 0.08, rng))


def test_calibrate_weighs_false_accepts_more() -> None:
    rng = np.random.default_rng(4)
    # overlapping people: the threshold must move up as false accepts cost more
    base = rng.normal(size=32)
    people = {f"p{i}": cluster(base + rng.normal(0, 0.6, 32), 6, 0.5, rng) for i in range(4)}
    lenient = calibrate(people, far_weight=1.0)
    strict = calibrate(people, far_weight=100.0)
    assert strict.threshold > lenient.threshold
    assert strict.expected_far < lenient.expected_far
    assert strict.expected_frr > lenient.expected_frr


def test_calibrate_needs_two_people() -> None:
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="two enrolled people"):
        calibrate({"alone": cluster(rng.normal(size=8), 5, 0.1, rng)})


def test_centroid_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        centroid([])


def test_probes_replace_whole_samples_as_trials() -> None:
    rng = np.random.default_rng(6)
    people = {n: cluster(rng.normal(size=16), 3, 0.05, rng) for n in ("a", "b")}
    # probes of a's sample 0: one close to a, one far off (a bad piece)
    probes = {"a": [(0, people["a"][0]), (0, unit(rng.normal(size=16)))]}
    genuine, impostor = cross_scores(people, probes)
    assert len(genuine) == 2 + 3  # a's two probes, b's three whole samples
    assert len(impostor) == 2 + 3
    # the probe is scored against a's centroid without sample 0, which it was cut from
    rest = centroid(people["a"][1:])
    assert genuine[0] == pytest.approx(float(people["a"][0] @ rest), abs=1e-6)
    assert min(genuine) < 0.5  # the bad piece shows up as a low genuine score


def test_shorter_probes_lower_the_threshold() -> None:
    rng = np.random.default_rng(7)
    centers = {f"p{i}": rng.normal(size=64) for i in range(4)}
    people = {n: cluster(c, 5, 0.05, rng) for n, c in centers.items()}
    # command-length pieces are noisier than whole sentences
    probes = {n: [(i, cluster(c, 1, 0.5, rng)[0]) for i in range(5) for _ in range(2)]
              for n, c in centers.items()}
    with_probes, without = calibrate(people, probes=probes), calibrate(people)
    assert with_probes.genuine_mean < without.genuine_mean - 0.05
    assert with_probes.threshold < without.threshold - 0.05
    assert with_probes.genuine_trials == 4 * 10
