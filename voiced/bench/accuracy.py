"""`voiced bench accuracy`: commands understood and everyday speech accepted, by voice
family and acoustic condition, with a held-out split that nobody tunes on.

The corpus is made here, from the loaded intents (commands sampled from every template,
numbers anywhere in their ranges) and `everyday.txt` (speech near a satellite that is not
a command, much of it sharing words with the intents), spoken by every installed English
espeak-ng voice (at three rates and pitches) and variant, every flite voice and every
festival voice (at three rates), under conditions: clean, rooms, white/brown/babble/tv
noise at several SNRs, a quiet speaker, clipping (`voiced.bench.conditions`).

Each utterance goes through the daemon's embedded path with the configuration given
(default: voiced's defaults): webrtcvad endpointing, pocketsphinx constrained by the
grammar compiled from the intents, `asr.min_confidence`, the intent recognizer with its
fuzzy fallback. A command counts as understood only when the intent and every slot value
match; an everyday sentence that became any command is a false accept.

The split: a fixed seed holds out 30% of the people of each voice family and 30% of the
sentences; held-out voices say only held-out sentences. Tune on the training split only;
report both. Sizes: quick (8 voices, 5 conditions, 240 trials: 1-2 minutes on 2 cores),
medium (20 voices, every condition, 3200 trials: about 15 minutes), full (every voice,
every condition: hours). Speech and
conditioned audio are cached in --cache, so a second run only recognizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from voiced.errors import VoicedError

log = logging.getLogger(__name__)

QUICK_CONDITIONS = ("clean", "reverb-medium", "babble-15", "reverb-medium+brown-15", "quiet")
SIZES: dict[str, dict[str, Any]] = {
    "quick": {"per_family": 2, "commands": 4, "everyday": 2, "conditions": QUICK_CONDITIONS},
    "medium": {"per_family": 5, "commands": 5, "everyday": 3, "conditions": None},
    "full": {"per_family": None, "commands": 20, "everyday": 10, "conditions": None},
}
"""Voices per family (None: all), sentences per voice, conditions (None: all)."""
PROGRESS_EVERY_S = 5.0


def _conditions(text: str) -> tuple[str, ...]:
    from voiced.bench.conditions import DEFAULT_CONDITIONS, parse_condition

    if text.strip() == "all":
        return DEFAULT_CONDITIONS
    names = [n.strip() for n in text.split(",") if n.strip()]
    try:
        parsed = tuple(dict.fromkeys(parse_condition(n).name for n in names))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not parsed:
        raise argparse.ArgumentTypeError("no condition given")
    return parsed


def _families(text: str) -> tuple[str, ...]:
    from voiced.bench.corpus import FAMILIES

    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown voice family {(unknown or [text])[0]!r}: expected {', '.join(FAMILIES)}")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0: {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1: {text!r}")
    return value


def default_cache() -> Path:
    """$XDG_CACHE_HOME/voiced/bench-accuracy (~/.cache/... by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voiced" / "bench-accuracy"


def register(sub: Any) -> None:
    """Add `voiced bench accuracy`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "accuracy", help="commands understood and false accepts by voice and condition",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="quick",
                   help="preset size (default quick); the options below override it")
    p.add_argument("--families", type=_families, metavar="LIST",
                   help="voice families to use (default: espeak-ng,espeak-variant,flite,"
                        "festival)")
    p.add_argument("--voices-per-family", type=_positive, metavar="N",
                   help="voices of each family (0: every installed voice)")
    p.add_argument("--commands", type=_positive, metavar="N", help="commands per voice")
    p.add_argument("--everyday", type=_positive, metavar="N",
                   help="everyday sentences per voice")
    p.add_argument("--conditions", type=_conditions, metavar="LIST",
                   help="comma-separated conditions, e.g. clean,reverb-large,babble-10,"
                        "reverb-medium+tv-15,quiet,clip; or all")
    p.add_argument("--limit", type=_positive, metavar="N",
                   help="at most N trials (a subset fixed by the seed)")
    p.add_argument("--seed", type=int, default=1, help="decides the split and the corpus")
    p.add_argument("--held-out", type=_fraction, default=0.3, metavar="FRACTION",
                   help="share of people and sentences held out (default 0.3)")
    p.add_argument("--jobs", type=_positive, default=os.cpu_count() or 1,
                   help="worker processes (default: one per core)")
    p.add_argument("--cache", type=Path, default=default_cache(), metavar="DIR",
                   help=f"synthesized and conditioned audio (default {default_cache()})")
    p.add_argument("--config", type=Path, metavar="FILE", help="voiced.yaml (default: defaults)")
    p.add_argument("--endpoint", choices=["fixed", "adaptive"],
                   help="vad.endpoint (overrides the config's; docs/endpoint.md)")
    p.add_argument("--paused", action="store_true",
                   help="the paused set: every command said in parts with 150-600 ms pauses "
                        "between them (1-2 places, by the seed)")
    p.add_argument("--intents", type=Path, action="append", metavar="PATH",
                   help="intent YAML file or folder (repeatable; default: intents.paths)")
    p.add_argument("--site", default="default",
                   help="satellite the audio comes from (its area is the intent context)")
    p.add_argument("--everyday-file", type=Path, metavar="FILE",
                   help="everyday sentences, one a line (default: the bundled list)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write accuracy by condition")
    p.add_argument("--details", type=Path, metavar="JSONL",
                   help="write one line per trial of the training split (what was said, "
                        "heard, matched; held-out trials are only counted)")
    p.set_defaults(func=run)


class _Progress:
    """Lines on stderr at most every PROGRESS_EVERY_S seconds, and at the end."""

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.done = what, total, 0
        self.started = self.shown = time.monotonic()

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.shown >= PROGRESS_EVERY_S or self.done >= self.total:
            self.shown = now
            rate = self.done / max(now - self.started, 1e-9)
            left = (self.total - self.done) / rate if rate else 0.0
            print(f"voiced bench accuracy: {self.what} {self.done}/{self.total} "
                  f"({self.done / max(self.total, 1):.0%}), {rate:.1f}/s, "
                  f"{left:.0f} s left", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Entry of `voiced bench accuracy`."""
    try:
        report, rows = bench(args)
    except VoicedError as exc:
        print(f"voiced bench accuracy: {exc.message}", file=sys.stderr)
        return 1
    from voiced.bench.accuracy_report import format_text, plot

    if args.details:
        from voiced.bench.corpus import TRAINING

        with args.details.open("w", encoding="utf-8") as f:
            for row in rows:
                if row["split"] == TRAINING:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if args.plot:
        plot(report, args.plot)
    print(json.dumps(report, indent=1) if args.json else format_text(report))
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from voiced.bench.conditions import DEFAULT_CONDITIONS

    size = dict(SIZES[args.size])
    if args.voices_per_family is not None:
        size["per_family"] = args.voices_per_family or None
    for key in ("commands", "everyday", "conditions"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    size["conditions"] = tuple(size["conditions"] or DEFAULT_CONDITIONS)
    return size


def bench(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Build the corpus, run every trial in worker processes; (report, rows)."""
    from voiced.bench import accuracy_worker as worker
    from voiced.bench import corpus
    from voiced.bench.accuracy_report import summarize
    from voiced.bench.asr import _machine
    from voiced.commands.transcribe import _load_intents
    from voiced.config import load_config
    from voiced.errors import AsrError, IntentError
    from voiced.models import UNKNOWN_SPEAKER

    started = time.monotonic()
    size = _settings(args)
    config = load_config(args.config)
    if getattr(args, "endpoint", None):
        config = config.model_copy(update={
            "vad": config.vad.model_copy(update={"endpoint": args.endpoint})})
    paused = bool(getattr(args, "paused", False))
    if config.asr.backend != "pocketsphinx":
        raise AsrError("bench_backend", "the accuracy benchmark measures the embedded "
                       f"recognizer (asr.backend: pocketsphinx), not {config.asr.backend}")
    recognizer = _load_intents(config, args.intents)
    if recognizer is None:
        raise IntentError("intents_missing", "no intent files: give --intents or a config")
    context: dict[str, Any] = {"site": args.site, "speaker": UNKNOWN_SPEAKER}
    area = config.sites.area_for(args.site)
    if area:
        context["area"] = area
    confirm = worker._confirm_intent()
    commands = corpus.sample_commands(recognizer, context, args.seed,
                                      exclude={confirm} if confirm else ())
    everyday = corpus.everyday_sentences(recognizer, context, args.everyday_file)
    voices = [v for v in corpus.installed_voices()
              if args.families is None or v.family in args.families]
    if not voices:
        raise VoicedError("no_synthesizer", "no speech synthesizer: install espeak-ng, flite "
                          "or festival")
    if not commands:
        raise IntentError("no_commands", "no intent sentence can be said in this context")
    plan = corpus.plan(voices, commands, everyday, size["conditions"], seed=args.seed,
                       fraction=args.held_out, per_family=size["per_family"],
                       n_commands=size["commands"], n_everyday=size["everyday"],
                       limit=args.limit)
    jobs = max(1, args.jobs)
    args.cache.mkdir(parents=True, exist_ok=True)
    paths = args.intents
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(jobs, initializer=worker.init,
                    initargs=(config, paths, context, args.cache, args.seed)) as pool:
        failed = _synthesize(pool, plan, size["conditions"], args.seed if paused else None)
        units = _units(plan, failed, paused)
        rows: list[dict[str, Any]] = []
        progress = _Progress("trials", sum(len(u.sentences) for u in units))
        for result in pool.imap_unordered(worker.unit_task, units):
            rows += result
            progress.step(len(result))
    rows.sort(key=lambda r: (r["split"], r["family"], r["voice"], r["condition"], r["text"]))
    meta = {
        "command": "voiced " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "size": args.size, "seed": args.seed, "paused": paused, "held_out_fraction": args.held_out,
        "trials": len(rows), "voices": len({r["voice"] for r in rows}),
        "conditions": list(size["conditions"]),
        "per_voice": {"commands": size["commands"], "everyday": size["everyday"]},
        "dropped_trials": len(plan.trials) - len(rows),
        "recognizer": _describe(config),
        "context": ", ".join(f"{k} {v}" for k, v in context.items()),
        "pools": {"commands": plan.commands, "everyday": plan.everyday},
        "split_voices": {s: sorted(v for v, sp in plan.splits.items() if sp == s)
                         for s in corpus.SPLITS},
        "jobs": jobs, "elapsed_s": round(time.monotonic() - started, 1),
        "machine": _machine("cpu"),
    }
    return summarize(rows, size["conditions"], meta), rows


def _describe(config: Any) -> str:
    asr, vad, intents = config.asr, config.vad, config.intents
    fuzzy = f"on (min {intents.fuzzy_min_confidence})" if intents.fuzzy else "off"
    return (f"pocketsphinx {asr.mode} mode, asr.min_confidence {asr.min_confidence}, "
            f"intent fuzzy fallback {fuzzy}, {_vad_name(vad)}, "
            f"end silence {vad.silence_ms} ms, endpoint {vad.endpoint}"
            + (f" (min silence {vad.min_silence_ms} ms)" if vad.endpoint == "adaptive" else ""))


def _vad_name(vad: Any) -> str:
    if vad.engine == "silero":
        return f"silero-vad threshold {vad.silero_threshold}"
    return f"webrtcvad aggressiveness {vad.aggressiveness}"


def _synthesize(pool: Any, plan: Any, conditions: Sequence[str],
                paused_seed: int | None = None) -> set[tuple[str, str]]:
    """Make every utterance the trials need (with `paused_seed`: the parts of the paused
    commands too); the (voice id, text) pairs that failed."""
    from voiced.bench import accuracy_worker as worker
    from voiced.bench.conditions import parse_condition
    from voiced.bench.corpus import PRIMING_TEXT

    wanted: dict[tuple[str, str], tuple[Any, str]] = {}
    for t in plan.trials:
        wanted[(t.voice.id, t.sentence.text)] = (t.voice, t.sentence.text)
        wanted[(t.voice.id, PRIMING_TEXT)] = (t.voice, PRIMING_TEXT)
        if paused_seed is not None and t.sentence.intent is not None:
            for part, _ in worker.pause_plan(paused_seed, t.voice, t.sentence.text):
                wanted[(t.voice.id, part)] = (t.voice, part)
    if any(parse_condition(c).needs_talkers for c in conditions):
        for talkers in plan.babble.values():
            wanted.update({(v.id, text): (v, text) for v, text in talkers})
    items = list(wanted.values())
    progress = _Progress("synthesizing", len(items))
    failed = set()
    for item, error in zip(items, pool.imap(worker.synth_task, items, chunksize=4),
                           strict=True):
        progress.step()
        if error:
            failed.add((item[0].id, item[1]))
            print(f"voiced bench accuracy: synthesis failed: {error}", file=sys.stderr)
    return failed


def _units(plan: Any, failed: set[tuple[str, str]], paused: bool = False) -> list[Any]:
    """The trials grouped by voice and condition, without those whose speech failed."""
    from voiced.bench.accuracy_worker import Unit
    from voiced.bench.corpus import PRIMING_TEXT

    babble = {s: tuple(t for t in talkers if (t[0].id, t[1]) not in failed)
              for s, talkers in plan.babble.items()}
    grouped: dict[tuple[str, str], list[Any]] = {}
    for t in plan.trials:
        if (t.voice.id, t.sentence.text) in failed or (t.voice.id, PRIMING_TEXT) in failed:
            continue
        grouped.setdefault((t.voice.id, t.condition), []).append(t)
    return [Unit(ts[0].voice, ts[0].condition, ts[0].split,
                 tuple(t.sentence for t in ts), babble[ts[0].split], paused)
            for ts in _interleaved(grouped.values())]


def _interleaved(groups: Iterable[list[Any]]) -> list[list[Any]]:
    """Units ordered condition by condition, every voice within each: the work per
    minute stays even, so the time left shown is about right."""
    return sorted(groups, key=lambda ts: (ts[0].condition, ts[0].voice.id))
