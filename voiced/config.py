"""voiced.yaml: pydantic models and `load_config()`.

Every model forbids unknown keys. Errors name the file, the line, the key path and what
was expected, so `voiced check-config` can print all of them at once.
"""

from __future__ import annotations

import os
import ssl
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from voiced.credentials import CredentialError, read_credential
from voiced.errors import ConfigError
from voiced.redact import plain_http_off_host, redact, secret_key
from voiced.yamlfile import read_yaml


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttTlsConfig(Strict):
    """MQTT over TLS: the broker's certificate is always verified."""

    ca_file: Path | None = None
    """CA certificate(s) the broker's certificate must chain to (None: the system's)."""
    cert_file: Path | None = None
    """This client's certificate, for brokers that require one (with key_file)."""
    key_file: Path | None = None
    check_hostname: bool = True
    """The broker's certificate must name `mqtt.host`."""

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    def context(self) -> ssl.SSLContext:
        """The SSL context both MQTT connections use (raises OSError/SSLError for a file
        that cannot be read)."""
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file else None)
        context.check_hostname = self.check_hostname
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


class MqttConfig(Strict):
    """Connection to the MQTT broker."""

    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password_env: str | None = None
    """Name of the environment variable that holds the password (never the password)."""
    password_credential: str | None = None
    """systemd credential name ($CREDENTIALS_DIRECTORY/<name>, `LoadCredential=`) holding
    the password; wins over password_env."""
    client_id: str | None = Field(None, min_length=1)
    """MQTT client id; None: `voiced-<host>-<random hex>`, new for each start. Two clients
    with one id keep disconnecting each other, so set one only if it is unique."""
    keepalive_s: int = Field(30, ge=5)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    """Reconnect waits are jittered and double from reconnect_min_s up to this; a
    connection that stayed up starts again from reconnect_min_s."""
    give_up_after_s: float = Field(0.0, ge=0)
    """Stop (exit 1, so systemd restarts voiced) after the broker was unreachable this long
    (seconds); 0: retry forever."""
    tls: MqttTlsConfig | None = None
    """MQTT over TLS (usually port 8883); None: plain TCP."""
    hermes_control: bool = True
    """Take session control on hermes/hotword/+/detected and hermes/asr/start|stopListening,
    whose site is only in the payload: whoever may publish them can open or stop a session
    on any site. False (with the broker ACL): only voiced/control/<site>/listen|stop."""

    def password(self) -> str | None:
        """The password from the systemd credential or the environment, if configured;
        ConfigError (never showing a value) when the credential cannot be read."""
        if self.password_credential:
            try:
                return read_credential(self.password_credential, key="mqtt.password_credential",
                                       what="the MQTT password")
            except CredentialError as exc:
                raise ConfigError("mqtt_password", str(exc)) from None
        return os.environ.get(self.password_env) if self.password_env else None


class BrokerConfig(Strict):
    """The embedded amqtt broker (zero-setup first run; use mosquitto in production)."""

    embedded: bool = False
    host: str = "127.0.0.1"
    """Where it listens: loopback unless set; any other address needs `password_file`."""
    password_file: Path | None = None
    """`user:argon2-hash` lines (`python -m voiced.transport.broker passwd FILE USER`):
    only these users may connect, never anonymous clients."""

    @model_validator(mode="after")
    def _closed_off_loopback(self) -> BrokerConfig:
        from voiced.transport.broker import check_exposure

        if self.embedded:
            check_exposure(self.host, self.password_file)
        return self


class SiteMode(StrEnum):
    """How a satellite's audio becomes commands."""

    ALWAYS = "always"
    """Every utterance the VAD finds is a command."""
    WAKE = "wake"
    """Only audio after hotword/detected or asr/startListening is a command."""


class SiteConfig(Strict):
    """Per-satellite settings."""

    mode: SiteMode | None = None
    area: str | None = None
    group: str | None = None
    """The room group this satellite belongs to (as listed under `sites.groups`)."""


