"""Is a grammar-mode transcript a command that was said? pocketsphinx's confidence with
`asr.confidence: words`, from the acoustic fit of the decoded words that carry meaning.

Grammar mode forces any audio into some sentence of the intents, so the transcript alone
never says "not a command": the confidence has to. pocketsphinx scores every frame
against the best-scoring senone of that frame, so a word's acoustic score divided by its
frames is a *misfit*: how much worse the word explains its audio than the best sound
would, in log base 1.0001 units per 10 ms frame (about 30 when the word was said, 60 and
more when the grammar forced other speech or noise into it).

Two scores of the words that carry the meaning decide, combined by a logistic model:

* the misfit per frame of all those words together;
* the misfit per frame of the worst of them (one forced word in a good sentence).

Skip words ("please", "hey") and fillers are left out of both: in noise the search fills
babble and music before and after a command with skip words, whose bad fit used to pull
a well-heard command below the threshold. A fragment (the search ended inside a
sentence) and an empty search have confidence 0.

The weights were fitted on the training split of `voiced bench accuracy` (medium size,
seed 1): utterances whose text became the intended command against those that became
another command or came from everyday speech (docs/accuracy.md, "What each change
bought"). Measured there and left out because they added nothing: the score against an
unconstrained phone loop (+0.003 AUC for +50% decoding time), the utterance's length,
its speaking rate, the number of skip words and the share of frames they cover.
The output is a probability that the command is right, so `asr.min_confidence` 0.5 is
the even odds point. It is not the default: 3 of the 30 spoken test fixtures (clean
espeak-ng voices the model fits poorly) score under 0.5 (docs/accuracy.md).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

LOG_BASE = 1.0001
"""pocketsphinx's log base: its scores are log_1.0001 of probabilities."""


@dataclass(frozen=True, slots=True)
class WordFit:
    """One decoded word and how well the audio fits it."""

    word: str
    """The word without its pronunciation variant ("the", not "the(2)")."""
    frames: int
    """Length in 10 ms frames (at least 1)."""
    score: float
    """Acoustic score of the word in pocketsphinx log units (0 or less)."""

    @property
    def misfit(self) -> float:
        """Acoustic misfit per frame (0: the best possible sound every frame)."""
        return -self.score / max(self.frames, 1)


@dataclass(frozen=True, slots=True)
class Calibration:
    """Weights of the logistic model (per unit of misfit per frame)."""

    bias: float
    overall: float
    """Weight of the misfit per frame over all meaningful words."""
    worst: float
    """Weight of the misfit per frame of the worst meaningful word."""


CALIBRATION = Calibration(bias=7.342, overall=-0.1392, worst=-0.03504)
"""Fitted on the training split of `voiced bench accuracy --size medium` (see module docs)."""


def log_score(linear: float) -> float:
    """pocketsphinx's Python binding hands segment scores out as probabilities
    (`logmath_exp`); back to log units (a score that underflowed to 0 is very bad)."""
    return math.log(linear) / math.log(LOG_BASE) if linear > 0 else -1e9


def meaningful(words: Sequence[WordFit], skip_words: Collection[str]) -> list[WordFit]:
    """The words that carry the meaning: all but skip words."""
    return [w for w in words if w.word not in skip_words]


def command_confidence(words: Sequence[WordFit], skip_words: Collection[str] = (),
                       calibration: Calibration = CALIBRATION) -> float:
    """Probability (0..1) that `words`, a whole sentence of the grammar, were said."""
    kept = meaningful(words, skip_words) or list(words)
    frames = sum(max(w.frames, 1) for w in kept)
    if not kept or frames <= 0:
        return 0.0
    overall = -sum(w.score for w in kept) / frames
    worst = max(w.misfit for w in kept)
    if not (math.isfinite(overall) and math.isfinite(worst)):
        return 0.0
    z = calibration.bias + calibration.overall * overall + calibration.worst * worst
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
