"""`voiced bench ingest`: how many always-listening Hermes satellites voiced keeps up with.

Starts a mosquitto on a free loopback port (`sys_interval 1`, so `$SYS` reports the
messages it drops), `voiced serve` as its own process (pocketsphinx, every site always
listening, no history, answers as `hermes/tts/say`), and the load generator
(`voiced.bench.loadgen`) as a third process. N simulated satellites stream 20 ms WAV
frames of room noise in real time for `--seconds`; then each says one command (a fixture,
round-robin; their starts spread over `--command-spread` seconds) followed by noise.

Measured: voiced's CPU per satellite while only noise streams (main process; its
recognizer worker processes separately), its memory, frames published against frames
voiced counted (retained `voiced/status`), the loss voiced and mosquitto reported, the
commands answered (`hermes/intent/...` or `hermes/nlu/intentNotRecognized` for the site
after its command started) and the time from the end of each command's speech (the last
frame webrtcvad calls speech; the fixtures end in about 600 ms of quiet) to that answer,
and whether the generator itself kept real time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from voiced.bench.ingest_report import (
    WARMUP_S,
    Monitor,
    build_report,
    log_counts,
    print_report,
    wait_port,
)
from voiced.bench.loadgen import FRAME_S, command_ticks
from voiced.bench.procs import start_mosquitto
from voiced.bench.pyspy import Profile, summarize

DEFAULT_SAMPLES = Path("tests/fixtures/commands")
START_DELAY_S = 2.0
"""Between launching the generator and its first frame (it connects and builds frames)."""
SAMPLE_S = 1.0
"""How often CPU and memory are sampled."""


def register(sub: Any) -> None:
    """Add `voiced bench ingest`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "ingest", help="ingest capacity: N always-listening satellites streaming noise",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--satellites", type=int, default=50, help="simulated satellites (N)")
    p.add_argument("--seconds", type=float, default=20.0,
                   help="seconds of noise streaming before the commands (default 20)")
    p.add_argument("--command-spread", type=float,
                   help="the commands start spread over this many seconds "
                        "(default N/4: four commands a second, about 0.6 of a core of "
                        "pocketsphinx)")
    p.add_argument("--trailing-ms", type=int, default=1200,
                   help="noise after the last command, so the endpoint triggers")
    p.add_argument("--connections", type=int,
                   help="MQTT connections the satellites share (default ceil(N/10))")
    p.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES,
                   help="folder of WAV commands (default tests/fixtures/commands)")
    p.add_argument("--noise-rms", type=float, default=30.0,
                   help="room noise level in 16-bit units (30 is about -61 dBFS)")
    p.add_argument("--answer-timeout", type=float, default=30.0,
                   help="seconds to wait for answers after the last frame")
    p.add_argument("--broker", choices=["mosquitto", "external"], default="mosquitto")
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, help="port of an external broker")
    p.add_argument("--config", type=Path,
                   help="voiced.yaml for the server under test (default: always-listening "
                        "sites, no history, answers as hermes/tts/say)")
    p.add_argument("--log", type=Path, help="write voiced's log here (default: discarded)")
    p.add_argument("--py-spy", metavar="EXE",
                   help="profile voiced with this py-spy while only noise streams and add "
                        "where its CPU goes to the report")
    p.add_argument("--profile", type=Path, metavar="FILE",
                   help="keep py-spy's raw stacks here (with --py-spy)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def bench_config(intents: Path) -> dict[str, Any]:
    """voiced.yaml of the server under test: ingest is what is measured."""
    return {
        "sites": {"default_mode": "always"},
        "history": {"enabled": False},
        "tts": {"mode": "hermes"},
        "intents": {"paths": [str(intents.resolve())]},
    }


def make_plan(args: argparse.Namespace, files: list[Path], port: int) -> dict[str, Any]:
    """What each satellite sends and when (ticks of 20 ms from the first frame)."""
    n = args.satellites
    noise_ticks = round(args.seconds / FRAME_S)
    spread = args.command_spread if args.command_spread is not None else max(1.0, n / 4)
    lengths = {f: command_ticks(f) for f in files}
    sites = []
    for i in range(n):
        command = files[i % len(files)]
        start = noise_ticks + round(spread / FRAME_S * i / n)
        sites.append({"site": f"ingest-{i:03d}", "index": i, "command": str(command.resolve()),
                      "start_tick": start, "ticks": lengths[command]})
    end = max(s["start_tick"] + s["ticks"] for s in sites)
    return {
        "host": args.mqtt_host, "port": port, "sites": sites,
        "total_ticks": end + math.ceil(args.trailing_ms / 1000 / FRAME_S),
        "noise_ticks": noise_ticks, "command_spread_s": spread,
        "connections": args.connections or math.ceil(n / 10),
        "noise_rms": args.noise_rms, "client_prefix": f"ingest-gen-{os.getpid()}",
    }


def run(args: argparse.Namespace) -> int:
    """Entry of `voiced bench ingest`."""
    files = sorted(args.samples.glob("*.wav"))
    if not files or args.satellites < 1:
        print(f"bench ingest: no WAV files in {args.samples}" if not files
              else "bench ingest: --satellites must be at least 1", file=sys.stderr)
        return 2
    if args.broker == "external" and not args.mqtt_port:
        print("bench ingest: --broker external needs --mqtt-port", file=sys.stderr)
        return 2
    expected = _expected_intents(args.samples)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="voiced-bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        port = args.mqtt_port or _free_port()
        broker = None
        try:
            if args.broker == "mosquitto":
                broker = start_mosquitto(tmp, port, "persistence false\nsys_interval 1\n")
                procs.append(broker)
                wait_port(args.mqtt_host, port)
            config = args.config
            if config is None:
                config = tmp / "voiced.yaml"
                config.write_text(yaml.safe_dump(bench_config(Path("config/intents"))))
            log = (args.log or tmp / "voiced.log").open("wb")
            server = subprocess.Popen(
                [sys.executable, "-m", "voiced.cli", "-q", "serve", "--config", str(config),
                 "--mqtt-host", args.mqtt_host, "--mqtt-port", str(port),
                 "--state-dir", str(tmp / "state"), "--http-port", "0"],
                stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            log.close()  # the child has its own copy
            procs.append(server)
            if not args.json:
                print(f"voiced pid {server.pid}, mosquitto pid "
                      f"{broker.pid if broker else '-'}, port {port}", file=sys.stderr)
            plan = make_plan(args, files, port)
            if args.py_spy and args.profile is None:
                args.profile = tmp / "py-spy.txt"
            log_path = args.log or tmp / "voiced.log"
            try:
                result = asyncio.run(_bench(args, plan, server, broker, expected))
            except (RuntimeError, TimeoutError) as exc:
                log_text = log_path.read_text(errors="replace")
                print(f"bench ingest: {exc}\n{log_text[-3000:]}", file=sys.stderr)
                return 1
            result["voiced"]["log"] = log_counts(log_path.read_text(errors="replace"))
        finally:
            for proc in reversed(procs):
                _stop(proc)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0 if result["ok"] else 1


async def _bench(args: argparse.Namespace, plan: dict[str, Any], server: subprocess.Popen[bytes],
                 broker: subprocess.Popen[bytes] | None,
                 expected: dict[str, str | None]) -> dict[str, Any]:
    load_before = os.getloadavg()
    async with Monitor(args.mqtt_host, plan["port"]) as monitor:
        await monitor.wait_ready(server)
        plan["start_at"] = time.monotonic() + START_DELAY_S
        gen = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voiced.bench.loadgen", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        done = asyncio.Event()
        profiler = None
        warm = min(WARMUP_S, args.seconds / 3)
        profile_window = (round(warm, 1), round(args.seconds, 1))
        if args.py_spy:
            profiler = asyncio.create_task(_profile(
                args.py_spy, server.pid, plan["start_at"] + warm, args.seconds - warm,
                args.profile), name="py-spy")
        sampler = asyncio.create_task(
            _sample(server.pid, broker.pid if broker else None, gen.pid, plan["start_at"], done),
            name="sampler")
        try:
            out, _ = await gen.communicate(json.dumps(plan).encode())
        finally:
            done.set()
            if gen.returncode is None:
                gen.kill()
                await gen.wait()
            samples: list[dict[str, Any]] = await sampler
        if gen.returncode != 0:
            raise RuntimeError(f"the load generator failed (exit {gen.returncode})")
        generated = json.loads(out)
        await monitor.wait_answers(generated, args.answer_timeout)
        await monitor.wait_settled(sum(s["published"] for s in generated["sites"].values()))
        profile = await profiler if profiler is not None else None
    report = build_report(plan, generated, monitor, samples, expected,
                          {"before": load_before, "after": os.getloadavg()})
    if profile is not None:
        report["profile"] = {"samples": profile.samples, "window_s": profile_window,
                             "stages_pct": dict(profile.stages),
                             "functions_pct": dict(profile.functions)}
    return report


async def _sample(voiced_pid: int, broker_pid: int | None, gen_pid: int | None,
                  start_at: float, done: asyncio.Event) -> list[dict[str, Any]]:
    """CPU seconds and memory of each process every SAMPLE_S from the first frame on, and
    once more when `done` is set."""
    voiced = psutil.Process(voiced_pid)
    others = {name: psutil.Process(pid) for name, pid in
              (("broker", broker_pid), ("generator", gen_pid)) if pid is not None}
    samples: list[dict[str, Any]] = []
    k = 0
    while not done.is_set():
        try:
            async with asyncio.timeout(max(0.0, start_at + k * SAMPLE_S - time.monotonic())):
                await done.wait()
        except TimeoutError:
            pass
        k += 1
        t = voiced.cpu_times()
        sample = {"t": time.monotonic() - start_at, "voiced": t.user + t.system,
                  "rss": voiced.memory_info().rss,
                  "workers": _cpu([*voiced.children(recursive=True)])}
        for name, proc in others.items():
            sample[name] = _cpu([proc])
        samples.append(sample)
    return samples


async def _profile(exe: str, pid: int, at: float, seconds: float, out: Path) -> Profile:
    """Record `pid` with py-spy for `seconds` from monotonic time `at`; its summary."""
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    proc = await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--rate", "100", "--duration", str(max(1, int(seconds))),
        "--nonblocking", "--format", "raw", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return summarize(out)


def _cpu(procs: list[psutil.Process]) -> float:
    """CPU seconds (user + system) of processes that still exist."""
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _expected_intents(samples: Path) -> dict[str, str | None]:
    """File name → intent from the fixtures' manifest next to the folder, if there is one.
    A command that needs a speaker's context is expected not to be recognized: the server
    under test identifies no one."""
    manifest = samples.parent / "commands.yaml"
    if not manifest.exists():
        return {}
    data = yaml.safe_load(manifest.read_text()) or {}
    return {Path(c["file"]).name: None if c.get("context") else c.get("intent")
            for c in data.get("commands", [])}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
