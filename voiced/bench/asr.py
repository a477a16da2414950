"""`voiced bench asr`: speech recognition latency, throughput and the batching gain.

For each concurrency C, C commands of `--seconds` audio arrive at the same instant (as if
C satellites finished speaking together) and go through the same path as in the daemon:
the `InferenceEngine` and, for a batching backend, the `MicroBatcher` with the configured
window. Per-utterance latency runs from arrival to result.

The batching gain is the time for N commands arriving together divided by N times the
time for one (N = the largest concurrency, normally 16): 1.0 means batching bought
nothing, 1/N is perfect.

With random weights (`--make-random SIZE`: a checkpoint of the real dimensions of a
Whisper size), `--tokens N` forces exactly N decoded tokens so that timings compare
across runs and models (a 4-second command is about 10 to 20 tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from voiced.const import SAMPLE_RATE
from voiced.errors import VoicedError


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,4,16: {text!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive numbers like 1,4,16: {text!r}")
    return values


def register(sub: Any) -> None:
    """Add `voiced bench asr`."""
    from voiced.asr.whisper_models import MODEL_DIMS

    p: argparse.ArgumentParser = sub.add_parser(
        "asr", help="ASR latency (p50/p95), throughput and batching gain",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backend", choices=["whisper", "pocketsphinx", "ray"], default="whisper",
                   help="ray: the whisper model on a Ray Serve deployment (voiced.bench."
                        "asr_cluster), compared with the same model in process")
    p.add_argument("--replicas", type=int, default=1, help="ray: replicas to deploy")
    p.add_argument("--gpus-per-replica", type=float, default=0.0, help="ray: GPUs each")
    p.add_argument("--address", help="ray: an existing deployment's Serve address "
                                     "(http://HOST:PORT); default: start a loopback head")
    p.add_argument("--no-compare", action="store_true",
                   help="ray: skip the in-process run of the same model")
    p.add_argument("--model", help="whisper model name or checkpoint path")
    p.add_argument("--make-random", metavar="SIZE", choices=sorted(MODEL_DIMS),
                   help="build a random-weight checkpoint of these real dimensions "
                        f"({', '.join(MODEL_DIMS)}) and benchmark it")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--compute", choices=["fp16", "fp32"], default="fp16",
                   help="fp16 applies on CUDA only")
    p.add_argument("--concurrency", type=_int_list, default=[1, 4, 16],
                   help="commands arriving together, e.g. 1,4,16")
    p.add_argument("--tokens", type=int, default=16,
                   help="whisper: decode exactly N tokens (0: stop at end of text)")
    p.add_argument("--rounds", type=int, default=5, help="repetitions per concurrency")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each command")
    p.add_argument("--audio", type=Path, help="a WAV file to use as every command")
    p.add_argument("--window-ms", type=float, default=30.0, help="batching window")
    p.add_argument("--encoder-window", type=int, default=30, metavar="S",
                   help="whisper: seconds of audio the encoder sees (asr.encoder_window_s)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--state-dir", type=Path,
                   help="model cache and random checkpoints (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class Row:
    """Figures for one concurrency."""

    concurrency: int
    p50_ms: float
    p95_ms: float
    wall_ms: float
    """Median time from arrival until the last of the C commands finished."""
    compute_ms: float
    """Median model time per round (sum of batch runs, no window wait)."""
    throughput: float
    """Commands per second (C / wall)."""


def command_audio(index: int, seconds: float) -> bytes:
    """A deterministic voice-like signal: a gliding harmonic tone with syllable bursts."""
    import numpy as np

    n = int(SAMPLE_RATE * seconds)
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(index)
    pitch = 110 + 60 * index % 140 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * (3 + index % 3) * t) ** 2
    signal = 0.25 * voice * syllables + 0.01 * rng.standard_normal(n)
    return (np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes()


async def _measure(transcriber: Any, utterances: Sequence[bytes], concurrency: Sequence[int],
                   rounds: int, window_s: float) -> list[Row]:
    from voiced.inference import InferenceEngine, MicroBatcher

    # a remote backend blocks one thread per command in flight (the daemon has 16)
    engine = InferenceEngine(workers=max(2, max(concurrency)))
    batcher: MicroBatcher[bytes, Any] = MicroBatcher(
        engine, transcriber.transcribe_batch, window_s, max(concurrency), name="bench"
    )

    async def one_round(count: int) -> tuple[list[float], float, float]:
        batcher.history.clear()
        compute = 0.0
        start = time.perf_counter()

        async def command(i: int) -> float:
            pcm = utterances[i % len(utterances)]
            if transcriber.supports_batching:
                await batcher.submit(pcm)
            else:
                nonlocal compute
                t = time.perf_counter()
                await engine.run(transcriber.transcribe, pcm)
                compute += (time.perf_counter() - t) * 1000
            return (time.perf_counter() - start) * 1000

        latencies = await asyncio.gather(*(command(i) for i in range(count)))
        wall = (time.perf_counter() - start) * 1000
        compute += sum(b.run_ms for b in batcher.history)
        return list(latencies), wall, compute

    rows = []
    try:
        await one_round(max(concurrency))  # warm-up at the largest batch shape
        for count in concurrency:
            latencies: list[float] = []
            walls, computes = [], []
            for _ in range(rounds):
                lat, wall, compute = await one_round(count)
                latencies += lat
                walls.append(wall)
                computes.append(compute)
            wall = statistics.median(walls)
            rows.append(Row(
                concurrency=count,
                p50_ms=_percentile(latencies, 50),
                p95_ms=_percentile(latencies, 95),
                wall_ms=wall,
                compute_ms=statistics.median(computes),
                throughput=count / wall * 1000,
            ))
    finally:
        await batcher.close()
        engine.close()
    return rows


def _percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def _machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu})"
    if hasattr(os, "getloadavg"):
        text += f", load average {os.getloadavg()[0]:.1f} before the run"
    if device.startswith("cuda"):
        import torch

        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; print a table (or JSON with --json)."""
    with tempfile.TemporaryDirectory(prefix="voiced-bench-asr-") as tmp:
        try:
            report = _run(args, args.state_dir or Path(tmp))
        except VoicedError as exc:
            print(f"voiced bench asr: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(report))
    else:
        print(_format(report))
    return 0


def _run(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    import torch

    from voiced.asr.service import create_transcriber
    from voiced.asr.whisper_models import write_random_checkpoint
    from voiced.config import AsrConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model
    if args.make_random:
        model = str(state_dir / "models" / "random" / f"{args.make_random}.pt")
        if not Path(model).is_file():
            started = time.perf_counter()
            write_random_checkpoint(args.make_random, Path(model))
            print(f"built random {args.make_random} checkpoint {model} in "
                  f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    if args.backend == "ray":
        return _run_ray(args, state_dir, model)
    config = AsrConfig(
        backend=args.backend, model=model, device=args.device, compute=args.compute,
        batch_window_ms=args.window_ms, max_batch=max(args.concurrency),
        language="en" if args.backend == "pocketsphinx" else "auto",
        encoder_window_s=args.encoder_window,
    )
    transcriber: Any = create_transcriber(config, None, state_dir)
    forced = args.tokens if args.backend == "whisper" and args.tokens > 0 else None
    if forced:
        transcriber.forced_tokens = forced
    started = time.perf_counter()
    transcriber.load()
    load_ms = (time.perf_counter() - started) * 1000
    utterances = _utterances(args)
    device = getattr(transcriber, "device", "cpu")
    machine = _machine(device)
    rows = asyncio.run(_measure(transcriber, utterances, args.concurrency, args.rounds,
                                args.window_ms / 1000))
    one = next((r for r in rows if r.concurrency == 1), None)
    big = max(rows, key=lambda r: r.concurrency)
    report: dict[str, Any] = {
        "backend": args.backend,
        "model": model,
        "random_weights": args.make_random,
        "device": device,
        "fp16": bool(getattr(transcriber, "fp16", False)),
        "torch_threads": torch.get_num_threads(),
        "tokens": forced,
        "seconds": args.seconds,
        "window_ms": args.window_ms,
        "encoder_window_s": args.encoder_window,
        "rounds": args.rounds,
        "load_ms": load_ms,
        "machine": machine,
        "rows": [asdict(r) for r in rows],
    }
    if one is not None and big.concurrency > 1:
        report["batching"] = {
            "n": big.concurrency,
            "gain": big.wall_ms / (big.concurrency * one.wall_ms),
            "vs_one": big.wall_ms / one.wall_ms,
            "compute_gain": big.compute_ms / (big.concurrency * one.compute_ms),
        }
    return report


def _utterances(args: argparse.Namespace) -> list[bytes]:
    if args.audio:
        from voiced.audio.wav import read_wav_file
        from voiced.const import BYTES_PER_SECOND

        pcm = read_wav_file(args.audio)
        size = int(args.seconds * BYTES_PER_SECOND) // 2 * 2
        return [(pcm * (size // max(len(pcm), 1) + 1))[:size]]
    return [command_audio(i, args.seconds) for i in range(max(args.concurrency))]


def _run_ray(args: argparse.Namespace, state_dir: Path, model: str | None) -> dict[str, Any]:
    """The model on a Ray Serve deployment, then (unless --no-compare) in process."""
    import torch

    from voiced.bench.asr_cluster import cluster_transcriber

    if model is None:
        raise VoicedError("bench_args", "--backend ray needs --model or --make-random")
    forced = args.tokens if args.tokens > 0 else None
    utterances = _utterances(args)
    window = args.window_ms / 1000
    args.state_dir = state_dir
    started = time.perf_counter()
    with cluster_transcriber(args, model, forced) as remote:
        deploy_ms = (time.perf_counter() - started) * 1000
        rows = asyncio.run(_measure(remote, utterances, args.concurrency, args.rounds, window))
        hops = list(remote.client.hops)[max(args.concurrency):]  # without the warm-up
    report: dict[str, Any] = {
        "backend": "ray", "model": model, "random_weights": args.make_random,
        "device": args.device, "fp16": False, "torch_threads": torch.get_num_threads(),
        "tokens": forced, "seconds": args.seconds, "window_ms": args.window_ms,
        "encoder_window_s": args.encoder_window, "rounds": args.rounds,
        "load_ms": deploy_ms, "machine": _machine("cpu"), "replicas": args.replicas,
        "rows": [asdict(r) for r in rows],
        "hop_ms": {"p50": _percentile(hops, 50), "p95": _percentile(hops, 95),
                   "n": len(hops)}}
    if not args.no_compare:
        from voiced.asr.service import create_transcriber
        from voiced.config import AsrConfig

        local: Any = create_transcriber(AsrConfig(
            backend="whisper", model=model, device=args.device, compute=args.compute,
            batch_window_ms=args.window_ms, max_batch=max(args.concurrency),
            language="auto", encoder_window_s=args.encoder_window), None, state_dir)
        local.forced_tokens = forced
        local.load()
        here = asyncio.run(_measure(local, utterances, args.concurrency, args.rounds, window))
        report["in_process"] = [asdict(r) for r in here]
        report["overhead_p50_ms"] = {str(a.concurrency): a.p50_ms - b.p50_ms
                                     for a, b in zip(rows, here, strict=True)}
    return report


def _format(r: dict[str, Any]) -> str:
    what = f"random {r['random_weights']} weights" if r["random_weights"] else r["model"]
    tokens = f"{r['tokens']} tokens forced" if r["tokens"] else "natural stop"
    replicas = f" ({r['replicas']} replicas, load = head + deploy)" if "replicas" in r else ""
    lines = [
        f"voiced bench asr: {r['backend']}{replicas}, {what}, {r['device']} "
        f"{'fp16' if r['fp16'] else 'fp32'}, {r['torch_threads']} torch threads, {tokens}, "
        f"{r['seconds']:g} s commands, window {r['window_ms']:g} ms, "
        f"encoder window {r['encoder_window_s']} s, {r['rounds']} rounds",
        f"machine: {r['machine']}",
        f"load + warm-up: {r['load_ms']:.0f} ms",
        "",
        f"{'together':>8} {'p50 ms':>9} {'p95 ms':>9} {'all done ms':>12} {'compute ms':>11} "
        f"{'cmds/s':>8}",
    ]
    for row in r["rows"]:
        lines.append(
            f"{row['concurrency']:>8} {row['p50_ms']:>9.1f} {row['p95_ms']:>9.1f} "
            f"{row['wall_ms']:>12.1f} {row['compute_ms']:>11.1f} {row['throughput']:>8.2f}"
        )
    if r.get("hop_ms"):
        h = r["hop_ms"]
        lines += ["", f"the hop itself (round trip - time in the replica), {h['n']} commands: "
                  f"p50 {h['p50']:.1f} ms, p95 {h['p95']:.1f} ms"]
    if r.get("in_process"):
        lines += ["", "the same model in process:"]
        for row in r["in_process"]:
            lines.append(
                f"{row['concurrency']:>8} {row['p50_ms']:>9.1f} {row['p95_ms']:>9.1f} "
                f"{row['wall_ms']:>12.1f} {row['compute_ms']:>11.1f} "
                f"{row['throughput']:>8.2f}")
        lines += ["", "Ray p50 - in-process p50 (ms, separate runs): " + ", ".join(
            f"{c} together {v:+.1f}" for c, v in r["overhead_p50_ms"].items())]
    b = r.get("batching")
    if b:
        lines += [
            "",
            f"batching gain: {b['n']} together / ({b['n']} x one) = {b['gain']:.3f} "
            f"(1 = no gain, {1 / b['n']:.3f} = perfect); compute only {b['compute_gain']:.3f}",
            f"{b['n']} together took {b['vs_one']:.2f} x the time of one",
        ]
    return "\n".join(lines)
