"""`voiced bench asr --backend ray`: the same model behind a Ray Serve deployment.

Without `--address`, a one-machine Ray head is started on loopback (`LocalRayHead`, token
authentication on) and `voiced cluster serve` deploys `--replicas` CPU or GPU replicas
of the benchmarked checkpoint, with `--window-ms` as the replicas' batch wait. Commands
then go through the daemon's own client (`RayServeClient`, one HTTP request per command,
from as many threads as commands arrive together), so the figures include the extra hop:
JSON and base64 over HTTP, Serve's proxy and router, `@serve.batch`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def cluster_transcriber(args: argparse.Namespace, model: str,
                        forced: int | None) -> Iterator[Any]:
    """A loaded `RemoteTranscriber` (no fallback) on the deployment; the head, if this
    started one, is stopped afterwards."""
    from voiced.asr.ray_backend import RayServeClient
    from voiced.asr.remote import RemoteTranscriber
    from voiced.cluster import LocalRayHead, free_port
    from voiced.config import AsrConfig

    token = secrets.token_urlsafe(24)
    head: LocalRayHead | None = None
    address = args.address
    try:
        if address is None:
            head = LocalRayHead(cpus=max(2, args.replicas), token=secrets.token_hex(16))
            print(f"starting a loopback Ray head in {head.dir}", file=sys.stderr)
            head.start()
            port = free_port()
            command = [
                sys.executable, "-m", "voiced", "cluster", "serve", "--address",
                head.address, "--model", model, "--replicas", str(args.replicas),
                "--gpus-per-replica", str(args.gpus_per_replica), "--device", args.device,
                "--compute", args.compute, "--max-batch", str(max(args.concurrency)),
                "--batch-wait-ms", str(args.window_ms), "--http-port", str(port),
                "--state-dir", str(args.state_dir or "state"),
                *(["--forced-tokens", str(forced)] if forced else [])]
            subprocess.run(command, check=True, timeout=600,
                           env={**head.env(), "VOICED_CLUSTER_TOKEN": token})
            address = f"http://127.0.0.1:{port}"
        else:
            token = os.environ.get("VOICED_CLUSTER_TOKEN", "")
        config = AsrConfig(backend="ray", ray={"address": address, "timeout_s": 300},  # type: ignore[arg-type]
                           prompt_tokens=0)
        client = RayServeClient(config, None)
        client.token = token or None
        transcriber = RemoteTranscriber(client, None, retry_s=1.0)
        transcriber.load()
        if not transcriber.up:
            raise RuntimeError(f"the deployment at {address} does not answer: "
                               f"{transcriber.last_error}")
        yield transcriber
    finally:
        if head is not None:
            head.cleanup()
