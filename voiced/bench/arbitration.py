"""`voiced bench arbitration`: which satellite answers when several hear one command.

Draws `--rooms` homes around one speaker (voiced.bench.rooms: 2-4 satellites of one group
at random distances, some in neighbouring rooms, each with its own noise, microphone gain
and stream latency, reverberation; every `--tv-every`th home has a loud television next
to a satellite, every `--silent-every`th a satellite out of earshot, every
`--single-every`th only one satellite that hears). One espeak-ng command per home, rendered
per satellite by sox. A mosquitto and a `voiced serve` (one group per home, the policy
under test) run as separate processes; `--parallel` homes stream at the same time, each
satellite in real time over MQTT, after a little of its room's noise (a new stream's first
frames fool webrtcvad, as they do on any satellite that just connected).

Reports, per policy: how often the nearest satellite is the one that answers (over every
home where two or more hear the command, and where the nearest is at least twice as close
as the next), homes where two satellites answered, answers from a satellite out of earshot,
and the time the winner's endpointed command waited for the decision (its `arbitration`
timing) when two or more satellites fired and when one did, with the end-to-end latency
(last speech frame sent to the intent) of both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from voiced.bench.procs import free_port, start_mosquitto, start_voiced
from voiced.bench.rooms import Mic, Room, dry_command, random_room, render
from voiced.const import BYTES_PER_SECOND
from voiced.satellite import Satellite
from voiced.transport import native

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "tests" / "fixtures" / "commands.yaml"
WARM_S = 1.2
"""Room noise each satellite streams before its recording."""
SETTLE_S = 2.5
"""After the streams end, how long a home gets for its last sessions to end (a satellite
whose audio stops mid-utterance ends it after 1.5 s)."""
POLICIES = ("score", "loudest", "first")


def register(sub: Any) -> None:
    """Add `voiced bench arbitration`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "arbitration", help="which satellite answers a command several hear")
    p.add_argument("--rooms", type=int, default=60, help="homes simulated (default 60)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--parallel", type=int, default=6, help="homes streaming at once")
    p.add_argument("--policy", default="score",
                   help=f"comma-separated policies to compare ({', '.join(POLICIES)})")
    p.add_argument("--tv-every", type=int, default=5, help="every Nth home has a television")
    p.add_argument("--silent-every", type=int, default=3,
                   help="every Nth home has a satellite out of earshot")
    p.add_argument("--single-every", type=int, default=4,
                   help="every Nth home has only one satellite that hears")
    p.add_argument("--work", type=Path, help="folder for the rendered audio (kept; default: "
                   "a temporary one)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def plan(args: argparse.Namespace, dry: list[tuple[Path, dict[str, Any]]]) -> list[Room]:
    """The homes of a run (deterministic for a seed)."""
    rng = random.Random(args.seed)
    rooms = []
    for k in range(args.rooms):
        speech, _ = dry[k % len(dry)]
        room = random_room(f"r{k}", speech, rng, tv=args.tv_every > 0 and k % args.tv_every
                           == args.tv_every - 1,
                           silent=args.silent_every > 0 and k % args.silent_every == 1)
        if args.single_every > 0 and k % args.single_every == 2:
            hearing = [m for m in room.mics if m.hears and m.noise != "tv"][:1]
            quiet = hearing[0].noise_dbfs if hearing else -60.0
            room = replace(room, mics=tuple(m if m in hearing else replace(
                m, distance_m=50.0, hears=False, noise="brown",
                noise_dbfs=m.noise_dbfs if m.noise != "tv" else quiet) for m in room.mics))
        rooms.append(room)
    return rooms


def _commands(work: Path) -> list[tuple[Path, dict[str, Any]]]:
    entries = [e for e in yaml.safe_load(MANIFEST.read_text())["commands"]
               if not (e.get("context") or {}).get("speaker")]
    out = []
    for i, entry in enumerate(entries[:12]):
        path = work / f"command-{i}.wav"
        if not path.exists():
            dry_command(entry["text"], entry.get("voice", "en-us"), path)
        out.append((path, entry))
    return out


def _render_all(rooms: list[Room], work: Path) -> dict[str, dict[str, bytes]]:
    def one(room: Room) -> tuple[str, dict[str, bytes]]:
        return room.name, render(room, work / room.name, seed=int(room.name[1:]))

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, rooms))


