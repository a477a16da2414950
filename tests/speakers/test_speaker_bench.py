"""The speaker benchmark's evaluation (pure: synthetic vectors, no audio)."""

from __future__ import annotations

import numpy as np
import pytest

from voiced.bench.speakers import Sample, _evaluate
from voiced.cli import main


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def around(center: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    return unit(center + rng.normal(0, spread, center.size))


def test_separable_people_score_perfectly() -> None:
    rng = np.random.default_rng(0)
    centers = {p: rng.normal(size=64) for p in ("a", "b", "c", "d")}
    people = {p: [Sample(around(c, 0.05, rng), [around(c, 0.1, rng)]) for _ in range(5)]
              for p, c in centers.items()}
    stranger = rng.normal(size=64)
    tests = {f"voice-{p}": [around(c, 0.1, rng) for _ in range(4)] for p, c in centers.items()}
    tests["voice-stranger"] = [around(stranger, 0.1, rng) for _ in range(4)]
    person_of = {v: v.removeprefix("voice-") for v in tests}
    r = _evaluate("synthetic", people, tests, person_of, margin=0.05, far_weight=10)
    assert r.folds == 4 and r.test_utterances == 20
    assert r.identification_accuracy == 1.0
    assert r.eer == 0.0 and r.far == 0.0 and r.frr == 0.0
    # per fold: the left-out person's 4 utterances and the stranger's 4
    assert r.stranger_utterances == 4 * 8 and r.strangers_accepted == 0
    assert r.strangers == ["voice-stranger"]
    assert r.genuine_trials == 4 * 3 * 4  # 4 folds x 3 enrolled people x 4 utterances


def test_indistinguishable_people_are_reported_as_such() -> None:
    rng = np.random.default_rng(1)
    center = rng.normal(size=16)
    people = {p: [Sample(around(center, 0.3, rng), [around(center, 0.3, rng)])
                  for _ in range(5)] for p in ("a", "b", "c")}
    tests = {f"voice-{p}": [around(center, 0.3, rng) for _ in range(10)] for p in people}
    r = _evaluate("clones", people, tests, {v: v.removeprefix("voice-") for v in tests},
                  margin=0.05, far_weight=10)
    assert r.eer > 0.3
    assert r.identification_accuracy < 0.8


def test_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "bench", "speakers", "--sets", "nope"]) == 2
    assert "--sets" in capsys.readouterr().err
