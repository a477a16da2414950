"""`voiced bench latency`: end-to-end latency with N satellites speaking at once.

Starts a mosquitto on a free port (or uses the embedded broker, or an external one), runs
`voiced serve` as a separate process, then streams spoken commands in real time from N
simulated satellites at once. For each utterance it measures the time from the last speech
frame published to the intent message received, split into the endpoint wait (the
silence the endpointer needs) and the processing after the endpoint (as voiced reports it
in the intent's `timings`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from voiced.audio.wav import read_wav_file
from voiced.bench.procs import free_port, start_mosquitto, start_voiced
from voiced.satellite import Answer, Satellite
from voiced.transport import native

DEFAULT_SAMPLES = Path("tests/fixtures/commands")


def register(sub: Any) -> None:
    """Add `voiced bench latency`."""
    p: argparse.ArgumentParser = sub.add_parser("latency", help="end-to-end latency, N satellites")
    p.add_argument("--satellites", type=int, default=1, help="satellites speaking at once")
    p.add_argument("--utterances", type=int, default=5, help="commands per satellite")
    p.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES,
                   help="folder of WAV commands (default tests/fixtures/commands)")
    p.add_argument("--broker", choices=["mosquitto", "embedded", "external"], default="mosquitto")
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, help="port of an external broker")
    p.add_argument("--raw", action="store_true", help="native raw PCM instead of Hermes WAV")
    p.add_argument("--config", type=Path, help="voiced.yaml for the server under test")
    p.add_argument("--endpoint", choices=["fixed", "adaptive"],
                   help="the server's vad.endpoint (overrides --config's; docs/endpoint.md)")
    p.add_argument("--state-dir", type=Path,
                   help="the server's state folder (e.g. with enrolled speakers); default: "
                        "a new temporary one")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def endpoint_config(base: Path | None, endpoint: str, folder: Path) -> Path:
    """A copy of the config `base` (None: the defaults) in `folder` with `vad.endpoint`
    set; its relative intent paths and state folder still point where `base`'s did."""
    import yaml

    data: dict[str, Any] = {}
    root = Path.cwd()
    if base is not None:
        data = yaml.safe_load(base.read_text(encoding="utf-8")) or {}
        root = base.resolve().parent
    intents = data.setdefault("intents", {})
    intents["paths"] = [str(root / p) for p in intents.get("paths", ["config/intents"])]
    if "state_dir" in data:
        data["state_dir"] = str(root / data["state_dir"])
    data.setdefault("vad", {})["endpoint"] = endpoint
    path = folder / "voiced-endpoint.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def run(args: argparse.Namespace) -> int:
    """Entry of `voiced bench latency`."""
    files = sorted(args.samples.glob("*.wav"))
    if not files:
        print(f"bench latency: no WAV files in {args.samples}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="voiced-bench-") as tmp:
        port = args.mqtt_port or free_port()
        broker = start_mosquitto(Path(tmp), port) if args.broker == "mosquitto" else None
        state = args.state_dir or Path(tmp) / "state"
        cmd = ["--mqtt-host", args.mqtt_host, "--mqtt-port", str(port), "--state-dir", str(state),
               "--http-port", "0"]
        config = args.config
        if args.endpoint:
            config = endpoint_config(args.config, args.endpoint, Path(tmp))
        if config:
            cmd += ["--config", str(config)]
        if args.broker == "embedded":
            cmd.append("--embedded-broker")
        server = start_voiced(cmd)
        try:
            result = asyncio.run(_bench(args, files, port, server.poll))
        except ServerExited as exc:
            print(f"bench latency: {exc}", file=sys.stderr)
            return 1
        finally:
            server.terminate()
            server.wait(timeout=30)
            if broker is not None:
                broker.terminate()
                broker.wait(timeout=10)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 0 if result["failed"] == 0 and result["dropped_frames"] == 0 else 1


class ServerExited(RuntimeError):
    """The server under test exited before it was ready."""


async def _until_ready(host: str, port: int, exited: Callable[[], int | None]) -> None:
    """Wait for the server's `ready` status; fail at once when it exits (a bad config,
    a port in use: its own message is on stderr above)."""
    waiting = asyncio.create_task(_wait_ready(host, port))
    while not waiting.done():
        code = exited()
        if code is not None:
            waiting.cancel()
            raise ServerExited(f"the voiced server exited (code {code}) before it was "
                               "ready; its message is above")
        await asyncio.wait({waiting}, timeout=0.2)
    waiting.result()


async def _wait_ready(host: str, port: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with aiomqtt.Client(host, port) as client:
                await client.subscribe(native.STATUS_TOPIC)
                async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                    async for msg in client.messages:
                        data = json.loads(msg.payload)  # type: ignore[arg-type]
                        if data.get("state") == "ready":
                            return dict(data)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)
    raise TimeoutError("voiced did not become ready")


async def _status(host: str, port: int) -> dict[str, Any]:
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(native.STATUS_TOPIC)
        async with asyncio.timeout(10):
            async for msg in client.messages:
                return dict(json.loads(msg.payload))  # type: ignore[arg-type]
    return {}


async def _bench(args: argparse.Namespace, files: list[Path], port: int,
                 exited: Callable[[], int | None]) -> dict[str, Any]:
    await _until_ready(args.mqtt_host, port, exited)
    audio = [read_wav_file(f) for f in files]
    rng = random.Random(7)

    ended: list[dict[str, Any]] = []
    listening = asyncio.Event()

    async def events() -> None:
        """Why each utterance ended (speech_ended events): silence or a whole command."""
        async with aiomqtt.Client(args.mqtt_host, port) as client:
            await client.subscribe(native.events_topic("+"))
            listening.set()
            async for msg in client.messages:
                event = json.loads(msg.payload)  # type: ignore[arg-type]
                if event.get("type") == "speech_ended":
                    ended.append(event)

    watcher = asyncio.create_task(events())
    async with asyncio.timeout(10):
        await listening.wait()
    slowest: list[tuple[float, str, float | None]] = []

    async def satellite(i: int) -> list[Answer]:
        answers = []
        async with Satellite(args.mqtt_host, port, f"bench{i}", raw=args.raw,
                             client_id=f"bench-sat-{i}") as sat:
            await asyncio.sleep(rng.uniform(0, 0.2))
            for k in range(args.utterances):
                pcm = audio[(i + k) % len(audio)]
                answer = await sat.command(pcm, realtime=True, timeout=60)
                answers.append(answer)
                if answer.intent_latency_ms is not None:
                    slowest.append((round(answer.intent_latency_ms, 1),
                                    files[(i + k) % len(audio)].name, answer.timings.get("vad")))
        return answers

    started = time.monotonic()
    per_sat = await asyncio.gather(*(satellite(i) for i in range(args.satellites)),
                                   return_exceptions=True)
    wall = time.monotonic() - started
    answers = [a for r in per_sat if isinstance(r, list) for a in r]
    failed = sum(1 for r in per_sat if isinstance(r, BaseException))
    failed += sum(1 for a in answers if a.intent_latency_ms is None)
    await asyncio.sleep(2.5)  # let the server refresh its retained status
    watcher.cancel()
    status = await _status(args.mqtt_host, port)
    dropped = sum(s.get("dropped", 0) for s in status.get("sites", {}).values())
    checks = [float(e["checkMs"]) for e in ended if "checkMs" in e]
    total = [a.intent_latency_ms for a in answers if a.intent_latency_ms is not None]
    endpoint = [a.timings["vad"] for a in answers if "vad" in a.timings]
    processing = [a.timings["processing"] for a in answers if "processing" in a.timings]
    speaker = [a.timings["speaker"] for a in answers if "speaker" in a.timings]
    return {
        "satellites": args.satellites,
        "utterances": len(answers),
        "recognized": sum(1 for a in answers if a.intent),
        "failed": failed,
        "dropped_frames": dropped,
        "wall_s": round(wall, 1),
        "last_speech_to_intent_ms": {"p50": round(_pct(total, 50), 1),
                                     "p95": round(_pct(total, 95), 1)},
        "endpoint_wait_ms": {"p50": round(_pct(endpoint, 50), 1),
                             "p95": round(_pct(endpoint, 95), 1)},
        "processing_after_endpoint_ms": {"p50": round(_pct(processing, 50), 1),
                                         "p95": round(_pct(processing, 95), 1),
                                         "mean": round(statistics.fmean(processing), 1)
                                         if processing else None},
        "speaker_after_endpoint_ms": {"p50": round(_pct(speaker, 50), 1),
                                      "p95": round(_pct(speaker, 95), 1)} if speaker else None,
        "endpoint": args.endpoint or "config",
        "end_reasons": dict(Counter(str(e.get("reason")) for e in ended)),
        "judged": dict(Counter(str(e["judged"]) for e in ended if "judged" in e)),
        "endpoint_check_ms": {"p50": round(_pct(checks, 50), 1),
                              "p95": round(_pct(checks, 95), 1)} if checks else None,
        "slowest": [{"ms": ms, "file": name, "vad_ms": vad}
                    for ms, name, vad in sorted(slowest, reverse=True)[:8]],
        "transport": "raw" if args.raw else "hermes",
        "broker": args.broker,
    }


def _print(r: dict[str, Any]) -> None:
    print(f"endpoint: {r['endpoint']}  satellites: {r['satellites']}  utterances: "
          f"{r['utterances']}  recognized: "
          f"{r['recognized']}  failed: {r['failed']}  dropped frames: {r['dropped_frames']}")
    for key, label in (("last_speech_to_intent_ms", "last speech frame → intent"),
                       ("endpoint_wait_ms", "  endpoint wait"),
                       ("processing_after_endpoint_ms", "  processing after endpoint")):
        print(f"{label:30s} p50 {r[key]['p50']:7.1f} ms   p95 {r[key]['p95']:7.1f} ms")
    if r.get("end_reasons"):
        print("utterances ended by: " + ", ".join(f"{k} {v}" for k, v in
                                                 sorted(r["end_reasons"].items())))
    if r.get("speaker_after_endpoint_ms"):
        s = r["speaker_after_endpoint_ms"]
        label = "  speaker stage after endpoint"
        print(f"{label:30s} p50 {s['p50']:7.1f} ms   p95 {s['p95']:7.1f} ms")