def _config(rooms: list[Room], policy: str, path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "intents": {"paths": [str(REPO / "config" / "intents")]},
        "sites": {"groups": {room.name: [m.site for m in room.mics] for room in rooms},
                  "arbitration": {"policy": policy},
                  "max": max(500, sum(len(room.mics) for room in rooms) + 16)},
        "tts": {"mode": "hermes"}, "history": {"enabled": False}}))
    return path


class Listener:
    """Everything voiced says, sorted by home (site ids are `<home>-s<i>`)."""

    def __init__(self) -> None:
        self.by_room: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}

    async def run(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            try:
                data = json.loads(msg.payload)  # type: ignore[arg-type]
            except (ValueError, TypeError):
                continue
            if not isinstance(data, dict):
                continue
            site = str(data.get("siteId") or data.get("site") or "")
            self.by_room.setdefault(site.split("-")[0], []).append(
                (time.monotonic(), msg.topic.value, data))


async def _home(room: Room, audio: dict[str, bytes], port: int, listener: Listener,
                warm: dict[str, bytes]) -> dict[str, Any]:
    """Stream one home and read what became of its command."""
    speech_end: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as stack:
        sats = {m.site: await stack.enter_async_context(Satellite("127.0.0.1", port, m.site))
                for m in room.mics}
        began = time.monotonic()

        async def one(mic: Mic) -> None:
            await asyncio.sleep(mic.latency_ms / 1000)
            pcm = warm[mic.site] + audio[mic.site]
            speech_end[mic.site] = await sats[mic.site].stream(pcm, realtime=True,
                                                               trailing_silence_ms=0)

        await asyncio.gather(*(one(m) for m in room.mics))
        await _settle(listener, room.name, began + WARM_S, time.monotonic())
    return _result(room, listener.by_room.get(room.name, []), began + WARM_S,
                   speech_end.get(room.nearest.site))


async def _settle(listener: Listener, name: str, since: float, ended: float) -> None:
    """Until SETTLE_S after the streams ended and every session that started has ended
    (at most 15 s more)."""
    deadline = ended + 15
    while time.monotonic() < deadline:
        msgs = [(t, topic, d) for t, topic, d in listener.by_room.get(name, []) if t >= since]
        started = {d.get("sessionId") for _, topic, d in msgs if topic.endswith("sessionStarted")}
        done = {d.get("sessionId") for _, topic, d in msgs if topic.endswith("sessionEnded")}
        if time.monotonic() >= ended + SETTLE_S and started <= done:
            return
        await asyncio.sleep(0.1)


def _result(room: Room, msgs: list[tuple[float, str, dict[str, Any]]], since: float,
            nearest_speech_end: float | None) -> dict[str, Any]:
    msgs = [m for m in msgs if m[0] >= since]
    answers: dict[str, list[str]] = {}
    intent_at: float | None = None
    timings: dict[str, float] = {}
    for at, topic, data in msgs:
        site = str(data.get("siteId") or "")
        if topic.startswith("hermes/intent/") or topic == "hermes/nlu/intentNotRecognized":
            answers.setdefault(site, []).append(topic.rsplit("/", 1)[-1])
            intent_at = at if intent_at is None else intent_at
        elif topic.startswith("voiced/events/") and data.get("type") == "outcome" \
                and not timings and data.get("outcome") != "arbitration_lost":
            timings = {str(k): float(v) for k, v in (data.get("timings") or {}).items()}
    decisions = [d for _, topic, d in msgs
                 if topic.startswith("voiced/events/") and d.get("type") == "arbitration"]
    heard = [m for m in room.mics if m.hears]
    winner = next(iter(answers)) if len(answers) == 1 else None
    contested = any(winner is not None and d.get("winner") == winner
                    and len(d.get("candidates") or []) > 1 for d in decisions)
    deaf = {m.site for m in room.mics if not m.hears}
    return {
        "room": room.name, "satellites": len(room.mics), "hearing": len(heard),
        "ratio": round(room.ratio(), 2) if len(heard) > 1 else None,
        "nearest": room.nearest.site, "answered": sorted(answers),
        "nearest_won": list(answers) == [room.nearest.site],
        "deaf_answered": sorted(deaf & set(answers)), "contested": contested,
        "decisions": [{k: d.get(k) for k in ("reason", "winner", "decidedMs", "candidates")}
                      for d in decisions],
        "arbitration_ms": timings.get("arbitration"),
        "e2e_ms": ((intent_at - nearest_speech_end) * 1000
                   if intent_at is not None and nearest_speech_end is not None
                   and winner == room.nearest.site else None),
        "tv": any(m.noise == "tv" for m in room.mics),
        "mics": [{"site": m.site, "distance_m": m.distance_m, "wall_db": m.wall_db,
                  "noise": m.noise, "noise_dbfs": m.noise_dbfs, "gain_db": m.gain_db,
                  "latency_ms": m.latency_ms, "hears": m.hears} for m in room.mics],
    }


async def _wait_ready(port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with aiomqtt.Client("127.0.0.1", port) as client:
                await client.subscribe(native.STATUS_TOPIC)
                async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                    async for msg in client.messages:
                        if json.loads(msg.payload).get("state") == "ready":  # type: ignore[arg-type]
                            return
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)
    raise TimeoutError("voiced did not become ready")


async def _run_policy(rooms: list[Room], audio: dict[str, dict[str, bytes]], port: int,
                      parallel: int) -> list[dict[str, Any]]:
    await _wait_ready(port)
    listener = Listener()
    warm = {}
    for room in rooms:
        quiet = next(audio[room.name][m.site] for m in room.mics if m.noise != "tv")
        for m in room.mics:
            source = audio[room.name][m.site] if m.noise != "tv" else quiet
            warm[m.site] = source[: int(WARM_S * BYTES_PER_SECOND)]
    slots = asyncio.Semaphore(parallel)
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for topic in ("hermes/intent/#", "hermes/nlu/intentNotRecognized", "hermes/tts/say",
                      "hermes/dialogueManager/#", "voiced/events/#"):
            await client.subscribe(topic)
        reader = asyncio.create_task(listener.run(client))

        async def home(room: Room) -> dict[str, Any]:
            async with slots:
                return await _home(room, audio[room.name], port, listener, warm)

        try:
            return list(await asyncio.gather(*(home(r) for r in rooms)))
        finally:
            reader.cancel()


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))], 1)