class ArbitrationConfig(Strict):
    """Which satellite of a room group answers a command several of them hear
    (voiced.arbitration; README "Arbitration")."""

    policy: Literal["score", "loudest", "first"] = "score"
    """score: how sharply each satellite heard the speech (spectral flux, attacks, level
    against its own noise floor, VAD speech ratio, clipping); loudest: the loudest; first:
    the first to hear speech."""
    window_ms: int = Field(700, ge=0, le=5000)
    """Longest a contest waits for every candidate's evidence after a second satellite
    of the group started hearing speech (a single satellite never waits)."""
    score_ms: int = Field(600, ge=20, le=3000)
    """Speech each candidate is scored on."""
    keep_ms: int = Field(3000, ge=0, le=60_000)
    """A loser's utterance stays ready this long after its end, to answer instead if the
    winner's VAD then finds no speech."""


class SitesConfig(Strict):
    """Which satellites are served and how."""

    allow: list[str] = Field(default_factory=list)
    """Site ids allowed to stream audio; empty: every site (as Rhasspy does)."""
    default_mode: SiteMode = SiteMode.ALWAYS
    overrides: dict[str, SiteConfig] = Field(default_factory=dict)
    queue_chunks: int = Field(500, ge=10)
    """Bounded per-site ingest queue, in chunks."""
    max: int = Field(500, ge=1, le=100_000)
    """Most sites served at once; a new site beyond it is refused (error `sites_full`)."""
    idle_expiry_s: float = Field(600.0, ge=1.0)
    """A site with no message for this long (seconds), and no session or utterance open,
    is forgotten; its next message starts it afresh."""
    groups: dict[str, list[str]] = Field(default_factory=dict)
    """Room groups: satellites that can hear each other (name → site ids). Only one of a
    group answers a command they all heard; a site in no group is its own."""
    arbitration: ArbitrationConfig = Field(default_factory=ArbitrationConfig)

    @model_validator(mode="after")
    def _valid_site_ids(self) -> SitesConfig:
        from voiced.sites import SITE_ID_MAX, is_valid_id

        grouped = [site for members in self.groups.values() for site in members]
        for site in [*self.allow, *self.overrides, *grouped]:
            if not is_valid_id(site, SITE_ID_MAX):
                raise ValueError(f"{site!r} is not a valid site id: 1 to {SITE_ID_MAX} "
                                 "ASCII letters, digits and _-.:@")
        named = [*self.groups, *(o.group for o in self.overrides.values() if o.group)]
        for group in named:
            if not is_valid_id(group, SITE_ID_MAX):
                raise ValueError(f"group {group!r} is not a valid group name: 1 to "
                                 f"{SITE_ID_MAX} ASCII letters, digits and _-.:@")
        seen: dict[str, str] = {}
        for group, members in self.groups.items():
            for site in members:
                if seen.setdefault(site, group) != group:
                    raise ValueError(f"site {site!r} is in two groups ({seen[site]!r} and "
                                     f"{group!r}); a satellite belongs to one group")
        for site, override in self.overrides.items():
            if override.group and seen.get(site, override.group) != override.group:
                raise ValueError(f"site {site!r}: overrides say group {override.group!r} "
                                 f"but sites.groups puts it in {seen[site]!r}")
        return self

    def group_for(self, site: str) -> str | None:
        """The room group of `site` (None: it is its own group, never arbitrated)."""
        override = self.overrides.get(site)
        if override is not None and override.group:
            return override.group
        return next((g for g, members in self.groups.items() if site in members), None)

    def site_groups(self) -> dict[str, str]:
        """site → group, for every site configured in a group."""
        sites = {site: group for group, members in self.groups.items() for site in members}
        sites.update({site: o.group for site, o in self.overrides.items() if o.group})
        return sites

    def mode_for(self, site: str) -> SiteMode:
        """The listening mode of `site`."""
        override = self.overrides.get(site)
        return override.mode if override and override.mode else self.default_mode

    def area_for(self, site: str) -> str | None:
        """The area (room) of `site`, if configured."""
        override = self.overrides.get(site)
        return override.area if override else None

    def allowed(self, site: str) -> bool:
        """True when `site` may stream audio."""
        return not self.allow or site in self.allow


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
    """Wake-gated sessions end with `timeout` when no speech starts within this."""

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


