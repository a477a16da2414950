"""Which satellite answers when several of a room group hear one command: pure and
synchronous (no I/O, no asyncio, the time is an argument), so every rule is tested alone.

A *round* is one command in one group. The first satellite whose VAD starts an utterance
leads it and goes on at once (a single satellite pays no delay). When a second one of the
group starts while the round is undecided, a *contest* opens: the newcomers wait (their
models are not fed), and when every candidate has `score_ms` of speech, or `window_ms`
after the contest opened, each is scored on its own audio (`voiced.audio.levels`): its
first `score_ms` of speech, onset included, or, for one that had been hearing "speech"
for over ANCHOR_MS when the contest opened (a television), the `score_ms` from then; one
wins. A reload may change the groups and settings (`Arbiter.regroup`).
The winner's utterance runs; the losers' are kept, unheard, until the winner's utterance
is taken (or `keep_ms`), so that a winner whose own VAD then finds no speech is swapped
for the best loser. A satellite in a conversation (a follow-up turn) owns its group's next
utterance. The arbiter says what to do with `Action`s and, for each utterance that ends,
its `Fate`; `voiced.arbiter_service` carries them out.
"""


from voiced.arbitration.arbiter import Arbiter
from voiced.arbitration.decisions import (
    BAND_MODULATION_WEIGHT,
    CLIP_DB,
    FLUX_WEIGHT,
    LEVEL_WEIGHT,
    MODULATION_WEIGHT,
    ONSET_WEIGHT,
    RISE_WEIGHT,
    SNR_WEIGHT,
    SPEECH_RATIO_DB,
    WAKE_DB,
    Action,
    Anchor,
    Announce,
    ArbitrationSettings,
    Decision,
    Fate,
    Lose,
    Measure,
    Policy,
    Reason,
    Release,
    Scored,
    Verdict,
    Win,
    combined_score,
)

__all__ = [
    "BAND_MODULATION_WEIGHT",
    "CLIP_DB",
    "FLUX_WEIGHT",
    "LEVEL_WEIGHT",
    "MODULATION_WEIGHT",
    "ONSET_WEIGHT",
    "RISE_WEIGHT",
    "SNR_WEIGHT",
    "SPEECH_RATIO_DB",
    "WAKE_DB",
    "Action",
    "Anchor",
    "Announce",
    "Arbiter",
    "ArbitrationSettings",
    "Decision",
    "Fate",
    "Lose",
    "Measure",
    "Policy",
    "Reason",
    "Release",
    "Scored",
    "Verdict",
    "Win",
    "combined_score",
]