def _pick(row: dict[str, Any], field: str) -> str | None:
    """The candidate with the highest `field` in the home's contest (None: no contest with
    every candidate measured)."""
    contests = [d for d in row["decisions"] if d["reason"] in ("scored", "deadline")
                and len(d["candidates"] or []) > 1]
    if not contests:
        return None
    values = {c["site"]: c.get(field) for c in contests[-1]["candidates"]}
    if any(v is None for v in values.values()):
        return None
    return max(values, key=lambda site: values[site])


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one policy's run."""
    multi = [r for r in results if r["hearing"] > 1]
    clear = [r for r in multi if r["ratio"] is not None and r["ratio"] >= 2]
    two = [r["arbitration_ms"] for r in results if r["contested"] and r["arbitration_ms"]
           is not None]
    one = [r["arbitration_ms"] for r in results if r["hearing"] == 1
           and r["arbitration_ms"] is not None]
    e2e_two = [r["e2e_ms"] for r in results if r["contested"] and r["e2e_ms"] is not None]
    e2e_one = [r["e2e_ms"] for r in results if r["hearing"] == 1 and r["e2e_ms"] is not None]

    def share(rows: list[dict[str, Any]], key: str = "nearest_won") -> dict[str, Any]:
        won = sum(bool(r[key]) for r in rows)
        return {"won": won, "of": len(rows),
                "percent": round(100 * won / len(rows), 1) if rows else None}

    # what one measure alone would have picked, from the same decisions' evidence
    alone: dict[str, Any] = {}
    for field in ("score", "fluxDb", "riseDb", "bandModulationDb", "snrDb", "levelDbfs",
                  "modulationDb", "onsetDb"):
        rows = [r for r in clear if _pick(r, field) is not None]
        alone[field] = share([{"hit": _pick(r, field) == r["nearest"]} for r in rows], "hit")

    return {
        "homes": len(results),
        "nearest_wins": share(multi),
        "nearest_wins_2x_closer": share(clear),
        "single_answered_by_it": share([r for r in results if r["hearing"] == 1]),
        "double_answers": sum(len(r["answered"]) > 1 for r in results),
        "nobody_answered": sum(not r["answered"] for r in results),
        "deaf_answered": sum(bool(r["deaf_answered"]) for r in results),
        "tv_homes_nearest_won": share([r for r in multi if r["tv"]]),
        "nearest_by_one_measure_2x_closer": alone,
        "arbitration_ms_two_fired": {"p50": _pct(two, 50), "p95": _pct(two, 95), "n": len(two)},
        "arbitration_ms_one_fired": {"p50": _pct(one, 50), "p95": _pct(one, 95), "n": len(one)},
        "e2e_ms_two_fired": {"p50": _pct(e2e_two, 50), "p95": _pct(e2e_two, 95)},
        "e2e_ms_one_fired": {"p50": _pct(e2e_one, 50), "p95": _pct(e2e_one, 95)},
    }


