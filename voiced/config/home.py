"""voiced.yaml: what commands do and what is kept (`intents`, `handlers`, `confirm`,
`protect`, `tts`, `history`, `review`, `http`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from voiced.config.base import Strict
from voiced.redact import plain_http_off_host


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
