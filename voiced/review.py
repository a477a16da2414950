"""The review queue: what voiced did not get right, kept with its audio for a person.

Utterances enter when the history writer records them (`on_row`, on the inference
engine's threads) and `review.queue` names their reason: not understood (`no_match`),
nothing recognized in speech (`empty`), a transcript below `review.min_confidence`
(`low_confidence`), a refused command (`refused`); or when a person marks one wrong
("that's not what I said" right after it, or the history's button: `marked_wrong`). Only
utterances with kept audio enter (`history.keep_audio`): the queue hard-links the history's
audio file into `<state_dir>/review/`, so pruning the history's audio leaves the queue's
copy; the queue has its own bounds (`max_items`, `max_days`, `max_corrected`).

A correction (the text really said, the intended intent and slots or "not a command", who
spoke) is stored with who made it and when, and the item leaves the queue: corrected items
are the training data `voiced dataset export` writes. What a correction teaches at once
(new sentences, aliases) is in `voiced.teach`; this module turns corrections into its
proposals and applies accepted ones.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voiced import teach
from voiced.errors import VoicedError
from voiced.models import Outcome
from voiced.review_store import Proposal, ReviewItem, ReviewStore
from voiced.storage import History, UtteranceRecord

if TYPE_CHECKING:
    from voiced.config import Config
    from voiced.intents.recognizer import IntentRecognizer
    from voiced.speakers.service import SpeakerService

log = logging.getLogger(__name__)

AUDIO_FOLDER = "review"
MAX_TEXT = 500
"""Longest corrected transcript (characters)."""
MAX_SLOTS = 20


class ReviewError(VoicedError):
    """A correction or action the queue refuses; `field` names what was wrong."""

    component = "review"

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(code, message)
        self.field = field


def read_kept_audio(path: Path) -> bytes:
    """Kept audio (FLAC or WAV, 16 kHz mono as the history writes it) as internal PCM."""
    import soundfile

    from voiced.const import SAMPLE_RATE

    samples, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ReviewError("audio_invalid", f"{path.name}: {rate} Hz, expected {SAMPLE_RATE}")
    return bytes(samples[:, 0].astype("<i2").tobytes())


@dataclass(frozen=True, slots=True)
class Correction:
    """What a person says an utterance really was."""

    text: str
    intent: str | None = None
    slots: Mapping[str, Any] = field(default_factory=dict)
    not_command: bool = False
    speaker: str | None = None
    """Who really spoke (a person enrolled for `add_to_profile`)."""
    add_to_profile: bool = False
    """Add the audio to the speaker's voice profile (verified as for voice enrollment)."""
    by: str = "someone"
    """Who corrected it (a name they gave)."""
    via: str = ""
    """How it came in (the HTTP client's address and authorization)."""