class EntityConfig(Strict):
    """A device the official sentences can name ("turn on the desk lamp")."""

    name: str
    id: str | None = None
    """Home Assistant entity id (light.desk_lamp); defaults to the name."""
    domain: str | None = None
    area: str | None = None


class HomeAssistantImportConfig(Strict):
    """Fill the `area` and `name` lists from a Home Assistant at start-up and reload."""

    url: str
    token_env: str = "HA_TOKEN"
    """Environment variable holding a long-lived access token (never the token here)."""
    token_credential: str | None = None
    """systemd credential name ($CREDENTIALS_DIRECTORY/<name>) holding the token."""
    domains: list[str] = Field(default_factory=lambda: ["light", "switch", "fan", "cover",
                                                        "lock", "media_player", "climate"])
    timeout_s: float = Field(10.0, gt=0)
    allow_insecure_http: bool = False
    """Send the token over plain http to a host other than loopback (it crosses the
    network in clear text: prefer https)."""

    @model_validator(mode="after")
    def _token_over_https(self) -> HomeAssistantImportConfig:
        if plain_http_off_host(self.url) and not self.allow_insecure_http:
            raise ValueError(
                "url: the access token would cross the network in clear text over http; "
                "use https, or set allow_insecure_http: true")
        return self


class IntentsConfig(Strict):
    """Where intents come from."""

    paths: list[Path] = Field(default_factory=lambda: [Path("config/intents")])
    language: str = "en"
    official: bool = False
    """Also load Home Assistant's own sentences (package home-assistant-intents)."""
    areas: list[str] = Field(default_factory=list)
    """Areas (rooms) for the official sentences' {area} list."""
    floors: list[str] = Field(default_factory=list)
    zones: list[str] = Field(default_factory=lambda: ["home", "work", "school"])
    """Zones for the official sentences ("who is at work"); empty keeps HA's wildcard."""
    entities: list[EntityConfig] = Field(default_factory=list)
    """Devices for the official sentences' {name} list."""
    home_assistant: HomeAssistantImportConfig | None = None
    """Import areas and entity names from Home Assistant (they override the lists above)."""
    fuzzy: bool = True
    """Recover commands with one misheard, dropped or extra word."""
    fuzzy_min_confidence: float = Field(0.6, ge=0, le=1)
    fuzzy_budget_ms: float = Field(150.0, gt=0, le=10_000)
    """Most time (ms) the fuzzy fallback spends on one sentence; then it gives up (no
    match), logs it and counts it."""


class HandlerConfig(Strict):
    """Maps an intent to a plugin with templated options."""

    intent: str
    plugin: str
    options: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(5.0, gt=0)
    min_speaker_confidence: float | None = Field(None, ge=0, le=1)
    """Run only when the speaker was identified with at least this confidence."""


class ConfirmConfig(Strict):
    """A spoken confirmation (PIN or passphrase) a protected command waits for."""

    secret_env: str | None = None
    """Environment variable holding the secret (never the secret here)."""
    secret_credential: str | None = None
    """systemd credential name ($CREDENTIALS_DIRECTORY/<name>) holding the secret."""
    prompt: str = Field("Say the PIN.", min_length=1)
    timeout_s: float = Field(10.0, gt=0, le=120)
    """Seconds the answer may take (the session itself ends after vad.wake_timeout_s)."""

    @model_validator(mode="after")
    def _one_source(self) -> ConfirmConfig:
        if (self.secret_env is None) == (self.secret_credential is None):
            raise ValueError("give exactly one of secret_env and secret_credential")
        return self


