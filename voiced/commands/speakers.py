"""`voiced speakers ...`: enroll, list, remove, identify, calibrate, reset-adaptation.

Every subcommand takes `--state-dir` (where `speakers.db` lives, as for `voiced serve`) and
`--config`. The backend is `speakers.backend` from the config; where that is "none" these
commands use resemblyzer, which works offline with the weights in its wheel.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from voiced.errors import VoicedError

BACKENDS = ("resemblyzer", "speechbrain")
POOR_FRR = 0.2
"""calibrate warns when it expects more false rejects than this."""


def register(sub: Any) -> None:
    """Add `voiced speakers` and its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, help="state folder (default: from the config)")
    common.add_argument("--config", type=Path, help="voiced.yaml (default: built-in defaults)")
    common.add_argument("--backend", choices=BACKENDS,
                        help="speaker model backend (default: speakers.backend, else resemblyzer)")
    parser: argparse.ArgumentParser = sub.add_parser(
        "speakers", help="enroll and identify speakers")
    cmds = parser.add_subparsers(dest="speakers_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: _usage(parser))

    p = cmds.add_parser("enroll", parents=[common], help="enroll a person from WAV recordings")
    p.add_argument("name")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--replace", action="store_true",
                   help="replace the person's stored samples (needed after a model change)")
    p.add_argument("--force", action="store_true",
                   help="store samples even when they fail the quality check")
    p.set_defaults(func=_guarded(_enroll))

    p = cmds.add_parser("list", parents=[common], help="list enrolled people")
    p.add_argument("--json", action="store_true", help="one JSON object per person")
    p.set_defaults(func=_guarded(_list))

    p = cmds.add_parser("remove", parents=[common], help="forget a person")
    p.add_argument("name")
    p.set_defaults(func=_guarded(_remove))

    p = cmds.add_parser("identify", parents=[common],
                        help="say who speaks in each file (one JSON line per file)")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.set_defaults(func=_guarded(_identify))

    p = cmds.add_parser("calibrate", parents=[common],
                        help="set the threshold from the enrolled samples")
    p.add_argument("--far-weight", type=float, default=None,
                   help="how much worse a false accept is than a false reject (default 10)")
    p.add_argument("--dry-run", action="store_true", help="print, do not store")
    p.set_defaults(func=_guarded(_calibrate))

    p = cmds.add_parser("reset-adaptation", parents=[common],
                        help="undo profile adaptation (everyone, or one person)")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=_guarded(_reset_adaptation))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a VoicedError into a one-line message and exit status 1 (2 for the config)."""

    def run(args: argparse.Namespace) -> int:
        from voiced.errors import ConfigError

        try:
            return fn(args)
        except ConfigError as exc:
            print(f"voiced speakers: {exc.message}", file=sys.stderr)
            return 2
        except VoicedError as exc:
            print(f"voiced speakers {args.speakers_command}: {exc.message} ({exc.code})",
                  file=sys.stderr)
            return 1

    return run


def _service(args: argparse.Namespace, load: bool = True) -> Any:
    """A SpeakerService for this command (no inference engine: it runs right here)."""
    from voiced.config import load_config
    from voiced.speakers.service import create_speaker_service

    config = load_config(args.config)
    speakers = config.speakers
    backend = args.backend or (speakers.backend if speakers.backend != "none" else "resemblyzer")
    update: dict[str, Any] = {"backend": backend}
    if backend != speakers.backend:
        update["model"] = None  # speakers.model names a model of the configured backend
    speakers = speakers.model_copy(update=update)
    state_dir = args.state_dir or config.state_dir
    service = create_speaker_service(speakers, state_dir, engine=None)
    assert service is not None
    if load:
        service.load()
    return service


ENROLL_MAX_BYTES = 64 * 1024 * 1024
"""Largest enrollment file read (a minute of 192 kHz 8-channel audio fits; /dev/zero or a
stray video file does not)."""
ENROLL_MAX_S = 120.0
"""Longest enrollment recording: a few sentences, not an hour (embedding it whole took
~1 GB for a 282 s file)."""


def _read(path: Path) -> bytes:
    from voiced.audio.wav import convert_wav
    from voiced.const import BYTES_PER_SECOND
    from voiced.errors import AudioFormatError, SpeakerError

    try:
        if not path.is_file():
            raise SpeakerError("unreadable_file", f"{path}: not a file")
        with path.open("rb") as f:
            data = f.read(ENROLL_MAX_BYTES + 1)
        if len(data) > ENROLL_MAX_BYTES:
            raise SpeakerError("unreadable_file", f"{path}: over {ENROLL_MAX_BYTES >> 20} MB; "
                               "an enrollment file is a few sentences of speech")
        pcm = convert_wav(data, max_bytes=None)
        if len(pcm) > ENROLL_MAX_S * BYTES_PER_SECOND:
            raise SpeakerError("unreadable_file", f"{path}: {len(pcm) / BYTES_PER_SECOND:.0f} s "
                               f"of audio; at most {ENROLL_MAX_S:.0f} s per file (record a few "
                               "sentences, or cut the file)")
        return pcm
    except OSError as exc:
        raise SpeakerError("unreadable_file", f"{path}: {exc.strerror}") from exc
    except AudioFormatError as exc:
        raise SpeakerError("unreadable_file", f"{path}: {exc.message}") from exc


def _enroll(args: argparse.Namespace) -> int:
    from voiced.errors import SpeakerError
    from voiced.speakers.enrollment import enroll
    from voiced.speakers.store import check_name

    check_name(args.name)
    pcms = [_read(f) for f in args.files]
    service = _service(args)
    try:
        result = enroll(service.embedder, service.store, args.name, pcms,
                        sources=[f.name for f in args.files], replace=args.replace,
                        force=args.force)
    except SpeakerError as exc:
        if exc.code == "model_changed":
            raise SpeakerError(exc.code, exc.message + " (run again with --replace)") from exc
        raise
    finally:
        service.store.close()
    for path, report in zip(args.files, result.reports, strict=True):
        mark = "ok " if report.ok else "BAD"
        print(f"{mark} {path}: {report.describe()}")
    if not result.ok:
        print(f"nothing stored for {args.name}: fix the recordings marked BAD and enroll "
              "again (or add --force to store them anyway)", file=sys.stderr)
        return 1
    print(f"enrolled {args.name}: {result.stored} sample(s) stored, {result.total} in all "
          f"({service.model_id})")
    return 0


def _list(args: argparse.Namespace) -> int:
    service = _service(args, load=False)
    if service.embedder.peek_model_id() is None:  # e.g. a hub model not downloaded yet
        service.load()
    with closing(service.store):
        people = service.store.people(service.embedder.model_id)
    for p in people:
        if args.json:
            print(json.dumps({"name": p.name, "samples": p.enrolled, "adapted": p.adapted,
                              "needs_reenrollment": p.needs_reenrollment,
                              "other_models": list(p.other_models)}))
        elif p.needs_reenrollment:
            print(f"{p.name}\tneeds re-enrollment (enrolled with {', '.join(p.other_models)})")
        else:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.enrolled_at))
            adapted = f" (+{p.adapted} adapted)" if p.adapted else ""
            print(f"{p.name}\t{p.enrolled} samples{adapted}\tenrolled {when}")
    if not people and not args.json:
        print("nobody is enrolled (voiced speakers enroll NAME FILE...)", file=sys.stderr)
    return 0


def _remove(args: argparse.Namespace) -> int:
    service = _service(args, load=False)
    with closing(service.store):
        removed = service.store.remove(args.name)
    if not removed:
        print(f"voiced speakers remove: {args.name} is not enrolled", file=sys.stderr)
        return 1
    print(f"removed {args.name} ({removed} samples)")
    return 0


def _identify(args: argparse.Namespace) -> int:
    from voiced.errors import SpeakerError

    service = _service(args)
    status = 0
    with closing(service.store):
        if not service.store.profiles(service.model_id):
            print("voiced speakers identify: nobody is enrolled with this model; every file "
                  "will be unknown", file=sys.stderr)
        for path in args.files:
            try:
                pcm = _read(path)
            except SpeakerError as exc:
                print(f"voiced speakers identify: {exc.message}", file=sys.stderr)
                status = 1
                continue
            match = service.identify_batch([pcm], adapt=False)[0]
            print(json.dumps({
                "file": str(path),
                "speaker": match.name,
                "confidence": round(match.confidence, 4),
                "scores": {k: round(v, 4) for k, v in match.scores.items()},
            }), flush=True)
    return status


def _calibrate(args: argparse.Namespace) -> int:
    from voiced.errors import SpeakerError
    from voiced.speakers.matching import DEFAULT_FAR_WEIGHT, calibrate

    service = _service(args)
    with closing(service.store):
        enrollments = service.store.enrollments(service.model_id)
        try:
            cal = calibrate(enrollments, args.far_weight or DEFAULT_FAR_WEIGHT,
                            probes=service.store.probes(service.model_id))
        except ValueError as exc:
            raise SpeakerError("cannot_calibrate", str(exc)) from exc
        print(f"threshold {cal.threshold:.4f} for {service.model_id} ({len(enrollments)} "
              f"people; {cal.genuine_trials} genuine and {cal.impostor_trials} impostor trials "
              "from pieces of the enrollment samples)")
        print(f"expected false-accept rate {cal.expected_far:.3%}, false-reject rate "
              f"{cal.expected_frr:.3%}")
        print(f"measured on those trials: false accepts {cal.measured_far:.2%}, "
              f"false rejects {cal.measured_frr:.2%}, equal error rate {cal.eer:.2%}")
        if cal.expected_frr > POOR_FRR:
            print(f"warning: at this threshold about {cal.expected_frr:.0%} of commands by "
                  "enrolled people would be refused: some voices here are too alike for this "
                  "model; enroll more and longer samples (in the room where commands are "
                  "spoken), use the speechbrain backend, or lower --far-weight",
                  file=sys.stderr)
        if args.dry_run:
            print("not stored (--dry-run)")
        else:
            service.store.set_calibration(service.model_id, cal)
            print(f"stored in {service.store.path}; a running voiced picks it up by itself")
        if service.config.threshold is not None:
            print(f"note: speakers.threshold = {service.config.threshold} in the config "
                  "overrides the calibrated threshold", file=sys.stderr)
    return 0


def _reset_adaptation(args: argparse.Namespace) -> int:
    service = _service(args, load=False)
    with closing(service.store):
        removed = service.store.clear_adapted(args.name)
    who = args.name or "everyone"
    print(f"removed {removed} adapted sample(s) for {who}; enrollment samples are kept")
    return 0