class ReviewQueue:
    """Queue policy, the queue's audio and corrections, on the history database."""

    def __init__(self, config: Config, history: History) -> None:
        self.config = config.review
        self.state_dir = config.state_dir
        self.history = history
        self.store = ReviewStore(history.path)
        self.queued = 0
        self.pruned = 0

    def close(self) -> None:
        """Close the store (the history is its owner's)."""
        self.store.close()

    # ---- entering the queue ---------------------------------------------------------------
    def reason_for(self, record: UtteranceRecord) -> str | None:
        """Why `record` belongs in the queue (None: it does not)."""
        wanted = set(self.config.queue)
        if record.intent == teach.NOT_WHAT_I_SAID:
            return None
        if record.outcome == Outcome.REFUSED and "refused" in wanted:
            return "refused"
        if record.outcome == Outcome.NOT_RECOGNIZED:
            detail = record.outcome_detail or "no_match"
            if detail in wanted:
                return detail
        low = record.confidence < self.config.min_confidence and record.text.strip()
        if low and record.outcome in (Outcome.NOT_RECOGNIZED, Outcome.HANDLED,
                                      Outcome.NO_HANDLER) and "low_confidence" in wanted:
            return "low_confidence"
        return None

    def on_row(self, record: UtteranceRecord) -> None:
        """The history writer stored `record` (with its id): queue it when it qualifies.
        Never raises: the history row is what matters."""
        try:
            reason = self.reason_for(record)
            if reason is not None and record.audio_path and record.id is not None:
                self.add(record, reason)
        except Exception:
            log.exception("review: could not queue utterance %s", record.id)

    def add(self, record: UtteranceRecord, reason: str) -> tuple[ReviewItem, bool]:
        """Queue a history row that has kept audio (ReviewError `no_audio` without);
        returns the item and whether it is new."""
        assert record.id is not None
        source = self._history_audio(record)
        if source is None:
            raise ReviewError("no_audio", f"utterance {record.id} has no kept audio (it was "
                              "typed, history.keep_audio was off, or it was pruned)",
                              field="utterance")
        item_id, new = self.store.enqueue(record.id, reason, None, None)
        if new:
            relative, size = self._keep(source, item_id)
            self.store.set_audio(item_id, relative, size)
            self.queued += 1
            log.info("review: queued utterance %d (%s): %r", record.id, reason, record.text)
            self.prune()
        item = self.store.get(item_id)
        assert item is not None
        return item, new

    def mark_wrong(self, utterance_id: int) -> tuple[ReviewItem, bool]:
        """A person says this history row was wrong: queue it (again)."""
        record = self.history.get(utterance_id)
        if record is None:
            raise ReviewError("not_found", f"no utterance {utterance_id} in the history",
                              field="utterance")
        return self.add(record, "marked_wrong")

    def previous_command(self, site: str, now: float) -> UtteranceRecord | None:
        """The site's latest utterance within `wrong_within_s`, other than "that's not
        what I said" itself."""
        records, _ = self.history.query(site=site, since=now - self.config.wrong_within_s,
                                        limit=5)
        return next((r for r in records if r.intent != teach.NOT_WHAT_I_SAID), None)

    def _history_audio(self, record: UtteranceRecord) -> Path | None:
        if not record.audio_path:
            return None
        path = self.state_dir / record.audio_path
        return path if path.is_file() else None

    def _keep(self, source: Path, item_id: int) -> tuple[str, int]:
        folder = self.state_dir / AUDIO_FOLDER
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = folder / f"{item_id}{source.suffix}"
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)  # no copy: the history's pruning only drops its name
        except OSError:
            shutil.copyfile(source, target)
        return str(target.relative_to(self.state_dir)), target.stat().st_size

    def audio_file(self, item: ReviewItem) -> Path | None:
        """The item's audio file, when it exists inside the state folder."""
        if not item.audio_path:
            return None
        root = self.state_dir.resolve()
        path = (self.state_dir / item.audio_path).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None

    def _delete(self, relative: str) -> None:
        try:
            (self.state_dir / relative).unlink(missing_ok=True)
        except OSError:
            log.exception("review: could not delete %s", relative)

    def prune(self, now: float | None = None) -> int:
        """Apply the queue's bounds; returns how many items were dropped."""
        cfg = self.config
        paths = self.store.prune(cfg.max_items, cfg.max_days * 86400, cfg.max_corrected, now)
        for relative in paths:
            self._delete(relative)
        self.pruned += len(paths)
        return len(paths)

    # ---- corrections ------------------------------------------------------------------------
    def item(self, item_id: int) -> ReviewItem:
        """The item, or ReviewError `not_found`."""
        found = self.store.get(item_id)
        if found is None:
            raise ReviewError("not_found", f"no review item {item_id}", field="id")
        return found

    def discard(self, item_id: int, by: str, via: str) -> ReviewItem:
        """Drop an item from the queue (and its audio: it will not be training data)."""
        self.item(item_id)
        relative = self.store.discard(item_id, by, via)
        if relative:
            self._delete(relative)
        return self.item(item_id)

    def check(self, correction: Correction, recognizer: IntentRecognizer) -> Correction:
        """The correction with its values checked against the intents (ReviewError naming
        the field otherwise)."""
        text = " ".join(correction.text.split())
        if not text:
            raise ReviewError("field_missing", "text: say what was really said", "text")
        if len(text) > MAX_TEXT:
            raise ReviewError("field_invalid", f"text: at most {MAX_TEXT} characters", "text")
        if correction.not_command:
            if correction.intent is not None or correction.slots:
                raise ReviewError("field_invalid", "intent: a sentence that is not a command "
                                  "has no intent or slots", "intent")
        elif correction.intent is None:
            raise ReviewError("field_missing", "intent: pick the intended intent, or set "
                              "not_command", "intent")
        elif correction.intent not in recognizer.intent_names():
            raise ReviewError("field_invalid", f"intent: {correction.intent!r} is not a "
                              "loaded intent", "intent")
        slots = {str(k): teach.coerce(v) for k, v in correction.slots.items()}
        if len(slots) > MAX_SLOTS:
            raise ReviewError("field_invalid", f"slots: at most {MAX_SLOTS}", "slots")
        if correction.intent is not None:
            known = recognizer.slot_names(correction.intent)
            unknown = sorted(set(slots) - known)
            if unknown:
                raise ReviewError("field_invalid", f"slots: {correction.intent} has no slot "
                                  f"{unknown[0]!r} (it has: {', '.join(sorted(known)) or 'none'})",
                                  "slots")
        for name, value in slots.items():
            if not isinstance(value, str | int | float | bool) or value == "":
                raise ReviewError("field_invalid", f"slots: {name} must be a non-empty text "
                                  "or number", "slots")
        if correction.add_to_profile and not correction.speaker:
            raise ReviewError("field_missing", "speaker: name who spoke to add the audio to "
                              "their voice profile", "speaker")
        return Correction(text, correction.intent, slots, correction.not_command,
                          correction.speaker, correction.add_to_profile, correction.by,
                          correction.via)

    def correct(self, item_id: int, correction: Correction,
                recognizer: IntentRecognizer) -> tuple[ReviewItem, list[Proposal]]:
        """Store a checked correction; returns the item and the proposals it supports."""
        item = self.item(item_id)
        if item.status == "discarded":
            raise ReviewError("discarded", f"review item {item_id} was discarded (its audio "
                              "is gone)", "id")
        fixed = self.check(correction, recognizer)
        self.store.correct(item_id, text=fixed.text, intent=fixed.intent, slots=fixed.slots,
                           not_command=fixed.not_command, speaker=fixed.speaker,
                           by=fixed.by, via=fixed.via)
        return self.item(item_id), self.teach(self.item(item_id), recognizer)

    def teach(self, item: ReviewItem, recognizer: IntentRecognizer) -> list[Proposal]:
        """Record what a corrected item supports: a sentence, aliases."""
        if item.text is None:
            return []
        language = item.utterance.language or recognizer.language
        found: list[Proposal] = []
        if item.intent is not None:
            sentence = teach.sentence_proposal(recognizer, item.text, item.intent,
                                               item.slots, language)
            if sentence is not None:
                key = f"{item.intent}:{sentence['sentence']}:{sorted(item.slots.items())}"
                found.append(self.store.propose("sentence", language, key, item.intent,
                                                sentence, item.id))
        heard = item.utterance.text
        if heard and not item.not_command:
            for alias in teach.alias_proposals(recognizer, heard, item.text, language):
                key = f"{alias['list']}:{alias['heard']}:{alias['out']}"
                found.append(self.store.propose("alias", language, key, item.intent, alias,
                                                item.id, offer_at=self.config.alias_after))
        return found

    def apply(self, proposal: Proposal) -> Path:
        """Write an accepted proposal to the learned files; returns the file written."""
        folder = teach.learned_dir(self.state_dir)
        body = proposal.body
        if proposal.kind == "sentence":
            assert proposal.intent is not None
            return teach.add_sentence(folder, proposal.language, proposal.intent,
                                      str(body["sentence"]), body.get("slots") or {})
        return teach.add_alias(folder, proposal.language, str(body["list"]),
                               str(body["heard"]), body["out"])


