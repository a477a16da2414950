"""`voiced satellite`: a satellite client that streams WAV files or a microphone."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from voiced.audio.wav import read_wav_file
from voiced.config import Config
from voiced.errors import VoicedError
from voiced.satellite import FRAME_BYTES, Answer, Satellite


def register(sub: Any) -> None:
    """Add `voiced satellite`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "satellite", help="stream WAV files or a microphone to voiced like a satellite")
    p.add_argument("--site", required=True, help="site id of this satellite")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav", type=Path, nargs="+", metavar="FILE", help="WAV files to stream")
    src.add_argument("--mic", action="store_true", help="stream from the microphone (arecord)")
    p.add_argument("--raw", action="store_true",
                   help="send raw PCM on voiced/audio/<site>/pcm instead of Hermes WAV chunks")
    p.add_argument("--realtime", action="store_true", help="pace frames at real time")
    p.add_argument("--hotword", action="store_true",
                   help="send hermes/hotword/voiced/detected before each file (wake-gated sites)")
    p.add_argument("--mqtt-host", default="localhost")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    p.add_argument("--json", action="store_true", help="print one JSON object per utterance")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry of `voiced satellite`."""
    try:
        return asyncio.run(_mic(args) if args.mic else _files(args))
    except VoicedError as exc:
        print(f"voiced satellite: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"voiced satellite: {exc}", file=sys.stderr)
        return 1


def _print(name: str, answer: Answer, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"file": name, **answer.as_dict()}), flush=True)
    else:
        print(f"{name}: {answer.summary()}", flush=True)


async def _files(args: argparse.Namespace) -> int:
    audio = [(path, read_wav_file(path)) for path in args.wav]
    failures = 0
    async with Satellite(args.mqtt_host, args.mqtt_port, args.site, raw=args.raw) as sat:
        for path, pcm in audio:
            try:
                answer = await sat.command(pcm, realtime=args.realtime, timeout=args.timeout,
                                           hotword=args.hotword)
            except TimeoutError:
                print(f"{path}: no answer from voiced within {args.timeout:g} s", file=sys.stderr)
                failures += 1
                continue
            _print(str(path), answer, args.json)
    return 1 if failures else 0


async def _mic(args: argparse.Namespace) -> int:
    if shutil.which("arecord") is None:
        print("voiced satellite: --mic needs arecord (Debian package alsa-utils)", file=sys.stderr)
        return 1
    proc = await asyncio.create_subprocess_exec(
        "arecord", "-q", "-r", "16000", "-f", "S16_LE", "-c", "1", "-t", "raw",
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    async with Satellite(args.mqtt_host, args.mqtt_port, args.site, raw=args.raw) as sat:
        printer = asyncio.create_task(_print_answers(sat, args.json))
        try:
            while True:
                frame = await proc.stdout.readexactly(FRAME_BYTES)
                await sat.send_frame(frame)
        except asyncio.IncompleteReadError:
            pass
        finally:
            printer.cancel()
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
    return 0


async def _print_answers(sat: Satellite, as_json: bool) -> None:
    while True:
        answer = await sat.next_answer()
        _print("mic", answer, as_json)


async def play_demo(config: Config, folder: Path) -> None:
    """The first-run demo: play sample commands through a simulated satellite."""
    files = sorted(folder.glob("*.wav"))
    if not files:
        print(f"demo: no WAV files in {folder}", file=sys.stderr)
        return
    host = "127.0.0.1" if config.broker.embedded else config.mqtt.host
    print(f"\ndemo: playing {len(files)} sample commands from {folder} as satellite 'demo'",
          flush=True)
    async with Satellite(host, config.mqtt.port, "demo") as sat:
        for path in files:
            answer = await sat.command(read_wav_file(path), realtime=True)
            print(f"demo: {path.name}: {answer.summary()}", flush=True)
    print("demo: done; voiced keeps serving (Ctrl-C to stop). Try: voiced satellite --site "
          f"kitchen --mqtt-port {config.mqtt.port} --wav YOUR.wav\n", flush=True)
