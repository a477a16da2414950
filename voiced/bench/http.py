"""`voiced bench http`: the HTTP API under load.

Starts a mosquitto and `voiced serve` (embedded defaults) on free ports, then measures
1. `POST /api/transcribe` throughput and p50/p95 latency with 1, 4 and 16 concurrent
   clients, each uploading the spoken commands as WAV files, and
2. websocket fan-out: 50 clients on `/api/events` while 20 satellites stream commands over
   MQTT in real time; the delivery delay of each event to each client (client receipt
   minus the event's own time) and whether every client got every event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from voiced.audio.wav import read_wav_file
from voiced.bench.latency import _pct, _wait_ready
from voiced.bench.procs import free_port, start_mosquitto, start_voiced
from voiced.satellite import Satellite

DEFAULT_SAMPLES = Path("tests/fixtures/commands")


def register(sub: Any) -> None:
    """Add `voiced bench http`."""
    p: argparse.ArgumentParser = sub.add_parser("http", help="HTTP API and websocket load")
    p.add_argument("--clients", default="1,4,16",
                   help="concurrent /api/transcribe clients, comma-separated (default 1,4,16)")
    p.add_argument("--requests", type=int, default=32,
                   help="transcribe requests per concurrency level (default 32)")
    p.add_argument("--ws-clients", type=int, default=50, help="websocket clients (default 50)")
    p.add_argument("--satellites", type=int, default=20,
                   help="satellites streaming during the fan-out test (default 20)")
    p.add_argument("--utterances", type=int, default=3, help="commands per satellite")
    p.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES,
                   help="folder of WAV commands (default tests/fixtures/commands)")
    p.add_argument("--config", type=Path, help="voiced.yaml for the server under test")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry of `voiced bench http`."""
    files = sorted(args.samples.glob("*.wav"))
    try:
        levels = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        levels = []
    if not files or not levels or min(levels) < 1 or args.requests < 1:
        print(f"bench http: no WAV files in {args.samples}" if not files
              else "bench http: --clients needs positive integers, e.g. 1,4,16; "
                   "--requests at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="voiced-bench-http-") as tmp_name:
        tmp = Path(tmp_name)
        mqtt_port, http_port = free_port(), free_port()
        broker = start_mosquitto(tmp, mqtt_port)
        cmd = ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(mqtt_port),
               "--state-dir", str(tmp / "state"), "--http-port", str(http_port)]
        if args.config:
            cmd += ["--config", str(args.config)]
        log = (tmp / "voiced.log").open("wb")
        server = start_voiced(cmd, log)
        log.close()
        try:
            result = asyncio.run(_bench(args, files, levels, mqtt_port, http_port))
        except (TimeoutError, aiohttp.ClientError) as exc:
            print(f"bench http: {exc!r}; the server said:\n"
                  f"{(tmp / 'voiced.log').read_text(errors='replace')[-3000:]}", file=sys.stderr)
            return 1
        finally:
            server.terminate()
            server.wait(timeout=30)
            broker.terminate()
            broker.wait(timeout=10)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    ok = all(r["failed"] == 0 for r in result["transcribe"]) and result["fanout"]["complete"]
    return 0 if ok else 1


async def _bench(args: argparse.Namespace, files: list[Path], levels: list[int],
                 mqtt_port: int, http_port: int) -> dict[str, Any]:
    await _wait_ready("127.0.0.1", mqtt_port)
    base = f"http://127.0.0.1:{http_port}"
    bodies = [f.read_bytes() for f in files]
    seconds = [len(read_wav_file(f)) / 32000 for f in files]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        transcribe = [await _transcribe_level(http, base, bodies, seconds, c, args.requests)
                      for c in levels]
        fanout = await _fanout(http, base, files, mqtt_port, args)
    return {"transcribe": transcribe, "fanout": fanout}


