"""Enrollment: check each sample's quality, embed the good ones, store them together.

Used by `voiced speakers enroll`, by enrollment by voice in the daemon (through
`SpeakerService.enroll`) and by the benchmark. Each sample is also cut into command-length
pieces whose vectors ("probes") let `voiced speakers calibrate` predict how commands, which
are shorter than enrollment sentences, will score. All or nothing: when any sample is refused,
nothing is stored, so a person is never left half-enrolled with a bad sample in their
profile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from voiced.const import ms_to_bytes
from voiced.speakers.base import SpeakerEmbedder
from voiced.speakers.quality import QualityLimits, QualityReport, check_quality
from voiced.speakers.store import SpeakerStore, check_name

log = logging.getLogger(__name__)

MIN_SAMPLES = 1
RECOMMENDED_SAMPLES = 3
"""Fewer samples than this enroll, with a warning: the profile will be less reliable."""
PROBE_MS = 1500
"""Length of the command-length pieces cut from each sample for calibration."""
PROBE_STEP_MS = 750
MAX_PROBES = 4
"""Probes per sample at most."""


def probe_windows(pcm: bytes, report: QualityReport) -> list[bytes]:
    """Command-length pieces of the speech in `pcm` (none when it is that short already)."""
    start, end = ms_to_bytes(report.speech_start_ms), ms_to_bytes(report.speech_end_ms)
    size, step = ms_to_bytes(PROBE_MS), ms_to_bytes(PROBE_STEP_MS)
    offsets = range(start, end - size + 1, step)
    return [pcm[o : o + size] for o in offsets][:MAX_PROBES]


@dataclass(frozen=True, slots=True)
class EnrollmentResult:
    """What happened to one enrollment request."""

    name: str
    reports: tuple[QualityReport, ...]
    """One quality report per sample, in order."""
    stored: int
    """Samples stored by this request (0 when refused)."""
    total: int
    """Samples the person has now with the current model."""

    @property
    def ok(self) -> bool:
        """True when the samples were stored."""
        return self.stored > 0

    def refused(self) -> list[tuple[int, QualityReport]]:
        """(index, report) of each sample that failed the quality check."""
        return [(i, r) for i, r in enumerate(self.reports) if not r.ok]


def enroll(
    embedder: SpeakerEmbedder,
    store: SpeakerStore,
    name: str,
    pcms: Sequence[bytes],
    sources: Sequence[str | None] = (),
    replace: bool = False,
    force: bool = False,
    limits: QualityLimits | None = None,
) -> EnrollmentResult:
    """Enroll `name` from internal-format recordings (blocking: run it on the engine).

    Every sample is quality-checked first; unless `force`, one bad sample refuses the whole
    request and nothing is stored. Raises SpeakerError for a bad name or a model change
    without `replace` (see `SpeakerStore.add_enrollment`).
    """
    check_name(name)
    if not replace:  # before the embedding work, not after it
        store.check_model(name, embedder.model_id)
    reports = tuple(check_quality(p, limits) for p in pcms)
    bad = [r for r in reports if not r.ok]
    if bad and not force:
        log.info("enrollment of %s refused: %d of %d samples failed the quality check",
                 name, len(bad), len(reports))
        return EnrollmentResult(name, reports, 0, 0)
    pieces = [probe_windows(p, r) for p, r in zip(pcms, reports, strict=True)]
    # one batch: the samples, then every probe of every sample
    flat = embedder.embed_batch([*pcms, *(w for ws in pieces for w in ws)])
    vectors, rest = flat[: len(pcms)], flat[len(pcms) :]
    probes = []
    for ws in pieces:
        probes.append(rest[: len(ws)])
        rest = rest[len(ws) :]
    total = store.add_enrollment(
        name,
        embedder.model_id,
        vectors,
        sources=sources,
        speech_ms=[r.speech_ms for r in reports],
        replace=replace,
        probes=probes,
    )
    if total < RECOMMENDED_SAMPLES:
        log.warning("%s has %d sample(s); %d or more make identification more reliable",
                    name, total, RECOMMENDED_SAMPLES)
    return EnrollmentResult(name, reports, len(vectors), total)