async def accept(review: ReviewQueue, proposal_id: int, by: str,
                 reload: Callable[[], Awaitable[bool]], run: Any) -> Proposal:
    """Write a proposal to the learned files and reload the intents (as any intent change
    does). A failed reload puts the file back as it was (ReviewError `reload_failed`).
    `run` runs blocking work off the event loop (the inference engine's `run`)."""
    proposal = await run(review.store.proposal, proposal_id)
    if proposal is None:
        raise ReviewError("not_found", f"no proposal {proposal_id}", "id")
    if proposal.status != "pending":
        raise ReviewError("already_decided", f"proposal {proposal_id} is {proposal.status}",
                          "id")
    folder = teach.learned_dir(review.state_dir)
    target = (teach.sentences_file(folder, proposal.language) if proposal.kind == "sentence"
              else folder / teach.ALIASES_FILE)
    before = target.read_bytes() if target.is_file() else None
    await run(review.apply, proposal)
    if not await reload():
        if before is None:
            target.unlink(missing_ok=True)
        else:
            target.write_bytes(before)
        await reload()
        raise ReviewError("reload_failed", "the intents did not reload with the learned "
                          f"{proposal.kind}; {target} is as it was")
    await run(review.store.decide, proposal_id, "accepted", by)
    log.info("review: %s accepted %s %r into %s", by, proposal.kind, dict(proposal.body),
             target)
    result = await run(review.store.proposal, proposal_id)
    assert result is not None
    return result