async def _transcribe_level(http: aiohttp.ClientSession, base: str, bodies: list[bytes],
                            seconds: list[float], clients: int, requests: int) -> dict[str, Any]:
    """`requests` uploads spread over `clients` concurrent clients."""
    latencies: list[float] = []
    failed = 0
    audio_s = 0.0
    next_index = 0

    async def client() -> None:
        nonlocal failed, audio_s, next_index
        while next_index < requests:
            i, next_index = next_index, next_index + 1
            k = i % len(bodies)
            started = time.monotonic()
            async with http.post(f"{base}/api/transcribe", data=bodies[k],
                                 headers={"Content-Type": "audio/wav"}) as resp:
                await resp.read()
                if resp.status != 200:
                    failed += 1
                    continue
            latencies.append((time.monotonic() - started) * 1000)
            audio_s += seconds[k]

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.monotonic() - started
    return {"clients": clients, "requests": requests, "failed": failed,
            "requests_per_s": round(len(latencies) / wall, 2),
            "audio_s_per_s": round(audio_s / wall, 2),
            "p50_ms": round(_pct(latencies, 50), 1), "p95_ms": round(_pct(latencies, 95), 1)}


async def _fanout(http: aiohttp.ClientSession, base: str, files: list[Path], mqtt_port: int,
                  args: argparse.Namespace) -> dict[str, Any]:
    """Websocket clients on /api/events while satellites stream commands."""
    sockets = [await http.ws_connect(f"{base}/api/events", heartbeat=30)
               for _ in range(args.ws_clients)]
    delays: list[float] = []
    counts = [0] * len(sockets)
    dropped = [0] * len(sockets)

    async def listen(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            now = time.time()
            event = json.loads(msg.data)
            if event.get("type") == "dropped":
                dropped[i] += int(event.get("count", 1))
                continue
            stamp = event.get("time")
            if isinstance(stamp, int | float):
                delays.append((now - stamp) * 1000)
            counts[i] += 1

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(sockets)]
    audio = [read_wav_file(f) for f in files]
    rng = random.Random(11)

    async def satellite(i: int) -> int:
        recognized = 0
        async with Satellite("127.0.0.1", mqtt_port, f"fanout{i}",
                             client_id=f"bench-http-sat-{i}") as sat:
            await asyncio.sleep(rng.uniform(0, 0.3))
            for k in range(args.utterances):
                answer = await sat.command(audio[(i + k) % len(audio)], realtime=True,
                                           timeout=60)
                recognized += answer.intent is not None
        return recognized

    started = time.monotonic()
    recognized = await asyncio.gather(*(satellite(i) for i in range(args.satellites)))
    wall = time.monotonic() - started
    # the events of the last commands are on their way: wait until every client has as
    # many as the first, bounded
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(set(counts)) > 1:
        await asyncio.sleep(0.05)
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*listeners, return_exceptions=True)
    return {"ws_clients": len(sockets), "satellites": args.satellites,
            "commands": args.satellites * args.utterances, "recognized": sum(recognized),
            "wall_s": round(wall, 1), "events_per_client": max(counts, default=0),
            "complete": len(set(counts)) == 1 and not any(dropped) and max(counts) > 0,
            "dropped": sum(dropped),
            "delivery_p50_ms": round(_pct(delays, 50), 1),
            "delivery_p95_ms": round(_pct(delays, 95), 1)}


def _print(r: dict[str, Any]) -> None:
    print("POST /api/transcribe")
    for t in r["transcribe"]:
        print(f"  {t['clients']:3d} clients: {t['requests_per_s']:6.2f} req/s "
              f"({t['audio_s_per_s']:5.1f} s of audio/s)  p50 {t['p50_ms']:7.1f} ms  "
              f"p95 {t['p95_ms']:7.1f} ms  failed {t['failed']}")
    f = r["fanout"]
    print(f"/api/events fan-out: {f['ws_clients']} clients, {f['satellites']} satellites, "
          f"{f['recognized']}/{f['commands']} commands recognized")
    print(f"  {f['events_per_client']} events per client, complete: {f['complete']}, "
          f"dropped: {f['dropped']}  delivery p50 {f['delivery_p50_ms']:.1f} ms  "
          f"p95 {f['delivery_p95_ms']:.1f} ms")
