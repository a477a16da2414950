"""`voiced serve`: run the daemon (flags override the config file)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from voiced import systemd
from voiced.config import Config, load_config
from voiced.errors import VoicedError

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add `voiced serve`."""
    p: argparse.ArgumentParser = sub.add_parser("serve", help="run the voice server")
    add_config_flags(p)
    p.add_argument("--demo", nargs="?", const=Path("config/samples"), type=Path, metavar="DIR",
                   help="once ready, play the sample commands in DIR through a simulated "
                        "satellite and print what voiced understood (default config/samples)")
    p.set_defaults(func=run)


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """The config file and the flags that override it (serve, doctor)."""
    p.add_argument("--config", type=Path, help="voiced.yaml (default: built-in defaults)")
    p.add_argument("--intents", type=Path, action="append", metavar="PATH",
                   help="intent file or folder (repeatable; replaces intents.paths)")
    p.add_argument("--mqtt-host", help="MQTT broker host")
    p.add_argument("--mqtt-port", type=int, help="MQTT broker port")
    p.add_argument("--state-dir", type=Path, help="folder for history, models, enrollments")
    p.add_argument("--embedded-broker", action="store_true",
                   help="run an embedded MQTT broker (amqtt) on the MQTT port")
    p.add_argument("--asr", choices=["pocketsphinx", "whisper"], help="speech recognizer")
    p.add_argument("--http-host", help="address of the web page and API (default loopback)")
    p.add_argument("--http-port", type=int,
                   help="port of the web page and API (0: any free port; -1: no HTTP)")


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    """Command-line flags over the config file."""
    mqtt: dict[str, Any] = {}
    if args.mqtt_host:
        mqtt["host"] = args.mqtt_host
    if args.mqtt_port:
        mqtt["port"] = args.mqtt_port
    update: dict[str, Any] = {}
    if mqtt:
        update["mqtt"] = config.mqtt.model_copy(update=mqtt)
    if args.intents:
        update["intents"] = config.intents.model_copy(update={"paths": list(args.intents)})
    if args.state_dir:
        update["state_dir"] = args.state_dir
    if args.embedded_broker:
        update["broker"] = config.broker.model_copy(update={"embedded": True})
    if getattr(args, "asr", None):
        update["asr"] = config.asr.model_copy(update={"backend": args.asr})
    http: dict[str, Any] = {}
    if getattr(args, "http_host", None):
        http["host"] = args.http_host
    port = getattr(args, "http_port", None)
    if port is not None:
        http.update({"enabled": False} if port < 0 else {"port": port})
    if http:
        update["http"] = config.http.model_copy(update=http)
    return config.model_copy(update=update)


def run(args: argparse.Namespace) -> int:
    """Entry of `voiced serve`."""
    # everything voiced writes (history, voiceprints, kept audio) is for its user only,
    # whatever umask it was started with
    os.umask(0o077)
    try:
        config = apply_overrides(load_config(args.config), args)
    except VoicedError as exc:
        print(f"voiced: {exc.message}", file=sys.stderr)
        return 2
    stuck: list[str] = []
    code = asyncio.run(serve(config, demo=args.demo, config_path=args.config, stuck=stuck))
    if stuck:
        # the interpreter would join those threads at exit, for ever: leave now, failed, so
        # systemd restarts voiced instead of waiting for its stop timeout
        log.critical("exiting without waiting for %d stuck model call(s)", len(stuck))
        logging.shutdown()
        os._exit(code or 1)
    return code


async def serve(config: Config, demo: Path | None = None,
                config_path: Path | None = None, stuck: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 1 when start-up failed or voiced could
    not go on (its MQTT link died), so systemd restarts it. Model calls still running at
    the end of the stop go into `stuck`."""
    from voiced.daemon import Daemon

    daemon = Daemon(config, config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        if daemon.ready.is_set():
            task = loop.create_task(daemon.reload(), name="reload")
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    starting = asyncio.create_task(daemon.start(), name="start")
    stopped = asyncio.create_task(stop.wait(), name="stop-wait")
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not starting.done():
        # SIGTERM while loading (a model, a grammar, a file that does not answer): stop
        # now instead of after a start-up that may never end; a model call still running
        # is left to the bounded stop of the inference engine (`stuck`)
        log.warning("stopping during start-up (%s)", systemd.last_status or "starting")
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await daemon.stop()
        if stuck is not None:
            stuck += daemon.stuck
        return 0
    try:
        starting.result()
    except VoicedError as exc:
        print(f"voiced: cannot start: {exc.message}", file=sys.stderr)
        await daemon.stop()
        if stuck is not None:
            stuck += daemon.stuck
        return 1
    demo_task = None
    if demo is not None:
        from voiced.commands.satellite import play_demo

        async def demo_when_connected() -> None:
            await daemon.wait_connected()  # its satellite must not talk before voiced hears
            await play_demo(config, demo)
            if daemon.http is not None:
                print(f"web page and API: {daemon.http.url}", flush=True)

        demo_task = asyncio.create_task(demo_when_connected(), name="demo")
    fatal = asyncio.create_task(daemon.fatal.wait(), name="fatal-wait")
    stopped = asyncio.create_task(stop.wait(), name="stop-wait")
    await asyncio.wait({fatal, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for waiter in (fatal, stopped):
        waiter.cancel()
    code = 1 if daemon.fatal.is_set() else 0
    if code:
        log.critical("stopping: %s", daemon.supervisor.fatal_reason)
    else:
        log.info("stopping")
    if demo_task is not None:
        demo_task.cancel()
        await asyncio.gather(demo_task, return_exceptions=True)
    await daemon.stop()
    if stuck is not None:
        stuck += daemon.stuck
    return code
