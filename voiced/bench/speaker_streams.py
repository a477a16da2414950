"""`voiced bench speakers --streams N`: the streaming speaker stage alone, N satellites at once.

Each of N simulated satellites speaks `--tests` commands (the real-speaker voices' test
sentences, synthesized as for the rest of `voiced bench speakers`) in real time, as 20 ms
frames pushed into a `StreamingFeed` on a 16-thread inference engine, exactly as the
daemon feeds a speaker stream, with half a second of pause (the endpoint silence) after
each. The satellites start 37 ms apart. Measured:

* the processor time of the whole process per second of audio per satellite, minus that
  of the same run with nothing fed (the pacing itself): what the speaker stage costs;
* the endpoint time: `conclude()` (the audio held back, then `finish`), per utterance;
* the model calls (resemblyzer; the most recent 200): batch rows and satellites per call;
* every streamed vector against the whole utterance's (cosine).

No speech recognition, MQTT or intents run, so the figures do not swing with them; the
end-to-end figure is `voiced bench latency --satellites N` with speakers on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from typing import Any

import numpy as np

from voiced.const import BYTES_PER_SECOND, ms_to_bytes
from voiced.speakers import voices

FRAME_MS = 20
STAGGER_S = 0.037
PAUSE_S = 0.5


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _drive(engine: Any, start: Any, pcms: list[bytes], streams: int,
                 per_stream: int) -> tuple[float, list[float], list[tuple[int, Any]]]:
    """Run the satellites; (seconds of audio, endpoint ms, (utterance, vector)) ."""
    from voiced.feeds import StreamingFeed

    loop = asyncio.get_running_loop()
    frame = ms_to_bytes(FRAME_MS)
    endpoint_ms: list[float] = []
    vectors: list[tuple[int, Any]] = []
    audio_s = 0.0

    async def satellite(i: int) -> None:
        nonlocal audio_s
        await asyncio.sleep(i * STAGGER_S)
        for k in range(per_stream):
            index = (i * 7 + k) % len(pcms)
            pcm = pcms[index]
            feed = StreamingFeed(engine, start, name="speaker") if start else None
            began = loop.time()
            for j, offset in enumerate(range(0, len(pcm), frame)):
                if feed is not None:
                    feed.push(pcm[offset : offset + frame])
                delay = began + (j + 1) * FRAME_MS / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            audio_s += len(pcm) / BYTES_PER_SECOND
            if feed is not None:
                ended = time.monotonic()
                vector = await feed.conclude()
                endpoint_ms.append((time.monotonic() - ended) * 1000)
                vectors.append((index, vector))
            await asyncio.sleep(PAUSE_S)

    await asyncio.gather(*(satellite(i) for i in range(streams)))
    return audio_s, endpoint_ms, vectors


def run_streams(args: argparse.Namespace) -> int:
    """Entry of `voiced bench speakers --streams N`."""
    from voiced.inference import InferenceEngine
    from voiced.speakers.service import create_embedder

    if not 1 <= args.streams <= 200:
        print("voiced bench speakers: --streams takes 1..200", file=sys.stderr)
        return 2
    missing = [s for s in ("flite", "festival") if not voices.synth_available(s)]
    if missing:
        print(f"voiced bench speakers: not installed: {', '.join(missing)}", file=sys.stderr)
        return 1
    first = voices.ENROLL_SENTENCES
    files = [f for v in voices.REAL_VOICES
             for f in voices.utterances(v, range(first, first + args.tests), args.audio_dir)]
    from voiced.audio.wav import read_wav_file

    pcms = [read_wav_file(f) for f in files]
    embedder = create_embedder(args.backend, args.model, args.device, args.state_dir)
    embedder.load()
    engine = InferenceEngine(workers=16)  # as the daemon's
    per_stream = max(1, args.utterances)
    try:
        cpu = _cpu_s()
        idle_audio, _, _ = asyncio.run(_drive(engine, None, pcms, args.streams, per_stream))
        idle_cpu = _cpu_s() - cpu
        batcher = getattr(embedder, "batcher", None)
        if batcher is not None:
            batcher.history.clear()
        cpu, wall = _cpu_s(), time.monotonic()
        audio_s, endpoint_ms, vectors = asyncio.run(
            _drive(engine, embedder.start_stream, pcms, args.streams, per_stream))
        busy_cpu, wall = _cpu_s() - cpu, time.monotonic() - wall
    finally:
        engine.close()
    whole = {i: embedder.embed(pcms[i]) for i in {i for i, _ in vectors}}
    cosines = [float(np.dot(whole[i], v)) for i, v in vectors]
    calls = list(batcher.history) if batcher is not None else []
    ticks = [c for c in calls if not c.urgent]
    ends = [c for c in calls if c.urgent]
    report: dict[str, Any] = {
        "backend": args.backend,
        "model_id": embedder.model_id,
        "satellites": args.streams,
        "utterances": len(vectors),
        "audio_s": round(audio_s, 1),
        "wall_s": round(wall, 1),
        "cpu_ms_per_audio_s": round(1000 * (busy_cpu - idle_cpu * audio_s / idle_audio)
                                    / audio_s, 2),
        "pacing_cpu_ms_per_audio_s": round(1000 * idle_cpu / idle_audio, 2),
        "endpoint_ms": {"p50": round(float(np.percentile(endpoint_ms, 50)), 1),
                        "p95": round(float(np.percentile(endpoint_ms, 95)), 1),
                        "max": round(max(endpoint_ms), 1)},
        "stream_cosine_min": min(cosines),
    }
    if calls:
        report["model_calls"] = {
            "while_speaking": len(ticks), "at_endpoints": len(ends),
            "rows_mean_while_speaking": round(statistics.fmean(c.rows for c in ticks), 1)
            if ticks else 0,
            "satellites_mean_while_speaking":
                round(statistics.fmean(c.streams for c in ticks), 1) if ticks else 0,
            "satellites_mean_at_endpoints":
                round(statistics.fmean(c.streams for c in ends), 2) if ends else 0,
        }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['satellites']} satellites, {report['utterances']} utterances, "
          f"{report['audio_s']} s of audio in {report['wall_s']} s ({args.backend})")
    print(f"speaker stage CPU: {report['cpu_ms_per_audio_s']:.1f} ms per second of audio per "
          f"satellite (the pacing itself: {report['pacing_cpu_ms_per_audio_s']:.1f} ms, "
          "not counted)")
    e = report["endpoint_ms"]
    print(f"endpoint (conclude): p50 {e['p50']:.1f} ms, p95 {e['p95']:.1f} ms, "
          f"max {e['max']:.1f} ms")
    if calls:
        m = report["model_calls"]
        print(f"model calls: {m['while_speaking']} while speaking, {m['rows_mean_while_speaking']}"
              f" rows and {m['satellites_mean_while_speaking']} satellites each on average; "
              f"{m['at_endpoints']} at endpoints, {m['satellites_mean_at_endpoints']} "
              "satellites each")
    print(f"streamed vs whole-utterance vectors: cosine >= {report['stream_cosine_min']:.7f}")
    return 0
