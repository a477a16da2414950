"""The grammar-mode confidence of `asr.confidence: words` (pure: no decoder)."""

from __future__ import annotations

import math

import pytest

from voiced.asr.rejection import LOG_BASE, WordFit, command_confidence, log_score


def said(*words: tuple[str, float]) -> list[WordFit]:
    """Words of 30 frames each with the given misfit per frame."""
    return [WordFit(w, 30, -m * 30) for w, m in words]


def test_a_well_fitting_sentence_is_confident_and_a_forced_one_is_not() -> None:
    good = command_confidence(said(("lock", 28), ("the", 30), ("door", 26)))
    forced = command_confidence(said(("lock", 60), ("the", 55), ("door", 70)))
    assert good > 0.9 > 0.1 > forced


def test_skip_words_filled_into_noise_do_not_count() -> None:
    command = said(("cancel", 30), ("the", 32), ("timer", 28))
    noise_as_hey = command + said(("hey", 95))
    assert command_confidence(noise_as_hey, {"hey", "please"}) == \
        command_confidence(command, {"hey", "please"})
    # without knowing it is a skip word the same "hey" drags the sentence down
    assert command_confidence(noise_as_hey) < command_confidence(command) - 0.3


def test_one_forced_word_lowers_the_confidence() -> None:
    right = said(("turn", 30), ("the", 30), ("kitchen", 30), ("light", 30), ("on", 30))
    one_off = right[:-1] + said(("off", 90))
    assert command_confidence(one_off) < command_confidence(right) - 0.2


def test_confidence_is_monotonic_in_the_misfit() -> None:
    values = [command_confidence(said(("stop", m), ("music", m))) for m in range(0, 120, 5)]
    assert values == sorted(values, reverse=True)
    assert all(0.0 <= v <= 1.0 for v in values)


def test_nothing_and_broken_scores_are_not_confident() -> None:
    assert command_confidence([]) == 0.0
    assert command_confidence([WordFit("on", 10, -math.inf)]) == 0.0
    assert command_confidence([WordFit("on", 0, 0.0)]) > 0.5  # no frames: no misfit
    # only skip words: judged on them rather than on nothing
    assert command_confidence(said(("please", 90)), {"please"}) < 0.1


def test_log_score_inverts_the_bindings_probabilities() -> None:
    assert log_score(LOG_BASE ** -1234) == pytest.approx(-1234)
    assert log_score(1.0) == 0.0
    assert log_score(0.0) < -1e8
