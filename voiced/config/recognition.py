"""voiced.yaml: hearing a command (`vad`, `asr`, `speakers`)."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from voiced.config.base import Strict
from voiced.credentials import CredentialError, read_credential
from voiced.errors import ConfigError

VAD_PRESETS: dict[str, int] = {"fast": 300, "normal": 500, "patient": 900}
"""End-of-speech silence (ms) for each endpointing preset."""


class VadConfig(Strict):
    """Voice activity detection and endpointing."""

    engine: Literal["webrtc", "silero"] = "webrtc"
    """Speech/non-speech per frame. webrtc: webrtcvad (`aggressiveness`). silero:
    silero-vad's network, its model from its wheel (`silero_threshold`; voiced.vad.silero,
    docs/accuracy.md)."""
    aggressiveness: int = Field(2, ge=0, le=3)
    """webrtc: 0 (least) to 3 (most eager to call a frame non-speech)."""
    silero_threshold: float = Field(0.5, gt=0, lt=1)
    """silero: the speech probability that starts speech (it ends under 0.15 less)."""
    preset: Literal["fast", "normal", "patient"] = "normal"
    end_silence_ms: int | None = Field(None, ge=100, le=5000)
    """Silence that ends an utterance; default from `preset`. With `endpoint: adaptive`
    the longest wait (after a command that is not complete)."""
    endpoint: Literal["fixed", "adaptive"] = "fixed"
    """fixed: every utterance ends after the silence above. adaptive: the recognizer's
    hypothesis decides: a whole command ends after `min_silence_ms`, one a longer
    sentence could add a value to ("... ten minutes" → "... and five seconds") halfway
    to the silence above, the start of a command ("set the lights to") after
    `max_silence_ms`, anything else after the silence above (docs/endpoint.md)."""
    min_silence_ms: int = Field(200, ge=60, le=2000)
    """Adaptive endpointing: the silence that ends a whole command."""
    max_silence_ms: int = Field(1000, ge=100, le=5000)
    """Adaptive endpointing: the silence that ends the start of a command (a pause inside
    a command is not its end); never less than the end-of-speech silence."""
    pre_roll_ms: int = Field(300, ge=0, le=2000)
    min_speech_ms: int = Field(200, ge=0)
    start_speech_ms: int = Field(60, ge=20)
    """Speech needed within the start window to declare a start."""
    max_utterance_ms: int = Field(10_000, ge=1000)
    wake_timeout_s: float = Field(8.0, gt=0)
    """Wake-gated sessions end with `timeout` when no speech starts within this much of
    the site's audio (voiced.sessions.SiteWorker._wake_timed_out)."""

    @property
    def silence_ms(self) -> int:
        """The effective end-of-speech silence."""
        return self.end_silence_ms if self.end_silence_ms is not None else VAD_PRESETS[self.preset]

    @property
    def continuable_silence_ms(self) -> int:
        """Adaptive endpointing: the silence that ends a whole command a longer sentence
        could continue (halfway between `min_silence_ms` and the full silence)."""
        return (min(self.min_silence_ms, self.silence_ms) + self.silence_ms) // 2

    @property
    def prefix_silence_ms(self) -> int:
        """Adaptive endpointing: the silence that ends the start of a command."""
        return max(self.max_silence_ms, self.silence_ms)

    def adaptive_silence_ms(self, completion: str | None) -> int | None:
        """Adaptive endpointing: the silence that ends an utterance whose hypothesis
        stands at `completion` (a `voiced.asr.base.Completion`); None: the end-of-speech
        silence (no hypothesis, or not the start of any command)."""
        waits = {"complete": self.min_silence_ms, "continuable": self.continuable_silence_ms,
                 "prefix": self.prefix_silence_ms}
        return waits.get(str(completion)) if completion is not None else None


class WyomingAsrConfig(Strict):
    """`asr.backend: wyoming`: a Wyoming speech-to-text server (voiced.asr.wyoming)."""

    uri: str = "tcp://127.0.0.1:10300"
    """tcp://HOST:PORT or unix:///path of the server."""
    model: str | None = None
    """Model (program) name to ask the server for; None: the server's first."""
    connect_timeout_s: float = Field(2.0, gt=0, le=60)
    timeout_s: float = Field(15.0, gt=0, le=300)
    """Longest wait for the transcript after the end of the audio."""

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        from urllib.parse import urlparse

        parsed = urlparse(value)
        if parsed.scheme == "tcp" and parsed.hostname and parsed.port:
            return value
        if parsed.scheme == "unix" and parsed.path:
            return value
        raise ValueError(f"expected tcp://HOST:PORT or unix:///PATH, got {value[:80]!r}")


