"""`voiced bench speakers`: speaker identification accuracy, EER, FAR/FRR and embedding time.

Two voice sets, each synthesized once and cached (see `voiced.speakers.voices`):

* real-speaker voices: five people (flite awb, rms, slt, kal16; festival ked, and festival
  kal, which is Kal again and counts as the same person as kal16), plus two espeak-ng
  voices that are never enrolled;
* eight espeak-ng voices (parameter tweaks of one synthesizer: a harder, less realistic set).

Every person is enrolled from 5 sentences (one voice of theirs: flite kal16 for Kal) the
way `voiced speakers enroll` does it, with quality checks and calibration probes. Each
person in turn is then left out of enrollment (a fold), so every fold has a real person
who was never enrolled beside the strangers; the threshold is calibrated per fold from
the enrolled samples alone, exactly as `voiced speakers calibrate` does. Every test
utterance of every voice is identified in every fold:

* identification accuracy: enrolled people named correctly, everyone else `unknown`;
* EER: every test utterance scored against every enrolled person, pooled over folds;
* FAR / FRR at the calibrated threshold: the same trials, each fold at its own threshold;
* strangers accepted: utterances of voices not enrolled in that fold that were given a
  name, i.e. would have run a command gated to that name (the target is zero);
* embedding time: one utterance at a time, as the daemon does at N = 1;
* speaker time after the endpoint: the same utterances fed to the streaming path
  (`start_stream`) in 20 ms chunks, as a satellite sends them; what is timed is `finish()`,
  the work left when the person stops speaking. Its vector is compared with the whole
  utterance's (cosine). For a backend that streams, the same again for a copy 20 dB
  quieter, where resemblyzer's volume normalization makes the stream interpolate between
  gains (see `voiced.speakers.streaming`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voiced.const import BYTES_PER_SECOND
from voiced.errors import VoicedError
from voiced.speakers import voices

REAL_STRANGERS = ("espeak-en-us+m3", "espeak-en-gb+f2")
"""espeak-ng voices that are never enrolled in the real-speaker set."""
ENROLL_VOICE = {"kal": "flite-kal16"}
"""The voice a person enrolls with when they have several (others are tests only)."""
CHUNK_MS = 20
"""Chunk size the streaming path is fed in (a satellite's frame)."""
QUIET_DB = 20.0
"""How much quieter the second streaming pass is (below resemblyzer's -30 dBFS target)."""


def register(sub: Any) -> None:
    """Add `voiced bench speakers`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "speakers", help="speaker identification accuracy, EER, FAR/FRR, embedding time",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backend", choices=["resemblyzer", "speechbrain"], default="resemblyzer")
    p.add_argument("--model", help="speechbrain: hub id or checkpoint folder")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--tests", type=int, default=10, help="test utterances per voice (1..15)")
    p.add_argument("--margin", type=float, default=0.05, help="speakers.margin")
    p.add_argument("--far-weight", type=float, default=None, help="calibration cost ratio")
    p.add_argument("--sets", default="real,espeak", help="real, espeak or both")
    p.add_argument("--audio-dir", type=Path,
                   default=Path(tempfile.gettempdir()) / "voiced-bench-voices",
                   help="where synthesized utterances are cached")
    p.add_argument("--state-dir", type=Path, default=Path("state"),
                   help="model downloads (speechbrain hub ids)")
    p.add_argument("--streams", type=int, default=0,
                   help="instead: this many satellites streaming at once in real time "
                        "(speaker stage CPU, endpoint time, batches; voiced.bench.speaker_streams)")
    p.add_argument("--utterances", type=int, default=3, help="--streams: commands per satellite")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class SetResult:
    """Figures for one voice set."""

    name: str
    people: list[str]
    strangers: list[str]
    folds: int
    test_utterances: int
    identification_accuracy: float
    eer: float
    thresholds: list[float]
    far: float
    frr: float
    expected_far: float
    expected_frr: float
    strangers_accepted: int
    stranger_utterances: int
    misnamed: int
    """Enrolled people's utterances given someone else's name."""
    genuine_trials: int
    impostor_trials: int


@dataclass(slots=True)
class Timings:
    """Per test utterance: whole-utterance and streaming figures."""

    embed_ms: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    finish_ms: list[float] = field(default_factory=list)
    feed_ms: list[float] = field(default_factory=list)
    """Time spent in `feed()` over the whole utterance."""
    cosine: list[float] = field(default_factory=list)
    finish_steps: list[int] = field(default_factory=list)
    """LSTM steps left for `finish()` (resemblyzer; the whole utterance: 160 a window)."""
    quiet_finish_ms: list[float] = field(default_factory=list)
    quiet_feed_ms: list[float] = field(default_factory=list)
    quiet_cosine: list[float] = field(default_factory=list)

    def report(self) -> dict[str, float]:
        """Means, medians and p95s for the JSON report."""
        out = {
            "embed_ms_mean": statistics.fmean(self.embed_ms),
            "embed_ms_median": statistics.median(self.embed_ms),
            "embed_ms_p95": float(np.percentile(self.embed_ms, 95)),
            "utterance_s_mean": statistics.fmean(self.seconds),
            "feed_ms_per_audio_s": sum(self.feed_ms) / sum(self.seconds),
            "stream_cosine_min": min(self.cosine),
        }
        if self.finish_steps:
            out["finish_steps_mean"] = statistics.fmean(self.finish_steps)
            out["finish_steps_max"] = max(self.finish_steps)
        for name, values in (("endpoint", self.finish_ms),
                             ("quiet_endpoint", self.quiet_finish_ms)):
            if values:
                out[f"{name}_ms_mean"] = statistics.fmean(values)
                out[f"{name}_ms_median"] = statistics.median(values)
                out[f"{name}_ms_p95"] = float(np.percentile(values, 95))
        if self.quiet_cosine:
            out["quiet_stream_cosine_min"] = min(self.quiet_cosine)
            out["quiet_feed_ms_per_audio_s"] = sum(self.quiet_feed_ms) / sum(self.seconds)
        return out


def _stream(embedder: Any, pcm: bytes) -> tuple[np.ndarray, float, float, int | None]:
    """(vector, ms in finish(), ms in all feed() calls, LSTM steps in finish()) for `pcm`
    fed in 20 ms chunks."""
    from voiced.const import ms_to_bytes

    chunk = ms_to_bytes(CHUNK_MS)
    stream = embedder.start_stream()
    fed = 0.0
    for i in range(0, len(pcm), chunk):
        started = time.perf_counter()
        stream.feed(pcm[i : i + chunk])
        fed += time.perf_counter() - started
    started = time.perf_counter()
    vector = stream.finish()
    finish_ms = (time.perf_counter() - started) * 1000
    return vector, finish_ms, fed * 1000, getattr(stream, "finish_steps", None)


def _quieter(pcm: bytes, db: float) -> bytes:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) * 10 ** (-db / 20)
    return np.round(samples).astype("<i2").tobytes()


def _time_utterance(embedder: Any, pcm: bytes, timings: Timings) -> np.ndarray:
    """The whole-utterance vector, with both paths timed and compared."""
    started = time.perf_counter()
    vector = embedder.embed(pcm)
    timings.embed_ms.append((time.perf_counter() - started) * 1000)
    timings.seconds.append(len(pcm) / BYTES_PER_SECOND)
    streamed, finish_ms, feed_ms, steps = _stream(embedder, pcm)
    timings.finish_ms.append(finish_ms)
    timings.feed_ms.append(feed_ms)
    timings.cosine.append(float(np.dot(vector, streamed)))
    if steps is not None:
        timings.finish_steps.append(steps)
    if not embedder.supports_streaming:
        return vector  # buffered: nothing depends on the level
    quiet = _quieter(pcm, QUIET_DB)
    streamed, finish_ms, feed_ms, _ = _stream(embedder, quiet)
    timings.quiet_finish_ms.append(finish_ms)
    timings.quiet_feed_ms.append(feed_ms)
    timings.quiet_cosine.append(float(np.dot(embedder.embed(quiet), streamed)))
    return vector


@dataclass(slots=True)
class Sample:
    """An enrollment sample's vector and the vectors of its calibration probes."""

    vector: np.ndarray
    probes: list[np.ndarray]


def _embed_enrollment(embedder: Any, files: Sequence[Path]) -> list[Sample]:
    """Enrollment vectors and probes exactly as `voiced speakers enroll` makes them."""
    from voiced.audio.wav import read_wav_file
    from voiced.speakers.enrollment import probe_windows
    from voiced.speakers.quality import check_quality

    samples = []
    for f in files:
        pcm = read_wav_file(f)
        report = check_quality(pcm)
        if not report.ok:
            raise VoicedError("bench_bad_sample", f"{f}: {report.describe()}")
        vecs = embedder.embed_batch([pcm, *probe_windows(pcm, report)])
        samples.append(Sample(vecs[0], vecs[1:]))
    return samples


def _evaluate(
    name: str,
    people: dict[str, list[Sample]],
    tests: dict[str, list[np.ndarray]],
    person_of: dict[str, str],
    margin: float,
    far_weight: float,
) -> SetResult:
    """Leave-one-person-out folds over `people`; `tests` by voice id."""
    from voiced.models import UNKNOWN_SPEAKER
    from voiced.speakers.matching import (
        Matcher,
        Profile,
        calibrate,
        equal_error_rate,
    )

    genuine: list[float] = []
    impostor: list[float] = []
    false_acc = false_rej = n_gen = n_imp = 0
    correct = total = accepted = stranger_total = misnamed = 0
    thresholds: list[float] = []
    expected: list[tuple[float, float]] = []
    for left_out in people:
        enrolled = {p: s for p, s in people.items() if p != left_out}
        cal = calibrate(
            {p: np.stack([s.vector for s in ss]) for p, ss in enrolled.items()},
            far_weight,
            probes={p: [(i, v) for i, s in enumerate(ss) for v in s.probes]
                    for p, ss in enrolled.items()},
        )
        thresholds.append(cal.threshold)
        expected.append((cal.expected_far, cal.expected_frr))
        matcher = Matcher(
            tuple(Profile(p, np.stack([s.vector for s in ss])) for p, ss in enrolled.items()),
            cal.threshold, margin,
        )
        for voice, vectors in tests.items():
            person = person_of[voice]
            is_enrolled = person in enrolled
            for v in vectors:
                match = matcher.identify(v)
                total += 1
                correct += match.name == (person if is_enrolled else UNKNOWN_SPEAKER)
                if not is_enrolled:
                    stranger_total += 1
                    accepted += match.known
                elif match.known and match.name != person:
                    misnamed += 1
                for p, score in match.scores.items():
                    if p == person:
                        genuine.append(score)
                        n_gen += 1
                        false_rej += score < cal.threshold
                    else:
                        impostor.append(score)
                        n_imp += 1
                        false_acc += score >= cal.threshold
    eer, _ = equal_error_rate(genuine, impostor)
    return SetResult(
        name=name,
        people=sorted(people),
        strangers=sorted({v for v, p in person_of.items() if p not in people}),
        folds=len(people),
        test_utterances=sum(len(v) for v in tests.values()),
        identification_accuracy=correct / total,
        eer=eer,
        thresholds=thresholds,
        far=false_acc / n_imp,
        frr=false_rej / n_gen,
        expected_far=float(np.mean([e[0] for e in expected])),
        expected_frr=float(np.mean([e[1] for e in expected])),
        strangers_accepted=accepted,
        stranger_utterances=stranger_total,
        misnamed=misnamed,
        genuine_trials=n_gen,
        impostor_trials=n_imp,
    )


def _run_set(
    name: str,
    set_voices: Sequence[voices.Voice],
    strangers: Sequence[voices.Voice],
    embedder: Any,
    args: argparse.Namespace,
    timings: Timings,
) -> SetResult:
    from voiced.audio.wav import read_wav_file
    from voiced.speakers.matching import DEFAULT_FAR_WEIGHT

    people: dict[str, list[Sample]] = {}
    tests: dict[str, list[np.ndarray]] = {}
    person_of: dict[str, str] = {}
    for voice in [*set_voices, *strangers]:
        person_of[voice.id] = voice.person
        enroll_files, test_files = voices.enrollment_and_test(
            voice, args.audio_dir, n_enroll=voices.ENROLL_SENTENCES, n_test=args.tests)
        enrolls_with = ENROLL_VOICE.get(voice.person, voice.id)
        if voice in set_voices and enrolls_with == voice.id:
            people[voice.person] = _embed_enrollment(embedder, enroll_files)
        tests[voice.id] = [_time_utterance(embedder, read_wav_file(f), timings)
                           for f in test_files]
    return _evaluate(name, people, tests, person_of, args.margin,
                     args.far_weight or DEFAULT_FAR_WEIGHT)


def run(args: argparse.Namespace) -> int:
    """Synthesize, enroll, identify and report."""
    from voiced.speakers.base import resolve_device
    from voiced.speakers.service import create_embedder

    if args.streams:
        from voiced.bench.speaker_streams import run_streams

        return run_streams(args)
    sets = {s.strip() for s in args.sets.split(",") if s.strip()}
    if not sets or sets - {"real", "espeak"} or not 1 <= args.tests <= 15:
        print("voiced bench speakers: --sets takes real and/or espeak; --tests 1..15",
              file=sys.stderr)
        return 2
    needed = {v.synth for v in voices.ALL_VOICES.values()
              if ("real" in sets and v in voices.REAL_VOICES) or v.synth == "espeak"}
    missing = [s for s in sorted(needed) if not voices.synth_available(s)]
    if missing:
        print(f"voiced bench speakers: not installed: {', '.join(missing)} (apt install flite "
              "festival festvox-kdlpc16k festvox-kallpc16k espeak-ng)", file=sys.stderr)
        return 1
    try:
        started = time.monotonic()
        embedder = create_embedder(args.backend, args.model, args.device, args.state_dir)
        embedder.load()
        timings = Timings()
        results = []
        if "real" in sets:
            strangers = [voices.ALL_VOICES[v] for v in REAL_STRANGERS]
            results.append(_run_set("real-speaker voices", voices.REAL_VOICES, strangers,
                                    embedder, args, timings))
        if "espeak" in sets:
            results.append(_run_set("espeak-ng voices", voices.ESPEAK_VOICES, (),
                                    embedder, args, timings))
    except VoicedError as exc:
        print(f"voiced bench speakers: {exc.message}", file=sys.stderr)
        return 1
    report = {
        "backend": args.backend,
        "model_id": embedder.model_id,
        "device": resolve_device(args.device),
        "cpu": platform.processor() or platform.machine(),
        "streaming": embedder.supports_streaming,
        **timings.report(),
        "wall_s": time.monotonic() - started,
        "sets": [asdict(r) for r in results],
    }
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report, results)
    return 0