async def add_to_profile(review: ReviewQueue, item: ReviewItem,
                         speakers: SpeakerService | None, read_pcm: Callable[[Path], bytes],
                         run: Any) -> str:
    """Add a corrected item's audio to the named speaker's voice profile, verified as
    voice enrollment verifies a sample added by voice: it must be identified as that
    person, and pass the quality check. Returns what happened (also stored)."""
    name = item.speaker or ""
    path = review.audio_file(item)
    if speakers is None:
        outcome = "refused: speaker identification is off"
    elif path is None:
        outcome = "refused: the audio is gone"
    elif not any(p.name == name and p.enrolled for p in
                 await run(speakers.store.people, speakers.model_id)):
        outcome = f"refused: {name} is not enrolled (enroll them on the Speakers view first)"
    else:
        pcm = await run(read_pcm, path)
        match = await speakers.verify(pcm)
        if match.name != name:
            outcome = (f"refused: the voice was identified as {match.name} "
                       f"({match.confidence:.2f}), not {name}")
        else:
            result = await speakers.enroll(name, [pcm], source=f"review:{item.id}")
            outcome = (f"added to {name}'s profile ({result.total} samples)" if result.ok else
                       "refused: " + "; ".join(r.describe() for _, r in result.refused()))
    log.info("review item %d: voice profile: %s", item.id, outcome)
    await run(review.store.set_profile, item.id, outcome)
    return outcome


async def not_what_i_said(review: ReviewQueue | None, site: str, run: Any) -> \
        tuple[str, Outcome, str]:
    """"That's not what I said": queue the site's previous command. Returns what to say,
    the outcome and its detail."""
    if review is None:
        return ("I am not keeping recordings, so I cannot learn from that.", Outcome.REFUSED,
                "the review queue is off (history.keep_audio)")
    previous = await run(review.previous_command, site, time.time())
    if previous is None or previous.id is None:
        return ("I don't have a recent command from here to look at.", Outcome.REFUSED,
                "no recent command on this site")
    try:
        item, _ = await run(review.mark_wrong, previous.id)
    except ReviewError as exc:
        return ("I have no recording of that one, so I cannot learn from it.",
                Outcome.REFUSED, exc.message)
    return ("Sorry about that. I put it in the review queue.", Outcome.HANDLED,
            f"marked utterance {previous.id} for review (item {item.id})")
