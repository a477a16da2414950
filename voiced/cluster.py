"""voiced's Whisper as a Ray Serve deployment (`voiced cluster serve`; docs/cluster.md).

`AsrDeployment` is one replica: the same `WhisperTranscriber` as the daemon's, loaded on
the replica's GPU (or CPU), behind Serve's HTTP proxy at `/<app>`. Requests that reach a
replica within `batch_wait_ms` of each other (up to `max_batch`) become one
`@serve.batch` call and one batched encoder/decoder pass, whichever voiced daemon sent
them; each answer names its batch (`batch: {id: "<replica>#<n>", size}`), and `GET
/<app>/stats` returns the replica's recent batch sizes. Requests carry a bearer token whose
SHA-256 the deployment was given (the token itself is never stored in Ray).

`deploy` connects to a running cluster as a short-lived Ray driver and starts the
application; `LocalRayHead` starts a single-machine head on loopback (tests, benchmarks).
Ray is imported inside functions: it is the optional extra `voiced[cluster]`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8_000_000
"""Largest request body (about 3 minutes of base64 audio)."""
MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """What one deployment is (plain data: Ray stores it with the application)."""

    model: str
    """Whisper model name or checkpoint path (the same on every node)."""
    state_dir: str = "state"
    """Model cache folder on each node (`<state_dir>/models/whisper`)."""
    device: str = "auto"
    compute: str = "fp16"
    max_batch: int = 16
    batch_wait_ms: float = 30.0
    max_tokens: int = 128
    encoder_window_s: int = 30
    no_speech_threshold: float = 0.6
    token_sha256: str | None = None
    """Hex SHA-256 of the bearer token requests must carry (None: no token)."""
    forced_tokens: int | None = None
    """Benchmarks: decode exactly this many tokens (as `voiced bench asr --tokens`)."""


def token_digest(token: str) -> str:
    """The SHA-256 a deployment keeps of its token."""
    return hashlib.sha256(token.encode()).hexdigest()


class AsrDeployment:
    """One Serve replica of voiced's Whisper (wrapped by `serve.deployment` in `deploy`)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from ray import serve

        from voiced.asr.whisper import WhisperTranscriber
        from voiced.config import AsrConfig

        self.settings = ServeSettings(**settings)
        s = self.settings
        config = AsrConfig(backend="whisper", model=s.model, device=s.device, compute=s.compute,  # type: ignore[arg-type]
                           max_batch=s.max_batch, language="auto", prompt_tokens=0,
                           max_tokens=s.max_tokens, encoder_window_s=s.encoder_window_s,
                           no_speech_threshold=s.no_speech_threshold)
        self.transcriber = WhisperTranscriber(config, None, Path(s.state_dir))
        self.transcriber.forced_tokens = s.forced_tokens
        self.transcriber.load()
        context = serve.get_replica_context()
        self.replica = str(getattr(getattr(context, "replica_id", None), "unique_id", "")
                           or getattr(context, "replica_tag", "replica"))
        self.batches = 0
        self.sizes: deque[int] = deque(maxlen=200)
        self._batched = serve.batch(max_batch_size=s.max_batch,
                                    batch_wait_timeout_s=s.batch_wait_ms / 1000)(self._run)

    def _authorized(self, header: str) -> bool:
        want = self.settings.token_sha256
        if want is None:
            return True
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token_digest(token), want)

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if not self._authorized(request.headers.get("authorization", "")):
            return JSONResponse({"error": "token_invalid"}, status_code=401)
        if request.method == "GET" and request.url.path.rstrip("/").endswith("/stats"):
            return JSONResponse(self.stats())
        if request.method != "POST":
            return JSONResponse({"error": "method"}, status_code=405)
        started = time.perf_counter()
        body = await request.body()
        try:
            item = self._parse(body)
        except ValueError as exc:
            return JSONResponse({"error": "request_invalid", "message": str(exc)[:300]},
                                status_code=400)
        answer = await self._batched(item)
        # time spent in this replica (parsing, batch wait, decoding): the client subtracts
        # it from its round trip to know what the hop itself costs
        return JSONResponse({**answer, "server_ms": (time.perf_counter() - started) * 1000})

    def _parse(self, body: bytes) -> tuple[bytes, str, str]:
        import json

        from whisper.tokenizer import LANGUAGES

        if len(body) > MAX_REQUEST_BYTES:
            raise ValueError(f"request over {MAX_REQUEST_BYTES} bytes")
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        try:
            pcm = base64.b64decode(data.get("audio", ""), validate=True)
        except (binascii.Error, TypeError) as exc:
            raise ValueError(f"audio is not base64: {exc}") from None
        if not pcm or len(pcm) % 2:
            raise ValueError("audio is empty or not 16-bit samples")
        language = str(data.get("language") or "auto").lower()
        if language != "auto" and language not in LANGUAGES:
            raise ValueError(f"language {language[:20]!r} is not a Whisper language")
        prompt = data.get("prompt") or ""
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt must be text of at most {MAX_PROMPT_CHARS} characters")
        return pcm, language, prompt

    async def _run(self, items: list[tuple[bytes, str, str]]) -> list[dict[str, Any]]:
        self.batches += 1
        batch = {"id": f"{self.replica}#{self.batches}", "size": len(items)}
        self.sizes.append(len(items))
        results = await asyncio.to_thread(self._decode, items)
        return [{**r, "batch": batch} for r in results]

    def _decode(self, items: list[tuple[bytes, str, str]]) -> list[dict[str, Any]]:
        """Decode the batch; utterances with another language or prompt form their own
        pass (one daemon sends one of each, so normally there is one group)."""
        whisper = self.transcriber
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (_, language, prompt) in enumerate(items):
            groups.setdefault((language, prompt), []).append(i)
        out: list[dict[str, Any]] = [{} for _ in items]
        for (language, prompt), indexes in groups.items():
            multilingual = whisper.model.is_multilingual
            whisper.language = (language if language != "auto" else None) if multilingual \
                else "en"
            whisper.prompt_tokens = (whisper._tokenizer.encode(" " + prompt)[-223:]
                                     if prompt else [])
            transcripts = whisper.transcribe_batch([items[i][0] for i in indexes])
            for i, t in zip(indexes, transcripts, strict=True):
                out[i] = {"text": t.text, "confidence": t.confidence, "language": t.language,
                          "no_speech_prob": t.no_speech_prob, "is_speech": t.is_speech}
        return out

    def stats(self) -> dict[str, Any]:
        """This replica: its model and recent batch sizes."""
        return {"replica": self.replica, "model": self.settings.model,
                "device": self.transcriber.device, "batches": self.batches,
                "recent_batch_sizes": list(self.sizes)[-50:],
                "max_batch": self.settings.max_batch,
                "batch_wait_ms": self.settings.batch_wait_ms}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where and how many replicas run, and where Serve's HTTP proxies listen."""

    address: str | None
    """Ray address HOST:PORT (None: RAY_ADDRESS or the local cluster)."""
    app: str = "voiced-asr"
    replicas: int = 1
    gpus: float = 0.0
    """GPUs per replica (1: one replica per GPU)."""
    cpus: float = 1.0
    http_host: str = "127.0.0.1"
    http_port: int = 8000