class ProtectRule(Strict):
    """Who may make voiced act on what, from where (voiced.protect)."""

    name: str = Field(min_length=1, max_length=64)
    match: list[str] = Field(min_length=1)
    """fnmatch patterns of targets: `lock.*`, `intent:UnlockDoor`, `mqtt:garage/#`..."""
    people: list[str] | None = Field(None, min_length=1)
    """Only these voice-identified people (a claimed name never counts); None: anyone."""
    sites: list[str] | None = Field(None, min_length=1)
    """Only from these satellites; None: any."""
    min_confidence: float | None = Field(None, ge=0, le=1)
    """The voice must be identified at least this confidently."""
    allow_fuzzy: bool = False
    """Also act on a command recovered by the fuzzy fallback (default: exact only)."""
    confirm: ConfirmConfig | None = None

    @model_validator(mode="after")
    def _patterns(self) -> ProtectRule:
        for pattern in self.match:
            if not pattern.strip() or pattern != pattern.strip():
                raise ValueError(f"match: {pattern!r} is not a pattern (empty or spaced)")
        return self


class TtsConfig(Strict):
    """How spoken answers reach a satellite."""

    mode: Literal["auto", "builtin", "hermes"] = "auto"
    """builtin: synthesize here (espeak-ng or piper) and send playBytes; hermes: publish
    hermes/tts/say for an external TTS; auto: builtin when a TTS program is installed."""
    voice: str | None = None


class HistoryConfig(Strict):
    """SQLite utterance history in the state folder."""

    enabled: bool = True
    keep_audio: bool = False
    """Keep each utterance's audio in `state_dir/audio/`, linked from its history row."""
    audio_format: Literal["flac", "wav"] = "flac"
    audio_max_mb: float = Field(500, gt=0)
    """Kept audio beyond this size (oldest first) is deleted."""
    audio_max_days: float = Field(30, gt=0)
    """Kept audio older than this is deleted."""


ReviewReason = Literal["no_match", "empty", "low_confidence", "refused"]
"""Why an utterance enters the review queue on its own (voiced.review)."""


class ReviewConfig(Strict):
    """The review queue: utterances voiced did not get right, kept with their audio for a
    person to correct (voiced.review, docs/review.md). Only while `history.keep_audio` is
    on: without kept audio nothing is queued."""

    enabled: bool = True
    queue: list[ReviewReason] = Field(
        default_factory=lambda: list(get_args(ReviewReason)))
    """What enters the queue besides utterances marked wrong ("that's not what I said",
    the history's button): not understood (`no_match`), nothing heard in speech (`empty`),
    heard with low confidence (`low_confidence`, recognized or not), refused commands."""
    min_confidence: float = Field(0.6, ge=0, le=1)
    """A transcript below this confidence counts as `low_confidence`."""
    max_items: int = Field(500, ge=1, le=1_000_000)
    """Pending items kept; beyond this the oldest pending items are dropped."""
    max_days: float = Field(30, gt=0)
    """Pending (and discarded) items older than this are dropped, with their audio."""
    max_corrected: int = Field(5000, ge=1, le=10_000_000)
    """Corrected utterances kept as training data; beyond this the oldest are dropped."""
    wrong_within_s: float = Field(120, gt=0)
    """"That's not what I said" marks the site's previous command if it was this recent."""
    alias_after: int = Field(2, ge=1, le=100)
    """A word misheard the same way in this many corrections is offered as an alias."""


class HttpConfig(Strict):
    """The HTTP API, live events, /metrics and the web page (voiced/http/)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    """Loopback by default; any other address needs a token (`token_env`/`token_credential`)."""
    port: int = Field(8330, ge=0, le=65535)
    """0: any free port (tests); the page's URL is logged at start-up."""
    token_env: str | None = "VOICED_HTTP_TOKEN"
    """Environment variable holding the API token (never the token here)."""
    token_credential: str | None = None
    """systemd credential name ($CREDENTIALS_DIRECTORY/<name>) holding the token."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call the API from other pages (empty: CORS off)."""
    max_upload_mb: float = Field(20.0, gt=0)
    """Largest request body (audio uploads)."""
    max_audio_s: float = Field(300.0, gt=0)
    """Longest audio accepted per uploaded file, after decoding (seconds)."""


