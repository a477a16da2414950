"""Enrollment by voice from a satellite: "learn my voice as Alice".

The intent `VoicedEnrollSpeaker` (slot `person`, from the people named in voiced.yaml)
starts a multi-turn session: voiced asks for a few sentences, keeps each utterance's
audio (no recognition needed), checks its quality and stores the embeddings.

Security: gated commands trust these profiles, so a voice may only
- add samples to a person it is already identified as, or
- create a new person when `speakers.voice_enrollment` is true and that person has no
  enrollment yet.
Everything else is refused aloud.
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
    samples: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Turn:
    """What to say next, and whether the session continues."""

    text: str
    more: bool
    outcome: Outcome = Outcome.ENROLLING


class VoiceEnrollment:
    """Per-site enrollment sessions."""

    def __init__(self, service: SpeakerService, allow_new: bool, samples: int = 3) -> None:
        self._service = service
        self._allow_new = allow_new
        self._samples = min(samples, len(PROMPTS))
        self._sessions: dict[str, _Enrolling] = {}

    def active(self, site: str) -> bool:
        """True while `site` is in an enrollment session."""
        return site in self._sessions

    def _known(self, name: str) -> bool:
        return any(p.name == name and (p.enrolled or p.other_models) for p in
                   self._service.store.people(self._service.model_id))

    def start(self, site: str, name: str | None, speaker: SpeakerMatch) -> Turn:
        """The person asked to be learned as `name`."""
        if not name:
            return Turn("Which name should I learn your voice as?", False, Outcome.REFUSED)
        if self._known(name):
            if speaker.name != name:
                log.warning("site %s: %s asked to add samples to %s; refused", site,
                            speaker.name, name)
                return Turn(f"Only {name} can add to {name}'s voice.", False, Outcome.REFUSED)
        elif not self._allow_new:
            return Turn("Learning new voices by voice is turned off. Use voiced speakers "
                        "enroll on the server.", False, Outcome.REFUSED)
        self._sessions[site] = _Enrolling(name)
        return Turn(f"Okay {name}. Please say: {PROMPTS[0]}", True)

    async def add(self, site: str, pcm: bytes) -> Turn:
        """One more sample; stores them all after the last."""
        session = self._sessions.get(site)
        if session is None:
            return Turn("There is no enrollment in progress.", False, Outcome.REFUSED)
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

    def cancel(self, site: str) -> None:
        """Forget a session (timeout, stop)."""
        self._sessions.pop(site, None)