def deploy(settings: ServeSettings, placement: Placement) -> str:
    """Start (or update) the application on the cluster; returns its URL. Waits until
    every replica loaded its model."""
    import ray
    from ray import serve

    ray.init(address=placement.address or "auto", logging_level=logging.WARNING,
             log_to_driver=False)
    try:
        serve.start(http_options={"host": placement.http_host, "port": placement.http_port})
        wrap: Any = serve.deployment
        deployment = wrap(AsrDeployment, name="VoicedAsr").options(
            num_replicas=placement.replicas,
            ray_actor_options={"num_cpus": placement.cpus, "num_gpus": placement.gpus},
            max_ongoing_requests=max(8, 4 * settings.max_batch),
            max_queued_requests=max(64, 16 * settings.max_batch),
        )
        serve.run(deployment.bind(asdict(settings)), name=placement.app,
                  route_prefix=f"/{placement.app}")
    finally:
        ray.shutdown()
    return f"http://{placement.http_host}:{placement.http_port}/{placement.app}"


def delete(address: str | None, app: str) -> None:
    """Remove the application from the cluster."""
    import ray
    from ray import serve

    ray.init(address=address or "auto", logging_level=logging.WARNING, log_to_driver=False)
    try:
        serve.delete(app)
    finally:
        ray.shutdown()


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRayHead:
    """A one-machine Ray head on loopback (`ray start --head --block` in its own process
    group), for tests and benchmarks. Every Ray process it starts binds to 127.0.0.1:
    Ray replaces a loopback `--node-ip-address` with the machine's routable address
    unless `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (its single-machine mode) is set."""

    def __init__(self, cpus: int = 2, token: str | None = None) -> None:
        self.cpus = cpus
        self.token = token
        self.dir = Path(tempfile.mkdtemp(prefix="vray", dir="/tmp"))  # short: socket paths
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment a driver of this head needs (loopback mode, the token)."""
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
               "RAY_USAGE_STATS_ENABLED": "0"}
        if self.token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        return env

    def start(self, timeout: float = 120.0) -> None:
        """Start the head and wait until it accepts drivers."""
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        ports = [free_port() for _ in range(2)]
        log_file = self.dir / "head.log"
        with open(log_file, "ab") as out:
            self.proc = subprocess.Popen(
                [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                 "--port", str(self.port), "--num-cpus", str(self.cpus), "--num-gpus", "0",
                 "--include-dashboard", "false", "--disable-usage-stats",
                 "--temp-dir", str(self.dir), "--ray-client-server-port", str(ports[0]),
                 "--dashboard-agent-listen-port", str(ports[1]),
                 "--object-store-memory", str(100 * 1024 * 1024)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while b"Ray runtime started" not in log_file.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = log_file.read_bytes()[-2000:].decode("utf-8", "replace")
                self.kill()
                raise RuntimeError(f"ray start failed:\n{tail}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL every process of the head (a crash, as a test wants)."""
        self._signal(signal.SIGKILL, 10.0)

    def stop(self) -> None:
        """SIGTERM the head's processes, SIGKILL what is left after 3 s."""
        if self._signal(signal.SIGTERM, 3.0):
            self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: int, wait: float) -> bool:
        """Signal the process group and the processes that name our folder; True when
        some are still alive after `wait`."""
        if self.proc is None:
            return False
        pids = set(_pids_naming(str(self.dir)))
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and not _pids_naming(str(self.dir)):
                self.proc = None
                return False
            time.sleep(0.1)
        return True

    def cleanup(self) -> None:
        """Stop, then remove the folder."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pids_naming(text: str) -> list[int]:
    """Processes whose command line contains `text` (our unique temp folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