class Config(Strict):
    """The whole of voiced.yaml."""

    mqtt: MqttConfig = MqttConfig()
    broker: BrokerConfig = BrokerConfig()
    state_dir: Path = Path("state")
    sites: SitesConfig = SitesConfig()
    vad: VadConfig = VadConfig()
    asr: AsrConfig = AsrConfig()
    speakers: SpeakersConfig = SpeakersConfig()
    intents: IntentsConfig = IntentsConfig()
    handlers: list[HandlerConfig] = Field(default_factory=list)
    protect: list[ProtectRule] = Field(default_factory=list)
    """Protection rules on what handlers act on (voiced.protect, docs/security.md)."""
    tts: TtsConfig = TtsConfig()
    history: HistoryConfig = HistoryConfig()
    review: ReviewConfig = ReviewConfig()
    """The review queue and what corrections teach (voiced.review)."""
    http: HttpConfig = HttpConfig()
    shutdown_grace_s: float = Field(5.0, ge=0)
    """On SIGTERM, utterances in flight get this long to finish."""
    error_rate_limit_s: float = Field(2.0, ge=0)
    """At most one hermes/error message per site and reason in this interval."""
    max_utterances_in_flight: int = Field(64, ge=1)
    """Utterances being recognized and handled at once; more are refused (`overloaded`)."""

    @field_validator("protect")
    @classmethod
    def _protect(cls, rules: list[ProtectRule], info: ValidationInfo) -> list[ProtectRule]:
        names = [r.name for r in rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names must be unique: {', '.join(twice)}")
        speakers = info.data.get("speakers")
        for i, rule in enumerate(rules):
            needs_voice = rule.people is not None or rule.min_confidence is not None
            if needs_voice and speakers is not None and speakers.backend == "none":
                raise ValueError(f"[{i}] {rule.name!r}: people/min_confidence need a voice "
                                 "identified, but speakers.backend is none")
        return rules


def _key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Map each key path in a YAML document to its 1-based line."""
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def config_errors(data: Any, source: str, text: str = "") -> list[str]:
    """Validate `data`; return one human-readable line per problem (empty when valid)."""
    try:
        Config.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(text) if text else {}
        out = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            # the longest prefix of the path that exists in the file gives the line
            line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), 0)
            where = f"{source}:{line}" if line else source
            key = ".".join(str(p) for p in loc) or "(top level)"
            got = err.get("input")
            got_s = "" if isinstance(got, dict | list) else f" (got {got!r})"
            if got_s and (secret_key(key) or redact(got_s) != got_s):
                got_s = " (the value is not shown: it may be a secret)"
            out.append(f"{where}: {key}: {err['msg']}{got_s}")
        return out
    return []


def load_config(path: Path | None) -> Config:
    """Read and validate voiced.yaml; `None` gives the defaults.

    Raises ConfigError listing every problem with file, line and key.
    """
    if path is None:
        return Config()
    data, text = read_yaml(path, ConfigError, "config_syntax")
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError("config_syntax", f"{path}: expected a mapping at the top level")
    problems = config_errors(data, str(path), text)
    if problems:
        raise ConfigError("config_invalid", "\n".join(problems))
    config = Config.model_validate(data)
    # relative paths in the file are relative to the file, not the working directory
    base = path.parent
    paths = [p if p.is_absolute() else base / p for p in config.intents.paths]
    state = config.state_dir if config.state_dir.is_absolute() else base / config.state_dir
    update: dict[str, Any] = {
        "intents": config.intents.model_copy(update={"paths": paths}),
        "state_dir": state,
    }
    tls = config.mqtt.tls
    if tls is not None:
        files = {k: (v if v is None or v.is_absolute() else base / v)
                 for k, v in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file),
                              ("key_file", tls.key_file))}
        update["mqtt"] = config.mqtt.model_copy(update={"tls": tls.model_copy(update=files)})
    return config.model_copy(update=update)
