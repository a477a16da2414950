"""The load generator of `voiced bench ingest`: N simulated Hermes satellites.

Runs as its own process (`python -m voiced.bench.loadgen`, a JSON plan on stdin, a JSON
result on stdout) so its CPU is not voiced's and its pacing is not disturbed by the
benchmark's own event loop. Every satellite publishes one complete 20 ms WAV (44-byte
header + 640 bytes, 16 kHz 16-bit mono) of room noise per tick on
`hermes/audioServer/<site>/audioFrame`, at the tick its plan says a command starts it
sends the command's frames instead, then noise again until the end.

Pacing follows the clock: frame k of a satellite is due at `start_at + k * 20 ms + phase`
(phases spread the satellites over the 20 ms), and the generator records how late it was
for each group of frames. It never sleeps "20 ms" between frames, so a late group does not
delay the next one: the generator catches up, and its lag says whether it kept real time.

Satellites share a few paho-mqtt connections (round-robin), driven without paho's network
thread: `publish()` writes straight to the socket, and the loop reads and pings between
ticks.
"""

from __future__ import annotations

import json
import select
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from paho.mqtt.client import Client, MQTTErrorCode
from paho.mqtt.enums import CallbackAPIVersion

from voiced.audio.wav import build_wav, read_wav_file
from voiced.const import SATELLITE_FRAME_MS, ms_to_bytes

FRAME_S = SATELLITE_FRAME_MS / 1000
FRAME_BYTES = ms_to_bytes(SATELLITE_FRAME_MS)
NOISE_POOL_FRAMES = 250
"""Distinct noise frames (5 s); satellites start at different places in the pool."""
SERVICE_EVERY_TICKS = 25
"""Read incoming packets and send keep-alives every this many ticks (0.5 s)."""
CONNECT_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 10.0