class RayAsrConfig(Strict):
    """`asr.backend: ray`: voiced's Whisper on a Ray Serve cluster (voiced.asr.ray_backend,
    deployed by `voiced cluster serve`; docs/cluster.md)."""

    address: str = "http://127.0.0.1:8000"
    """The Ray Serve HTTP address (any node's proxy) the deployment answers on."""
    app: str = Field("voiced-asr", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """The Serve application (and route /<app>) `voiced cluster serve` deployed."""
    token_env: str | None = "VOICED_CLUSTER_TOKEN"
    """Environment variable holding the deployment's bearer token (never the token here)."""
    token_credential: str | None = None
    """systemd credential name ($CREDENTIALS_DIRECTORY/<name>) holding the token."""
    connect_timeout_s: float = Field(2.0, gt=0, le=60)
    timeout_s: float = Field(20.0, gt=0, le=300)
    """Longest wait for one transcript (queueing and batching on the cluster included)."""

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        from urllib.parse import urlparse

        parsed = urlparse(value)
        if parsed.scheme in ("http", "https") and parsed.hostname:
            return value.rstrip("/")
        raise ValueError(f"expected http(s)://HOST:PORT, got {value[:80]!r}")

    def token(self) -> str | None:
        """The bearer token from the systemd credential or the environment, if any."""
        if self.token_credential:
            try:
                return read_credential(self.token_credential, key="asr.ray.token_credential",
                                       what="the cluster token")
            except CredentialError as exc:
                raise ConfigError("cluster_token", str(exc)) from None
        return (os.environ.get(self.token_env) or None) if self.token_env else None


class AsrConfig(Strict):
    """Speech recognition."""

    backend: Literal["pocketsphinx", "whisper", "wyoming", "ray"] = "pocketsphinx"
    wyoming: WyomingAsrConfig = WyomingAsrConfig()
    ray: RayAsrConfig = RayAsrConfig()
    fallback: Literal["none", "pocketsphinx", "whisper"] = "pocketsphinx"
    """wyoming, ray: the recognizer used here while the remote one is unreachable or fails
    (none: such utterances end in an error)."""
    remote_retry_s: float = Field(5.0, gt=0, le=3600)
    """wyoming, ray: after a failure, utterances go to the fallback for this long before the
    remote one is tried again."""
    mode: Literal["grammar", "open"] = "grammar"
    """pocketsphinx: decode constrained by the intents' grammar, or open vocabulary."""
    search: Literal["jsgf", "automaton"] = "jsgf"
    """pocketsphinx grammar mode: the automaton searched. jsgf: the one pocketsphinx
    compiles from the grammar; automaton: the same sentences and weights as one minimal
    deterministic automaton (voiced.asr.fsg), a third of the decoding time, but more
    everyday speech accepted at the same `min_confidence` (docs/accuracy.md)."""
    processes: int = Field(0, ge=0, le=64)
    """pocketsphinx: worker processes for decoding (0: one per CPU core; 1: in-process).
    Its binding keeps the GIL while decoding, so processes are what use several cores."""
    language: str = "en"
    """whisper: a language code, or auto (detected per utterance)."""
    min_confidence: float = Field(0.5, ge=0, le=1)
    """Transcripts below this are treated as not recognized."""
    early_end_confidence: float = Field(0.0, ge=0, le=1)
    """pocketsphinx, `vad.endpoint: adaptive`: a whole command ends before the usual
    silence only when its partial hypothesis fits the audio at least this well (the path
    confidence); below, it waits the end-of-speech silence and is judged whole. 0 (default):
    every whole command ends early. 0.85 keeps the fixed endpoint's false accepts and
    costs latency (docs/endpoint.md)."""
    confidence: Literal["path", "words"] = "path"
    """pocketsphinx grammar mode: how confidence is scored. path: the decoded path's
    acoustic fit per word frame; words: a model of the fit of the words that carry the
    meaning, skip words left out (voiced.asr.rejection; fewer false accepts, see
    docs/accuracy.md)."""
    model: str | None = None
    """whisper: a model name (downloaded into the state folder) or a checkpoint path."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    compute: Literal["fp16", "fp32"] = "fp16"
    batch_window_ms: float = Field(30.0, ge=0, le=1000)
    """Utterances ending within this window on different sites decode as one batch."""
    max_batch: int = Field(16, ge=1)
    no_speech_threshold: float = Field(0.6, ge=0, le=1)
    """whisper: utterances more likely than this to be no speech are dropped."""
    max_tokens: int = Field(128, ge=1, le=224)
    """whisper: longest transcript decoded, in tokens."""
    prompt_tokens: int = Field(96, ge=0, le=223)
    """whisper: initial prompt built from the intents' vocabulary (0: none)."""
    partial_interval_ms: float = Field(700, ge=100)
    """whisper: new audio needed before another partial transcript."""
    encoder_window_s: int = Field(30, ge=2, le=30)
    """whisper: seconds of audio the encoder sees. 30 is Whisper's own window; a shorter
    one (at least vad.max_utterance_ms) cuts the encoder's work in proportion, but the
    model was trained on 30 s, so check accuracy with your model before relying on it."""


class SpeakersConfig(Strict):
    """Speaker identification, and per-person variables for handler templates.

    Keys whose value is a mapping (other than the settings below) are people:
    `speakers: {alice: {playlist: "Alice's mix"}}` is the same as
    `speakers: {people: {alice: {playlist: "Alice's mix"}}}`.
    """

    backend: Literal["none", "resemblyzer", "speechbrain"] = "none"
    model: str | None = None
    device: Literal["auto", "cuda", "cpu"] = "auto"
    threshold: float | None = Field(None, ge=-1, le=1)
    margin: float = Field(0.05, ge=0, le=1)
    voice_enrollment: bool = False
    """Let a new person enroll by saying "learn my voice as NAME" on a satellite."""
    voice_enrollment_add: bool = True
    """Let an enrolled person add samples by voice (each one verified as that person)."""
    adapt: bool = False
    """Refine a person's profile with confidently identified utterances (bounded)."""
    adapt_keep: int = Field(20, ge=1)
    adapt_extra: float = Field(0.1, ge=0, le=1)
    """Score above the threshold an utterance needs to be used for adaptation."""
    batch_window_ms: float = Field(30.0, ge=0, le=1000)
    max_batch: int = Field(16, ge=1)
    people: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_people(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields)
        people = dict(data.get("people") or {})
        rest = {}
        for key, value in data.items():
            if key not in known and isinstance(value, dict):
                people[key] = value
            else:
                rest[key] = value
        rest["people"] = people
        return rest