def _print_report(report: dict[str, Any], results: list[SetResult]) -> None:
    print(f"speaker identification, backend {report['backend']} ({report['model_id']}) "
          f"on {report['device']}")
    for r in results:
        print(f"\n{r.name}: {len(r.people)} people ({', '.join(r.people)}), "
              f"{r.folds} folds each leaving one person out of enrollment")
        if r.strangers:
            print(f"  never enrolled in any fold: {', '.join(r.strangers)}")
        print(f"  test utterances             {r.test_utterances} per fold")
        print(f"  identification accuracy     {r.identification_accuracy:.1%}")
        print(f"  equal error rate            {r.eer:.2%}  ({r.genuine_trials} genuine, "
              f"{r.impostor_trials} impostor trials)")
        print(f"  calibrated threshold        {min(r.thresholds):.3f} .. "
              f"{max(r.thresholds):.3f}")
        print(f"  FAR / FRR at threshold      {r.far:.2%} / {r.frr:.2%}  (calibration "
              f"expected {r.expected_far:.2%} / {r.expected_frr:.2%})")
        print(f"  strangers given a name      {r.strangers_accepted} of "
              f"{r.stranger_utterances} utterances")
        print(f"  enrolled but misnamed       {r.misnamed}")
    print(f"\nembedding time per utterance: {report['embed_ms_mean']:.1f} ms mean, "
          f"{report['embed_ms_median']:.1f} ms median, {report['embed_ms_p95']:.1f} ms p95 "
          f"(utterances {report['utterance_s_mean']:.2f} s on average; {report['cpu']})")
    how = "streaming" if report["streaming"] else "buffered: no streaming in this backend"
    print(f"speaker time after the endpoint ({how}; finish() after {CHUNK_MS} ms chunks): "
          f"{report['endpoint_ms_mean']:.1f} ms mean, {report['endpoint_ms_median']:.1f} ms "
          f"median, {report['endpoint_ms_p95']:.1f} ms p95")
    print(f"  vector vs whole utterance: cosine >= {report['stream_cosine_min']:.7f}; "
          f"feed() while speaking: {report['feed_ms_per_audio_s']:.1f} ms per second of audio")
    if "finish_steps_mean" in report:
        print(f"  LSTM steps left for finish(): {report['finish_steps_mean']:.0f} mean, "
              f"{report['finish_steps_max']} max (the whole utterance: 160 per window)")
    if "quiet_endpoint_ms_mean" in report:
        print(f"  {QUIET_DB:.0f} dB quieter: {report['quiet_endpoint_ms_mean']:.1f} ms mean, "
              f"{report['quiet_endpoint_ms_median']:.1f} ms median, "
              f"{report['quiet_endpoint_ms_p95']:.1f} ms p95; cosine >= "
              f"{report['quiet_stream_cosine_min']:.7f}; feed() "
              f"{report['quiet_feed_ms_per_audio_s']:.1f} ms per second of audio")
    print(f"wall time {report['wall_s']:.0f} s")
