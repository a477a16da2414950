"""The enrollment store: round trip, model changes, adaptation bounds, calibration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from voiced.errors import SpeakerError
from voiced.speakers.matching import calibrate
from voiced.speakers.store import SpeakerStore

MODEL_A = "resemblyzer:aaaa"
MODEL_B = "speechbrain:bbbb"


def vectors(n: int, dim: int = 8, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [v / np.linalg.norm(v) for v in rng.normal(size=(n, dim)).astype(np.float32)]


def test_round_trip_across_reopen(tmp_path: Path) -> None:
    vs = vectors(3)
    with SpeakerStore.open(tmp_path) as store:
        assert store.add_enrollment("alice", MODEL_A, vs, sources=["a.wav", "b.wav"]) == 3
        assert store.add_enrollment("alice", MODEL_A, vectors(2, seed=1)) == 5
        store.add_enrollment("bob", MODEL_A, vectors(2, seed=2))
    with SpeakerStore.open(tmp_path) as store:
        profiles = {p.name: p for p in store.profiles(MODEL_A)}
        assert set(profiles) == {"alice", "bob"}
        assert profiles["alice"].enrolled.shape == (5, 8)
        assert np.allclose(profiles["alice"].enrolled[:3], np.stack(vs))
        people = {p.name: p for p in store.people(MODEL_A)}
        assert people["alice"].enrolled == 5 and not people["alice"].needs_reenrollment
        assert store.remove("alice") == 5
        assert store.remove("alice") == 0
        assert [p.name for p in store.profiles(MODEL_A)] == ["bob"]
    assert (tmp_path / "speakers.db").is_file()
    mode = sqlite3.connect(tmp_path / "speakers.db").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"


def test_model_change_refuses_mixing_and_asks_for_reenrollment(tmp_path: Path) -> None:
    with SpeakerStore.open(tmp_path) as store:
        store.add_enrollment("alice", MODEL_A, vectors(3))
        # the new model sees nobody it can compare with, and says who must enroll again
        assert store.profiles(MODEL_B) == []
        assert store.stale(MODEL_B) == ["alice"]
        alice = store.people(MODEL_B)[0]
        assert alice.needs_reenrollment and alice.other_models == (MODEL_A,)
        with pytest.raises(SpeakerError) as err:
            store.add_enrollment("alice", MODEL_B, vectors(3, dim=16))
        assert err.value.code == "model_changed"
        assert store.enrollments(MODEL_A)["alice"].shape == (3, 8)  # nothing was lost
        assert store.add_enrollment("alice", MODEL_B, vectors(2, dim=16), replace=True) == 2
        assert store.stale(MODEL_B) == []
        assert store.profiles(MODEL_A) == []


def test_dimension_mismatch_is_refused(tmp_path: Path) -> None:
    with SpeakerStore.open(tmp_path) as store:
        store.add_enrollment("alice", MODEL_A, vectors(2, dim=8))
        with pytest.raises(SpeakerError) as err:
            store.add_enrollment("bob", MODEL_A, vectors(2, dim=4))
        assert err.value.code == "dimension_mismatch"


@pytest.mark.parametrize("name", ["", "unknown", "Unknown", "a/b", "x" * 65, " lead",
                                  "carol\n", "carol ", "carol\t"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with SpeakerStore.open(tmp_path) as store, pytest.raises(SpeakerError) as err:
        store.add_enrollment(name, MODEL_A, vectors(1))
    assert err.value.code == "bad_name"


def test_adaptation_is_bounded_and_reversible(tmp_path: Path) -> None:
    with SpeakerStore.open(tmp_path) as store:
        store.add_enrollment("alice", MODEL_A, vectors(3))
        extra = vectors(10, seed=9)
        for v in extra:
            store.add_adapted("alice", MODEL_A, v, keep=4)
        profile = store.profiles(MODEL_A)[0]
        assert profile.adapted.shape == (4, 8)
        assert np.allclose(profile.adapted, np.stack(extra[-4:]))  # newest kept
        assert store.people(MODEL_A)[0].adapted == 4
        assert store.clear_adapted("alice") == 4
        assert store.profiles(MODEL_A)[0].adapted.shape == (0, 8)
        assert store.profiles(MODEL_A)[0].enrolled.shape == (3, 8)
        store.add_adapted("nobody", MODEL_A, extra[0], keep=4)  # not enrolled: ignored
        assert store.people(MODEL_A)[0].name == "alice" and len(store.people(MODEL_A)) == 1


def test_generation_tells_other_processes_about_changes(tmp_path: Path) -> None:
    with SpeakerStore.open(tmp_path) as daemon_side, SpeakerStore.open(tmp_path) as cli_side:
        before = daemon_side.generation()
        cli_side.add_enrollment("alice", MODEL_A, vectors(2))
        assert daemon_side.generation() != before
        assert [p.name for p in daemon_side.profiles(MODEL_A)] == ["alice"]


def test_calibration_is_kept_per_model(tmp_path: Path) -> None:
    with SpeakerStore.open(tmp_path) as store:
        assert store.calibrated_threshold(MODEL_A) is None
        people = {n: vectors(4, seed=i) for i, n in enumerate(("a", "b", "c"))}
        cal = calibrate(people)
        store.set_calibration(MODEL_A, cal)
        assert store.calibrated_threshold(MODEL_A) == pytest.approx(cal.threshold)
        assert store.calibrated_threshold(MODEL_B) is None


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    SpeakerStore.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "speakers.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(SpeakerError) as err:
        SpeakerStore.open(tmp_path)
    assert err.value.code == "store_too_new"


def test_probes_remember_their_sample(tmp_path: Path) -> None:
    with SpeakerStore.open(tmp_path) as store:
        store.add_enrollment("bob", MODEL_A, vectors(1, seed=3))
        samples = vectors(3, seed=4)
        probes = [vectors(2, seed=5), [], vectors(1, seed=6)]
        store.add_enrollment("alice", MODEL_A, samples, probes=probes)
        got = store.probes(MODEL_A)
        assert set(got) == {"alice"}
        assert [i for i, _ in got["alice"]] == [0, 0, 2]
        assert np.allclose(got["alice"][2][1], probes[2][0])
        # probes are for calibration only: never part of a profile
        assert store.profiles(MODEL_A)[0].enrolled.shape == (3, 8)
        store.remove("alice")
        assert store.probes(MODEL_A) == {}
