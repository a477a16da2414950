"""Enrollment by voice from a satellite: "learn my voice as Alice".

The intent `VoicedEnrollSpeaker` (slot `person`, from the people named in voiced.yaml)
starts a multi-turn session: voiced asks for a few sentences, keeps each utterance's
audio (no recognition needed), checks its quality and stores the embeddings.

Security: gated commands trust these profiles, so a voice may only
- add samples to a person it is already identified as (`speakers.voice_enrollment_add`,
  on by default), and EVERY sample must be verified as that person, or
- create a new person when `speakers.voice_enrollment` is true (off by default) and that
  person has no enrollment yet, from a voice nobody is known as; every sample must be the
  same voice as the trigger sentence ("learn my voice as NAME").
A sample that fails the check ends the enrollment: refused aloud, logged, nothing stored
(someone else speaking the follow-up sentences used to be stored as the person).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from voiced.errors import SpeakerError
from voiced.models import Outcome, SpeakerMatch

if TYPE_CHECKING:
    from voiced.speakers.service import SpeakerService

log = logging.getLogger(__name__)

ENROLL_INTENT = "VoicedEnrollSpeaker"
ENROLL_MARK = "voiced-enroll"
ENROLL_TURN = "enroll"
"""`Utterance.turn` of an enrollment sample (voiced's own follow-up; customData says
ENROLL_MARK for Hermes clients, but is never what decides)."""
"""customData of the enrollment session's follow-up turns."""
PROMPTS = (
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a watched pot never boils but the kettle is singing",
    "four score and seven years ago our fathers brought forth a new nation",
)


@dataclass(slots=True)
class _Enrolling:
    name: str
    existing: bool
    """Adding to a known person (each sample is identified), or a new one (each sample is
    compared with the trigger sentence)."""
    trigger: bytes
    samples: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Turn:
    """What to say next, and whether the session continues."""

    text: str
    more: bool
    outcome: Outcome = Outcome.ENROLLING


class VoiceEnrollment:
    """Per-site enrollment sessions."""

    def __init__(self, service: SpeakerService, allow_new: bool, samples: int = 3,
                 allow_add: bool = True) -> None:
        self._service = service
        self._allow_new = allow_new
        self._allow_add = allow_add
        self._samples = min(samples, len(PROMPTS))
        self._sessions: dict[str, _Enrolling] = {}

    def active(self, site: str) -> bool:
        """True while `site` is in an enrollment session."""
        return site in self._sessions

    def _known(self, name: str) -> bool:
        return any(p.name == name and (p.enrolled or p.other_models) for p in
                   self._service.store.people(self._service.model_id))

    def start(self, site: str, name: str | None, speaker: SpeakerMatch,
              trigger: bytes = b"") -> Turn:
        """The person asked (in `trigger`, the audio of that request) to be learned as
        `name`."""
        if not name:
            return Turn("Which name should I learn your voice as?", False, Outcome.REFUSED)
        if not trigger:
            return Turn("I can only learn a voice from a satellite.", False, Outcome.REFUSED)
        existing = self._known(name)
        if existing:
            if not self._allow_add:
                return _refused(site, f"adding to {name}'s voice by voice is turned off",
                                "Adding to a voice by voice is turned off.")
            if speaker.name != name:
                return _refused(site, f"{speaker.name} asked to add samples to {name}",
                                f"Only {name} can add to {name}'s voice.")
        elif not self._allow_new:
            return Turn("Learning new voices by voice is turned off. Use voiced speakers "
                        "enroll on the server.", False, Outcome.REFUSED)
        elif speaker.known:
            return _refused(site, f"{speaker.name} asked to be learned as new person {name}",
                            f"I already know your voice as {speaker.name}.")
        self._sessions[site] = _Enrolling(name, existing, trigger)
        return Turn(f"Okay {name}. Please say: {PROMPTS[0]}", True)

    async def add(self, site: str, pcm: bytes) -> Turn:
        """One more sample, verified; stores them all after the last."""
        session = self._sessions.get(site)
        if session is None:
            return Turn("There is no enrollment in progress.", False, Outcome.REFUSED)
        problem = await self._check(session, pcm)
        if problem is not None:
            del self._sessions[site]
            return _refused(site, f"enrollment of {session.name}: {problem}; nothing stored",
                            "That was not the same voice. I stored nothing.")
        session.samples.append(pcm)
        if len(session.samples) < self._samples:
            return Turn(f"Thanks. Now say: {PROMPTS[len(session.samples)]}", True)
        del self._sessions[site]
        try:
            result = await self._service.enroll(session.name, session.samples,
                                                source=f"satellite:{site}")
        except SpeakerError as exc:
            return Turn(f"I could not learn your voice: {exc.message}", False, Outcome.ERROR)
        if not result.ok:
            problems = "; ".join(r.describe() for _, r in result.refused())
            return Turn(f"I could not learn your voice: {problems}. Please try again.", False,
                        Outcome.ERROR)
        return Turn(f"Got it, I will know your voice, {session.name}.", False, Outcome.ENROLLED)

    async def _check(self, session: _Enrolling, pcm: bytes) -> str | None:
        """Why this sample is not the enrolling person's voice (None: it is)."""
        if session.existing:
            match = await self._service.verify(pcm)
            if match.name != session.name:
                return f"a sample was identified as {match.name} ({match.confidence:.2f})"
            return None
        threshold = self._service.threshold()
        for earlier in (session.trigger, *session.samples[:1]):
            score = await self._service.similarity(earlier, pcm)
            if score < threshold:
                return f"a sample matched the voice that asked only {score:.2f} < {threshold:.2f}"
        return None

    def cancel(self, site: str) -> None:
        """Forget a session (timeout, stop)."""
        self._sessions.pop(site, None)


def _refused(site: str, why: str, say: str) -> Turn:
    log.warning("site %s: voice enrollment refused: %s", site, why)
    return Turn(say, False, Outcome.REFUSED)
