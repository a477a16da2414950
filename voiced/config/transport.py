"""voiced.yaml: how satellites reach voiced (`mqtt`, `broker`, `sites`)."""

from __future__ import annotations

import os
import ssl
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from voiced.config.base import Strict
from voiced.credentials import CredentialError, read_credential
from voiced.errors import ConfigError


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
