"""`asr.backend: ray`: voiced's Whisper on a Ray Serve cluster (`voiced cluster serve`).

The daemon is not a Ray driver: it talks to the deployment through Serve's HTTP proxy
(`asr.ray.address`, route `/<asr.ray.app>`), one POST per utterance, so voiced needs no
Ray of its own version, and a cluster that goes away only makes requests fail (a Ray
driver whose head stays away is ended by Ray). Batching happens on the cluster: requests
that reach a replica within its `batch_wait_ms` form one `@serve.batch` call, so
satellites that finish together share a GPU pass whichever voiced sent them.

Request (JSON): `{"audio": base64 PCM (16 kHz, 16-bit, mono), "language": code|"auto",
"prompt": text}` with `Authorization: Bearer <token>` (`asr.ray.token_env` /
`token_credential`; the deployment keeps only its SHA-256). Answer: the transcript's
fields plus `batch: {id, size}` (which batch of which replica decoded it), kept in
`batches` for status and tests. The calls block: the inference engine's threads run them
concurrently, one per utterance.
"""

from __future__ import annotations

import base64
import json
import logging
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import TYPE_CHECKING, Any

from voiced.asr.base import AsrIntents
from voiced.asr.remote import RemoteClient
from voiced.errors import AsrError
from voiced.models import Transcript

if TYPE_CHECKING:
    from voiced.config import AsrConfig

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1_000_000
"""Largest answer read from the deployment."""


class RayServeClient(RemoteClient):
    """POSTs utterances to the voiced deployment on Ray Serve."""

    kind = "ray"

    def __init__(self, config: AsrConfig, intents: AsrIntents | None) -> None:
        self.config = config
        self.url = f"{config.ray.address}/{config.ray.app}"
        self.target = self.url
        self.token = config.ray.token()
        self.intents = intents
        self.prompt = ""
        self._language: str | None = None
        self.batches: deque[tuple[str, int]] = deque(maxlen=200)
        """(batch id, batch size) of recent answers, newest last."""
        self.replicas: set[str] = set()
        """Replicas that answered (ids)."""
        self.hops: deque[float] = deque(maxlen=1000)
        """Round trip minus the replica's own time (ms): what the extra hop costs (HTTP,
        JSON and base64, Serve's proxy and router), newest last."""
        self._lock = threading.Lock()

    # ---- HTTP ------------------------------------------------------------------------
    def _request(self, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data,
                                         method="GET" if body is None else "POST")
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace")
            if exc.code in (401, 403):
                raise AsrError("cluster_token", f"{self.url} refused the token "
                               f"({exc.code}): set asr.ray.token_env or token_credential "
                               "to the token `voiced cluster serve` was given") from None
            raise AsrError("cluster_http", f"{self.url}{path}: HTTP {exc.code} "
                           f"{detail}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise AsrError("cluster_answer", f"{self.url}: answer over {MAX_ANSWER_BYTES} "
                           "bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise AsrError("cluster_answer", f"{self.url}: answer is not JSON: "
                           f"{raw[:80]!r}") from None

    def probe(self) -> None:
        """The deployment answers its `/stats` with our token."""
        self._refresh_prompt()
        stats = self._request("/stats", None, self.config.ray.connect_timeout_s
                              + self.config.ray.timeout_s)
        if not isinstance(stats, dict) or "model" not in stats:
            raise AsrError("cluster_answer", f"{self.url}/stats is not a voiced deployment")
        log.info("ray: deployment %s serves %s", self.url, stats.get("model"))

    def stats(self) -> Any:
        """The deployment's own record (one replica's): model, recent batch sizes."""
        return self._request("/stats", None, self.config.ray.timeout_s)

    def transcribe(self, pcm: bytes) -> Transcript:
        """One utterance; the cluster batches it with others arriving together."""
        body = {"audio": base64.b64encode(pcm).decode("ascii"),
                "language": self.language(), "prompt": self.prompt}
        started = time.perf_counter()
        answer = self._request("", body, self.config.ray.timeout_s)
        round_trip = (time.perf_counter() - started) * 1000
        try:
            text = str(answer["text"])
            transcript = Transcript(
                text=text, confidence=float(answer["confidence"]),
                language=str(answer["language"]), tokens=tuple(text.split()),
                no_speech_prob=float(answer["no_speech_prob"]),
                is_speech=bool(answer["is_speech"]))
            batch = answer["batch"]
            record = (str(batch["id"]), int(batch["size"]))
            server_ms = float(answer.get("server_ms", round_trip))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AsrError("cluster_answer", f"{self.url}: unexpected answer "
                           f"({exc!r})") from None
        with self._lock:
            self.batches.append(record)
            self.hops.append(round_trip - server_ms)
            self.replicas.add(record[0].rsplit("#", 1)[0])
        return transcript

    # ---- prompt ----------------------------------------------------------------------
    def language(self) -> str:
        """What the deployment is asked for: a Whisper code (`pt` for `pt-BR`) or auto
        (imports whisper's tables: called on the inference threads)."""
        if self._language is None:
            self._language = _whisper_language(self.config.language)
        return self._language

    def reload(self, intents: AsrIntents) -> None:
        """New intents: a new vocabulary prompt."""
        self.intents = intents
        self._refresh_prompt()

    def _refresh_prompt(self) -> None:
        """The same initial prompt the in-process Whisper would build (sent as text; the
        deployment encodes it with its model's tokenizer)."""
        if self.config.prompt_tokens <= 0 or self.intents is None:
            self.prompt = ""
            return
        from whisper.tokenizer import get_tokenizer

        from voiced.asr.whisper_prompt import build_prompt

        language = self.language()
        words = (self.intents.all_words() if language == "auto"
                 else self.intents.words_for(self.config.language))
        tokenizer = get_tokenizer(True, language=None if language == "auto" else language)
        self.prompt, _ = build_prompt(words, tokenizer.encode, self.config.prompt_tokens)

    def status(self) -> dict[str, Any]:
        """Recent batch sizes as the deployment reported them, and the hop's cost."""
        with self._lock:
            sizes = [size for _, size in self.batches]
            hop = round(statistics.median(self.hops), 1) if self.hops else None
            return {"replicas_seen": len(self.replicas), "recent_batch_sizes": sizes[-20:],
                    "hop_p50_ms": hop}


def _whisper_language(language: str) -> str:
    """`asr.language` as a Whisper code: itself, the part before `-`, else auto."""
    from whisper.tokenizer import LANGUAGES

    code = language.lower()
    for candidate in (code, code.split("-")[0]):
        if candidate == "auto" or candidate in LANGUAGES:
            return candidate
    log.warning("ray: asr.language %r is no Whisper language: asking for detection", language)
    return "auto"
