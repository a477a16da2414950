"""What `voiced bench ingest` observes on MQTT, and its report.

`Monitor` is one MQTT connection that follows voiced's retained `voiced/status` (frames
and drops per site), the answers (`hermes/intent/#`, `hermes/nlu/intentNotRecognized`) and
mosquitto's `$SYS/broker/publish/messages/*` counters. `build_report` joins that with the
generator's own record and the CPU samples into one JSON-ready dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import aiomqtt

from voiced.transport import native

READY_TIMEOUT_S = 120.0
SETTLE_QUIET_S = 5.0
"""voiced refreshes its status every 2 s while counters change: this long without a new
one means its counters have stopped moving."""
SETTLE_MAX_S = 30.0
WARMUP_S = 3.0
"""Left out of the steady-state CPU figure (site workers are created on first audio)."""
SATURATED_CORES = 0.95
"""voiced runs on one event loop: a second at this much CPU while only noise streams means
it could not keep up, and its CPU per satellite is then a lower bound."""
LATE_FRAME_MS = 20.0
"""A generator group later than one frame is late."""
MAX_LATE_PCT = 1.0
"""The generator kept real time when at most this share of its groups was late and it
ended on time."""
ANSWER_TOPICS = ("hermes/intent/#", "hermes/nlu/intentNotRecognized")
SYS_TOPIC = "$SYS/broker/publish/messages/+"
SYS_REFRESH_S = 3.0
"""Longest wait for one more `$SYS` update (the test broker sends them every second)."""


LOG_PATTERNS: dict[str, str] = {
    "warnings": r" WARNING ",
    "errors": r" (ERROR|CRITICAL) ",
    "mqtt_connection_lost": r"MQTT connection to \S+ lost",
    "ingest_queue_full": r"ingest queue full",
    "audio_stopped_mid_utterance": r"audio stopped mid-utterance",
}
"""What voiced's own log says about overload (counted lines)."""


def log_counts(text: str) -> dict[str, int]:
    """How many lines of voiced's log match each of LOG_PATTERNS."""
    lines = text.splitlines()
    return {name: sum(1 for line in lines if re.search(pattern, line))
            for name, pattern in LOG_PATTERNS.items()}


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


@dataclass(frozen=True, slots=True)
class Heard:
    """One answer voiced published for a site."""

    at: float
    """Monotonic seconds (system-wide, comparable with the generator's times)."""
    intent: str | None
    """The intent name, or None for intentNotRecognized."""


class Monitor:
    """Follows voiced's status, its answers and the broker's counters."""

    def __init__(self, host: str, port: int) -> None:
        self._client = aiomqtt.Client(host, port, identifier=f"ingest-monitor-{port}")
        self._reader: asyncio.Task[None] | None = None
        self._news = asyncio.Event()
        self.status: dict[str, Any] = {}
        self.status_at = 0.0
        self.answers: dict[str, list[Heard]] = {}
        self.broker: dict[str, int] = {}
        """Latest `$SYS/broker/publish/messages/<name>` values (dropped, received, sent)."""
        self.broker_at = 0.0
        self.received = 0
        """Messages this monitor received (the broker counts them as sent)."""

    async def __aenter__(self) -> Monitor:
        await self._client.__aenter__()
        for topic in (native.STATUS_TOPIC, SYS_TOPIC, *ANSWER_TOPICS):
            await self._client.subscribe(topic)
        self._reader = asyncio.create_task(self._read(), name="ingest-monitor")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for msg in self._client.messages:
            topic, at = msg.topic.value, time.monotonic()
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            self.received += 1
            if topic.startswith("$SYS/"):
                with contextlib.suppress(ValueError):
                    self.broker[topic.rsplit("/", 1)[1]] = int(payload)
                    self.broker_at = at
            elif topic == native.STATUS_TOPIC:
                status = json.loads(payload)
                if status.get("state") != "offline":
                    self.status, self.status_at = status, at
            else:
                data = json.loads(payload)
                intent = data["intent"]["intentName"] if topic.startswith("hermes/intent/") \
                    else None
                self.answers.setdefault(str(data.get("siteId")), []).append(Heard(at, intent))
            self._news.set()

    async def _next(self, deadline: float) -> bool:
        """Wait for the next message until `deadline`; False when it passed."""
        self._news.clear()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await self._news.wait()
        except TimeoutError:
            return False
        return True

    async def wait_ready(self, server: subprocess.Popen[bytes]) -> None:
        """Until voiced's status says ready; raises when voiced exits first."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.status.get("state") != "ready":
            if server.poll() is not None:
                raise RuntimeError(f"voiced exited during start-up (exit {server.returncode})")
            if time.monotonic() > deadline:
                raise TimeoutError("voiced did not become ready")
            await self._next(min(deadline, time.monotonic() + 0.5))

    async def wait_answers(self, generated: dict[str, Any], timeout: float) -> None:
        """Until every site that spoke has an answer after its command, or `timeout`."""
        deadline = time.monotonic() + timeout
        while any(_answer(self.answers.get(site, []), s["command_start"]) is None
                  for site, s in generated["sites"].items() if s["command_start"] is not None):
            if not await self._next(deadline):
                return

    async def wait_settled(self, published: int) -> None:
        """Until voiced's counters account for every frame or stop changing, and then the
        broker's counters are refreshed once more."""
        deadline = time.monotonic() + SETTLE_MAX_S
        while time.monotonic() < deadline:
            sites = self.status.get("sites", {}).values()
            counted = sum(s.get("frames", 0) + s.get("dropped", 0) + s.get("shed", 0)
                          for s in sites)
            counted += int(self.status.get("site_registry", {}).get("refused", 0))
            if counted + self.broker.get("dropped", 0) >= published:
                break
            if not await self._next(min(deadline, self.status_at + SETTLE_QUIET_S)) \
                    and time.monotonic() >= self.status_at + SETTLE_QUIET_S:
                break
        settled = time.monotonic()
        deadline = settled + SYS_REFRESH_S
        while self.broker_at <= settled and await self._next(deadline):
            pass