def run(args: argparse.Namespace) -> int:
    """Entry of `voiced bench arbitration`."""
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    if not policies or any(p not in POLICIES for p in policies):
        print(f"bench arbitration: --policy takes {', '.join(POLICIES)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="voiced-bench-arb-") as tmp:
        work = args.work or Path(tmp) / "audio"
        work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        rooms = plan(args, _commands(work))
        audio = _render_all(rooms, work)
        rendered_s = time.monotonic() - started
        report: dict[str, Any] = {"rooms": args.rooms, "seed": args.seed,
                                  "render_s": round(rendered_s, 1), "policies": {}}
        for policy in policies:
            port = free_port()
            broker = start_mosquitto(Path(tmp), port)
            server = start_voiced(["--config", str(_config(rooms, policy, Path(tmp) / "v.yaml")),
                                   "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port),
                                   "--state-dir", str(Path(tmp) / f"state-{policy}"),
                                   "--http-port", "-1"])
            try:
                began = time.monotonic()
                results = asyncio.run(_run_policy(rooms, audio, port, args.parallel))
                summary = summarize(results)
                summary["wall_s"] = round(time.monotonic() - began, 1)
                report["policies"][policy] = {**summary, "homes_detail": results}
            finally:
                server.terminate()
                server.wait(timeout=30)
                broker.terminate()
                broker.wait(timeout=10)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0


def _print(report: dict[str, Any]) -> None:
    print(f"{report['rooms']} homes (seed {report['seed']}), rendered in {report['render_s']} s")
    for policy, s in report["policies"].items():
        nw, nc = s["nearest_wins"], s["nearest_wins_2x_closer"]
        two, one = s["arbitration_ms_two_fired"], s["arbitration_ms_one_fired"]
        e2, e1 = s["e2e_ms_two_fired"], s["e2e_ms_one_fired"]
        print(f"policy {policy} ({s['wall_s']} s)")
        print(f"  nearest answers: {nw['won']}/{nw['of']} ({nw['percent']} %); nearest at "
              f"least 2x closer: {nc['won']}/{nc['of']} ({nc['percent']} %)")
        tv = s["tv_homes_nearest_won"]
        print(f"  homes with a television: {tv['won']}/{tv['of']}; single satellite "
              f"answered: {s['single_answered_by_it']['won']}/"
              f"{s['single_answered_by_it']['of']}")
        print(f"  double answers: {s['double_answers']}  out-of-earshot answers: "
              f"{s['deaf_answered']}  nobody answered: {s['nobody_answered']}")
        print(f"  wait for the decision, two or more fired: p50 {two['p50']} ms, p95 "
              f"{two['p95']} ms (n={two['n']}); one fired: p50 {one['p50']} ms, p95 "
              f"{one['p95']} ms (n={one['n']})")
        print(f"  last speech frame -> intent, two or more fired: p50 {e2['p50']} ms, p95 "
              f"{e2['p95']} ms; one fired: p50 {e1['p50']} ms, p95 {e1['p95']} ms")
        alone = ", ".join(f"{k} {v['percent']} %" for k, v in
                          s["nearest_by_one_measure_2x_closer"].items())
        print(f"  in the same contests (nearest 2x closer), one measure alone: {alone}")