def noise_frames(rms: float, count: int, seed: int) -> list[bytes]:
    """`count` frames of white room noise at `rms` (16-bit units; 30 is about -61 dBFS)."""
    rng = np.random.default_rng(seed)
    samples = np.clip(np.round(rng.normal(0.0, rms, count * (FRAME_BYTES // 2))), -32768, 32767)
    raw = samples.astype("<i2").tobytes()
    return [raw[i : i + FRAME_BYTES] for i in range(0, len(raw), FRAME_BYTES)]


def command_frames(path: Path) -> tuple[list[bytes], int]:
    """A command WAV as 20 ms frames (the last padded with zeros) and the index just after
    the last frame webrtcvad calls speech."""
    from voiced.satellite import last_speech_offset

    pcm = read_wav_file(path)
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    frames[-1] = frames[-1] + bytes(FRAME_BYTES - len(frames[-1]))
    speech_end = -(-last_speech_offset(pcm) // FRAME_BYTES)
    return frames, speech_end


def command_ticks(path: Path) -> int:
    """How many 20 ms frames the command in `path` takes."""
    return -(-len(read_wav_file(path)) // FRAME_BYTES)


@dataclass(slots=True)
class _Sat:
    """One simulated satellite's plan and what happened."""

    site: str
    topic: str
    client: Client
    command: str
    start_tick: int
    noise_offset: int
    published: int = 0
    errors: int = 0
    command_start: float | None = None
    last_speech: float | None = None


def _connect(host: str, port: int, client_id: str) -> Client:
    client = Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect(host, port, keepalive=60)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no CONNACK from {host}:{port}")
        sock = client.socket()
        if sock is None:
            raise ConnectionError(f"connection to {host}:{port} closed")
        select.select([sock], [], [], 0.1)
        client.loop_read()
    return client


def _service(clients: list[Client]) -> None:
    """Read what the broker sent (PINGRESP) and keep the connections alive."""
    for client in clients:
        client.loop_read(max_packets=10)
        client.loop_misc()


def run(plan: dict[str, Any]) -> dict[str, Any]:
    """Stream the plan; return per-site counts and times and the generator's lag."""
    host, port = plan["host"], int(plan["port"])
    total_ticks = int(plan["total_ticks"])
    phases = int(plan.get("phase_groups", 10))
    noise = [build_wav(f) for f in noise_frames(plan.get("noise_rms", 30.0), NOISE_POOL_FRAMES,
                                                int(plan.get("seed", 1)))]
    commands: dict[str, tuple[list[bytes], int]] = {}
    for entry in plan["sites"]:
        if entry["command"] not in commands:
            frames, speech_end = command_frames(Path(entry["command"]))
            commands[entry["command"]] = ([build_wav(f) for f in frames], speech_end)
    n_conn = max(1, min(int(plan.get("connections", 1)), len(plan["sites"])))
    clients = [_connect(host, port, f"{plan.get('client_prefix', 'loadgen')}-{i}")
               for i in range(n_conn)]
    sats = [
        _Sat(e["site"], f"hermes/audioServer/{e['site']}/audioFrame", clients[i % n_conn],
             e["command"], int(e["start_tick"]), (int(e["index"]) * 37) % NOISE_POOL_FRAMES)
        for i, e in enumerate(plan["sites"])
    ]
    groups: list[list[_Sat]] = [[] for _ in range(phases)]
    for e, sat in zip(plan["sites"], sats, strict=True):
        groups[int(e["index"]) % phases].append(sat)
    lags: list[float] = []  # seconds each group of frames went out after it was due
    start_at = float(plan["start_at"])
    clock, sleep = time.monotonic, time.sleep
    started = clock()
    cpu_started = time.process_time()
    for tick in range(total_ticks):
        base = start_at + tick * FRAME_S
        for g, members in enumerate(groups):
            due = base + g * FRAME_S / phases
            now = clock()
            if now < due:
                sleep(due - now)
                now = clock()
            lags.append(now - due)
            for sat in members:
                _send(sat, tick, noise, commands)
        if tick % SERVICE_EVERY_TICKS == 0:
            _service(clients)
    streamed = clock()
    cpu_used = time.process_time() - cpu_started
    flushed = _flush(clients)
    for client in clients:
        client.disconnect()
    lag_ms = np.array(lags) * 1000 if lags else np.zeros(1)
    return {
        "sites": {s.site: {"published": s.published, "errors": s.errors,
                           "command": Path(s.command).name, "command_start": s.command_start,
                           "last_speech": s.last_speech}
                  for s in sats},
        "started": started,
        "streamed": streamed,
        "flush_s": round(flushed - streamed, 3),
        "connections": n_conn,
        "cpu_cores": round(cpu_used / max(streamed - started, 1e-9), 3),
        "lag_ms": {"p50": round(float(np.percentile(lag_ms, 50)), 2),
                   "p95": round(float(np.percentile(lag_ms, 95)), 2),
                   "p99": round(float(np.percentile(lag_ms, 99)), 2),
                   "max": round(float(lag_ms.max()), 2),
                   "final": round(float(lag_ms[-1]), 2),
                   "late_groups_pct": round(float(np.mean(lag_ms > SATELLITE_FRAME_MS)) * 100, 2)},
    }


def _send(sat: _Sat, tick: int, noise: list[bytes],
          commands: dict[str, tuple[list[bytes], int]]) -> None:
    frames, speech_end = commands[sat.command]
    k = tick - sat.start_tick
    if 0 <= k < len(frames):
        payload = frames[k]
    else:
        payload = noise[(tick + sat.noise_offset) % NOISE_POOL_FRAMES]
    info = sat.client.publish(sat.topic, payload)
    if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or info.rc == MQTTErrorCode.MQTT_ERR_AGAIN:
        sat.published += 1
    else:
        sat.errors += 1
    if k == 0:
        sat.command_start = time.monotonic()
    if k == speech_end - 1:
        sat.last_speech = time.monotonic()


def _flush(clients: list[Client]) -> float:
    """Write out whatever paho still holds; the time it was done."""
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    for client in clients:
        while client.want_write() and time.monotonic() < deadline:
            sock = client.socket()
            if sock is None:
                break
            select.select([], [sock], [], 0.1)
            client.loop_write()
    return time.monotonic()


def main() -> int:
    """Read the plan from stdin, stream, print the result as JSON."""
    plan = json.load(sys.stdin)
    result = run(plan)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