def _answer(heard: list[Heard], after: float | None) -> Heard | None:
    if after is None:
        return None
    return next((h for h in heard if h.at >= after), None)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))], 1)


def _rate(samples: list[dict[str, Any]], key: str, t0: float, t1: float) -> float | None:
    """Cores used by `key` between the samples nearest t0 and t1 (seconds from start)."""
    window = [s for s in samples if key in s and t0 <= s["t"] <= t1]
    if len(window) < 2 or window[-1]["t"] - window[0]["t"] <= 0:
        return None
    return round((window[-1][key] - window[0][key]) / (window[-1]["t"] - window[0]["t"]), 4)


def build_report(plan: dict[str, Any], generated: dict[str, Any], monitor: Monitor,
                 samples: list[dict[str, Any]], expected: dict[str, str | None],
                 load: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
    """The benchmark's result as a JSON-ready dict."""
    n = len(plan["sites"])
    noise_s = plan["noise_ticks"] * 0.02
    warm = min(WARMUP_S, noise_s / 3)
    end = samples[-1]["t"] if samples else 0.0
    cores = _rate(samples, "voiced", warm, noise_s)
    per_second = [(b["t"], (b["voiced"] - a["voiced"]) / (b["t"] - a["t"]))
                  for a, b in itertools.pairwise(samples)]
    sites = generated["sites"]
    published = sum(s["published"] for s in sites.values())
    status_sites = monitor.status.get("sites", {})
    seen = sum(status_sites.get(site, {}).get("frames", 0) for site in sites)
    # what voiced reports losing: queue overflow ("dropped") and stale audio an idle site
    # shed to catch up ("shed"); both are 20 ms frames here
    voiced_dropped = sum(status_sites.get(site, {}).get("dropped", 0)
                         + status_sites.get(site, {}).get("shed", 0) for site in sites)
    # messages from sites refused beyond sites.max: voiced counts each (one frame each here)
    voiced_dropped += int(monitor.status.get("site_registry", {}).get("refused", 0))
    broker_dropped = monitor.broker.get("dropped")
    lost = published - seen
    unaccounted = lost - voiced_dropped - (broker_dropped or 0)
    # the audio topic has one subscriber, voiced: what the broker sent went to voiced or
    # to this monitor
    to_voiced = monitor.broker["sent"] - monitor.received if "sent" in monitor.broker else None
    answered, correct, not_recognized, early, extra = 0, 0, 0, 0, 0
    latency: list[float] = []
    unanswered = []
    by_command: dict[str, list[int]] = {}
    for site, s in sites.items():
        heard = monitor.answers.get(site, [])
        first = _answer(heard, s["command_start"])
        early += sum(1 for h in heard if s["command_start"] is None or h.at < s["command_start"])
        tally = by_command.setdefault(s["command"], [0, 0, 0])
        tally[0] += 1
        if first is None:
            unanswered.append(site)
            continue
        answered += 1
        tally[1] += 1
        extra += sum(1 for h in heard if h.at > first.at)
        not_recognized += first.intent is None
        if s["command"] in expected and first.intent == expected[s["command"]]:
            correct += 1
            tally[2] += 1
        if s["last_speech"] is not None:
            latency.append((first.at - s["last_speech"]) * 1000)
    lag = generated["lag_ms"]
    realtime = lag["late_groups_pct"] <= MAX_LATE_PCT and lag["final"] <= LATE_FRAME_MS
    return {
        "satellites": n,
        "noise_s": noise_s,
        "command_spread_s": plan["command_spread_s"],
        "streamed_s": round(generated["streamed"] - generated["started"], 1),
        "connections": generated["connections"],
        "load_average": load,
        "voiced": {
            "cpu_cores": cores,
            "cpu_per_satellite": round(cores / n, 5) if cores is not None else None,
            "cpu_cores_max_1s": round(max(c for _, c in per_second), 3) if per_second else None,
            "saturated": any(c >= SATURATED_CORES for t, c in per_second if warm <= t <= noise_s),
            "cpu_cores_commands": _rate(samples, "voiced", noise_s, end),
            "workers_cpu_cores_noise": _rate(samples, "workers", warm, noise_s),
            "workers_cpu_cores_commands": _rate(samples, "workers", noise_s, end),
            "rss_mb_max": round(max((s["rss"] for s in samples), default=0) / 2**20, 1),
            "timeline": [[round(b["t"], 1), round(b["voiced"] - a["voiced"], 2),
                          round(b["rss"] / 2**20)] for a, b in itertools.pairwise(samples)],
        },
        "frames": {
            "published": published,
            "seen": seen,
            "lost": lost,
            "dropped_by_voiced": voiced_dropped,
            "dropped_by_broker": broker_dropped,
            "unaccounted": unaccounted,
            "unaccounted_split": None if to_voiced is None else {
                "not_sent_by_broker": published - to_voiced - (broker_dropped or 0),
                "lost_inside_voiced": to_voiced - seen - voiced_dropped,
            },
            "sites_unseen": sum(1 for site in sites if site not in status_sites),
        },
        "commands": {
            "spoken": sum(1 for s in sites.values() if s["command_start"] is not None),
            "answered": answered,
            "correct": correct,
            "not_recognized": not_recognized,
            "answers_before_command": early,
            "extra_answers": extra,
            "speech_end_to_answer_ms": {"p50": _pct(latency, 50), "p95": _pct(latency, 95),
                                        "max": _pct(latency, 100)},
            "unanswered": unanswered,
            "by_command": by_command,
        },
        "generator": {**{k: generated[k] for k in ("lag_ms", "cpu_cores", "flush_s")},
                      "kept_real_time": realtime,
                      "publish_errors": sum(s["errors"] for s in sites.values())},
        "broker": {"cpu_cores": _rate(samples, "broker", warm, noise_s), **monitor.broker},
        "ok": (answered == len(sites) and lost == 0 and realtime),
    }


def print_report(r: dict[str, Any]) -> None:
    """The report as a few readable lines."""
    v, f, c, g = r["voiced"], r["frames"], r["commands"], r["generator"]
    load = r["load_average"]
    print(f"satellites {r['satellites']}: {r['noise_s']:.0f} s of noise, then commands over "
          f"{r['command_spread_s']:.0f} s ({r['streamed_s']} s streamed, "
          f"{r['connections']} connections); load average "
          f"{load['before'][0]:.2f} before, {load['after'][0]:.2f} after")
    per_sat = v["cpu_per_satellite"]
    print(f"voiced CPU (noise only): {v['cpu_cores']} cores = "
          f"{per_sat if per_sat is not None else '-'} per satellite"
          f"{' (SATURATED: a lower bound)' if v['saturated'] else ''}; max 1 s "
          f"{v['cpu_cores_max_1s']}; during commands {v['cpu_cores_commands']} "
          f"(+ recognizer workers {v['workers_cpu_cores_commands']}); RSS {v['rss_mb_max']} MiB")
    print(f"frames: published {f['published']}, voiced saw {f['seen']}, lost {f['lost']} "
          f"(voiced reported {f['dropped_by_voiced']} dropped, mosquitto "
          f"{f['dropped_by_broker']}, unaccounted {f['unaccounted']}); "
          f"sites never seen {f['sites_unseen']}")
    if f["unaccounted"] and f["unaccounted_split"]:
        split = f["unaccounted_split"]
        print(f"  unaccounted, from mosquitto's counters (approximate): not sent by mosquitto "
              f"(queued for voiced at the end, or voiced was disconnected) "
              f"{split['not_sent_by_broker']}, lost inside voiced "
              f"{split['lost_inside_voiced']}")
    if v.get("log"):
        print("voiced's log: " + ", ".join(f"{k} {n}" for k, n in v["log"].items()))
    lat = c["speech_end_to_answer_ms"]
    print(f"commands: {c['spoken']} spoken, {c['answered']} answered ({c['correct']} as "
          f"expected, {c['not_recognized']} not recognized); end of speech → answer p50 "
          f"{lat['p50']} / p95 {lat['p95']} / max {lat['max']} ms; answers before a "
          f"command {c['answers_before_command']}, extra {c['extra_answers']}")
    lag = g["lag_ms"]
    print(f"generator: {'kept' if g['kept_real_time'] else 'DID NOT keep'} real time (lag p50 "
          f"{lag['p50']} / p99 {lag['p99']} / max {lag['max']} ms, "
          f"{lag['late_groups_pct']}% late), CPU {g['cpu_cores']} cores; mosquitto CPU "
          f"{r['broker']['cpu_cores']} cores")
    if c["unanswered"]:
        print(f"unanswered: {', '.join(c['unanswered'][:20])}"
              + (" ..." if len(c["unanswered"]) > 20 else ""))
    print("OK" if r["ok"] else "NOT OK")

