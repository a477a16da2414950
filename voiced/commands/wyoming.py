"""`voiced wyoming-server`: voiced's recognizer and intents as a Wyoming service.

    voiced wyoming-server [--config FILE] [--uri tcp://127.0.0.1:10300] [--asr BACKEND]
                          [--model M] [--zeroconf [NAME]] [--zeroconf-host IP]

Home Assistant: Settings → Devices & services → Add → Wyoming Protocol, host and port of
this server (or let zeroconf announce it). See voiced.wyoming_server and the README.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from voiced.errors import VoicedError

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add `voiced wyoming-server`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "wyoming-server", help="serve voiced's speech recognition and intents over Wyoming",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="voiced.yaml (asr and intents sections)")
    p.add_argument("--uri", default="tcp://127.0.0.1:10300",
                   help="tcp://HOST:PORT to listen on (default loopback; Wyoming has no "
                        "authentication: open it only to a trusted network)")
    p.add_argument("--asr", choices=["pocketsphinx", "whisper"],
                   help="recognizer (default: asr.backend)")
    p.add_argument("--model", help="whisper model name or checkpoint path")
    p.add_argument("--zeroconf", nargs="?", const="", metavar="NAME",
                   help="announce the service over mDNS (_wyoming._tcp) for Home Assistant")
    p.add_argument("--zeroconf-host", metavar="IP", help="address to announce")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM."""
    parsed = urlparse(args.uri)
    if parsed.scheme != "tcp" or not parsed.hostname or parsed.port is None:
        print(f"voiced wyoming-server: --uri must be tcp://HOST:PORT, got {args.uri!r}",
              file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(args, parsed.hostname, parsed.port))
    except VoicedError as exc:
        print(f"voiced wyoming-server: {exc}", file=sys.stderr)
        return 1


async def _serve(args: argparse.Namespace, host: str, port: int) -> int:
    from voiced.asr.service import AsrService
    from voiced.config import AsrConfig, load_config
    from voiced.inference import InferenceEngine
    from voiced.intents.catalog import load_catalog
    from voiced.wyoming_server import WyomingServer, WyomingService

    config = load_config(args.config)
    overrides = {k: v for k, v in {"backend": args.asr, "model": args.model}.items() if v}
    asr_config = AsrConfig.model_validate({**config.asr.model_dump(), **overrides})
    if asr_config.backend == "wyoming":
        log.warning("asr.backend is wyoming: this server forwards to %s",
                    asr_config.wyoming.uri)
    engine = InferenceEngine(workers=8)
    recognizer = await engine.run(load_catalog, config)
    asr = AsrService.from_config(asr_config, recognizer, config.state_dir, engine)
    await asr.load()
    server = WyomingServer(WyomingService(asr, recognizer, engine, asr_config.backend),
                           host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        if args.zeroconf is not None:
            try:
                await server.announce(args.zeroconf or None, args.zeroconf_host)
            except Exception as exc:  # no multicast route, zeroconf refused: serve anyway
                log.warning("wyoming: zeroconf announcement failed: %r", exc)
        print(f"voiced wyoming-server: listening on tcp://{host}:{server.port}", flush=True)
        await stop.wait()
    finally:
        await server.stop()
        await asr.close()
        engine.close()
    return 0
