"""Protection rules: what a voice may make voiced act on, from where, with what confirmation.

A rule (voiced.yaml `protect:`) applies to what a command would act on, whatever intent
reached it. The router computes each command's *targets* once its handlers' options are
rendered, before anything runs:

* `intent:<Name>`;
* every slot value that is an entity id (`lock.front_door`); a configured entity without an
  id but with a domain counts as `<domain>.<name as id>`; a `domain` slot (a command on a
  whole domain, such as Home Assistant's "open the garage door") counts as `<domain>.*`,
  which every rule protecting anything of that domain catches;
* what each handler's plugin says it acts on (an optional `targets(options)` on the plugin
  class): `service:light.turn_on` and entity ids, `mqtt:<topic>`, `http:<url>`,
  `command:<program>`.

Rule patterns are shell-style (`fnmatch`, case-sensitive). Every matching rule must pass;
its checks, in order: the site, an exact (not fuzzy) match, the voice-identified person and
confidence (a claimed name never counts), and a spoken confirmation. A confirmation is a
follow-up turn whose words must be the rule's secret (a PIN or a passphrase); it is kept
here, per site, until it is answered or expires. What is said in that turn is compared with
`hmac.compare_digest` and never logged, published or stored (the pipeline replaces it with
`PLACEHOLDER`).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from voiced.config import Config, ProtectRule
from voiced.credentials import CredentialError, read_credential
from voiced.errors import ConfigError
from voiced.models import IntentResult, SpeakerMatch

log = logging.getLogger(__name__)

CONFIRM_MARK = "voiced-confirm"
CONFIRM_TURN = "confirm"
"""`Utterance.turn` of the answer to a confirmation prompt (voiced's own follow-up; the
session's customData says CONFIRM_MARK for Hermes clients, but is never what decides)."""
"""customData of a confirmation turn (the session continued to hear the secret)."""
CONFIRM_INTENT = "VoicedConfirmation"
"""The internal intent whose sentences are spoken digits: it puts PINs into the embedded
recognizer's grammar. It is never handled: outside a confirmation turn it is not a command."""
PLACEHOLDER = "[confirmation]"
"""What events, the Hermes wire and the history show instead of a confirmation's words."""
PIN_DIGITS = (4, 8)
"""Shortest and longest PIN (the grammar holds digit sequences of these lengths)."""
MIN_PASSPHRASE_WORDS = 2
MAX_PENDING = 256
"""Confirmations waiting at once (one per site); beyond it the oldest is dropped."""
CODE_PROTECTED = "protected"
CODE_FAILED = "confirmation_failed"
CODE_EXPIRED = "confirmation_expired"

_DIGITS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3",
           "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_SPOKEN_DIGITS = ("zero", "oh", "one", "two", "three", "four", "five", "six", "seven",
                  "eight", "nine")
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d")
ENTITY_ID = re.compile(r"[a-z0-9_]+\.[a-z0-9_]+")
_DOMAIN = re.compile(r"[a-z0-9_]+")


def normalise(text: str) -> str:
    """Words in lower case without punctuation, digits and digit words as one number:
    "One, two 3 four." and "1234" both become "1234"; "Open Sesame!" "open sesame"."""
    out: list[str] = []
    for token in _TOKEN.findall(text.lower()):
        digit = _DIGITS.get(token, token if token.isdigit() else None)
        if digit is not None and out and out[-1].isdigit():
            out[-1] += digit
        else:
            out.append(digit if digit is not None else token)
    return " ".join(out)


def _same(said: str, secret: str) -> bool:
    return hmac.compare_digest(said.encode(), secret.encode())


def confirmation_intents() -> dict[str, Any]:
    """A hassil document with the internal `CONFIRM_INTENT`: 4 to 8 spoken digits."""
    low, high = PIN_DIGITS
    sentence = " ".join(["<voiced_digit>"] * low + ["[<voiced_digit>]"] * (high - low))
    return {"intents": {CONFIRM_INTENT: {"data": [{"sentences": [sentence]}]}},
            "expansion_rules": {"voiced_digit": f"({'|'.join(_SPOKEN_DIGITS)})"}}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def matches(pattern: str, target: str) -> bool:
    """Does a rule pattern catch a target? A domain-wide target (`cover.*`) is caught by
    every entity pattern of that domain (`cover.garage_*`)."""
    if target.endswith(".*") and ":" not in target and "." in pattern and ":" not in pattern:
        return fnmatchcase(target[:-2], pattern.split(".", 1)[0])
    return fnmatchcase(target, pattern)


def plugin_targets(plugin: Any, options: Any) -> list[str] | None:
    """What a plugin says a request with these rendered options acts on (its optional
    `targets(options)`); None, logged, when it fails to say (the request must not run)."""
    method: Callable[[Any], Iterable[str]] | None = getattr(plugin, "targets", None)
    try:
        return [str(t) for t in method(options)] if method is not None else []
    except Exception:
        log.exception("plugin %s: targets() failed", getattr(plugin, "name", plugin))
        return None


def url_target(url: str) -> str:
    """`http:<scheme>://<host>[:port]<path>`: no user, password, query or fragment. Dot
    segments (`..`, `.`, their `%2E` spellings) are resolved, as a client or server that
    normalises the path would, so `/public/../admin` is caught by a rule on `/admin*`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"http:{parts.scheme}://{host}{port}{_without_dot_segments(parts.path)}"


def _without_dot_segments(path: str) -> str:
    segments = path.split("/")
    kept: list[str] = []
    for i, segment in enumerate(segments):
        dots = re.sub("%2e", ".", segment, flags=re.IGNORECASE)
        last = i == len(segments) - 1
        if dots == ".":
            if last:
                kept.append("")
        elif dots == "..":
            if len(kept) > 1:
                kept.pop()
            if last:
                kept.append("")
        else:
            kept.append(segment)
    return "/".join(kept)


def read_secret(rule: ProtectRule) -> str:
    """The rule's confirmation secret, normalised, from its environment variable or
    systemd credential; ConfigError (never showing the value) when missing or weak."""
    confirm = rule.confirm
    assert confirm is not None
    where = f"protect rule {rule.name!r}"
    if confirm.secret_credential is not None:
        try:
            raw = read_credential(confirm.secret_credential, key=f"{where}: secret_credential",
                                  what="the secret")
        except CredentialError as exc:
            raise ConfigError("protect_secret", f"{where}: {exc}") from None
    else:
        raw = os.environ.get(confirm.secret_env or "", "")
        if not raw.strip():
            raise ConfigError("protect_secret", f"{where}: the environment variable "
                              f"{confirm.secret_env} holds no secret")
    secret = normalise(raw)
    if secret.isdigit():
        if not PIN_DIGITS[0] <= len(secret) <= PIN_DIGITS[1]:
            raise ConfigError("protect_secret", f"{where}: a PIN must have {PIN_DIGITS[0]} "
                              f"to {PIN_DIGITS[1]} digits (the value is not shown)")
    elif len(secret.split()) < MIN_PASSPHRASE_WORDS:
        raise ConfigError("protect_secret", f"{where}: the secret must be a PIN of "
                          f"{PIN_DIGITS[0]}-{PIN_DIGITS[1]} digits or a passphrase of at least "
                          f"{MIN_PASSPHRASE_WORDS} words (the value is not shown)")
    return secret


@dataclass(frozen=True, slots=True)
class Verdict:
    """The rules' answer for one command: allowed, refused, or waiting for a secret."""

    code: str | None = None
    """None: nothing refuses; else `protected`, `confirmation_failed`, ..."""
    message: str = ""
    """Which rule refused and why (never who may, never a secret)."""
    confirm: tuple[str, ...] = ()
    """Rules whose secret must be spoken before the command runs."""
    prompt: str = ""

    @property
    def allowed(self) -> bool:
        """True when the command may run now."""
        return self.code is None and not self.confirm


ALLOWED = Verdict()


@dataclass(frozen=True, slots=True)
class Pending:
    """A command waiting for its confirmation on one site."""

    site: str
    session_id: str
    deadline: float
    """Monotonic seconds."""
    rules: tuple[str, ...]
    payload: Any
    """What runs when the confirmation passes (the router's prepared handlers)."""


class Protector:
    """The configured rules, their secrets, and the confirmations waiting per site."""

    def __init__(self, rules: Sequence[ProtectRule], secrets: Mapping[str, str] | None = None,
                 entity_domains: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = {rule.name: rule for rule in rules}
        self._secrets = dict(secrets or {})
        missing = [r.name for r in rules if r.confirm is not None and r.name not in self._secrets]
        if missing:
            raise ConfigError("protect_secret", f"protect rules without a secret: {missing}")
        self._entity_domains = dict(entity_domains or {})
        self._clock = clock
        self._pending: dict[str, Pending] = {}

    @classmethod
    def from_config(cls, config: Config) -> Protector:
        """The rules of voiced.yaml with their secrets read (ConfigError when one is
        missing, weak, or a passphrase the configured recognizer can never hear)."""
        secrets: dict[str, str] = {}
        grammar = config.asr.backend == "pocketsphinx" and config.asr.mode == "grammar"
        for rule in config.protect:
            if rule.confirm is None:
                continue
            secrets[rule.name] = read_secret(rule)
            if grammar and not secrets[rule.name].isdigit():
                raise ConfigError("protect_secret", f"protect rule {rule.name!r}: the "
                                  "embedded recognizer in grammar mode hears only PINs "
                                  "(spoken digits), never a passphrase; use a PIN, "
                                  "asr.mode: open, or Whisper")
        domains = {e.name: e.domain for e in config.intents.entities
                   if e.id is None and e.domain}
        return cls(config.protect, secrets, domains)

    # ---- targets and the check --------------------------------------------------------
    def targets(self, intent: IntentResult) -> list[str]:
        """The intent's own targets: its name and the entities its slots name."""
        found = [f"intent:{intent.name}"]
        for slot in intent.slots:
            values = slot.value if isinstance(slot.value, list | tuple) else [slot.value]
            for value in values:
                if not isinstance(value, str):
                    continue
                if ENTITY_ID.fullmatch(value):
                    found.append(value)
                elif slot.name == "domain" and _DOMAIN.fullmatch(value):
                    found.append(f"{value}.*")
                elif value in self._entity_domains:
                    found.append(f"{self._entity_domains[value]}.{_slug(value)}")
        return found

    def matching(self, targets: Iterable[str]) -> list[ProtectRule]:
        """The rules that catch at least one target, in configuration order."""
        listed = list(targets)
        return [rule for rule in self.rules.values()
                if any(matches(p, t) for p in rule.match for t in listed)]

    def check(self, targets: Iterable[str], speaker: SpeakerMatch, site: str,
              matched_by: str = "template", spoken: bool = True) -> Verdict:
        """May this command run now (or after a confirmation)?"""
        listed = list(targets)
        waiting: list[ProtectRule] = []
        for rule in self.matching(listed):
            why = _why_not(rule, speaker, site, matched_by, spoken)
            if why is not None:
                caught = next(t for t in listed if any(matches(p, t) for p in rule.match))
                message = f"protect rule {rule.name!r} ({caught}): {why}"
                log.warning("site %s: refused: %s", site, message)
                return Verdict(CODE_PROTECTED, message)
            if rule.confirm is not None:
                waiting.append(rule)
        if waiting:
            assert waiting[0].confirm is not None
            return Verdict(confirm=tuple(r.name for r in waiting),
                           prompt=waiting[0].confirm.prompt)
        return ALLOWED

    # ---- confirmations -----------------------------------------------------------------
    def hold(self, site: str, session_id: str, verdict: Verdict, payload: Any) -> None:
        """Keep a command until its confirmation (replacing any other on the site)."""
        now = self._clock()
        self._expire(now)
        timeout = min(r.confirm.timeout_s for r in map(self.rules.__getitem__, verdict.confirm)
                      if r.confirm is not None)
        self._pending.pop(site, None)
        while len(self._pending) >= MAX_PENDING:
            oldest = min(self._pending.values(), key=lambda p: p.deadline)
            del self._pending[oldest.site]
        self._pending[site] = Pending(site, session_id, now + timeout, verdict.confirm, payload)
        log.info("site %s: waiting up to %.0f s for the confirmation of rule(s) %s", site,
                 timeout, ", ".join(verdict.confirm))

    def waiting(self, site: str) -> bool:
        """True while a command on `site` waits for its confirmation."""
        return site in self._pending

    def cancel(self, site: str) -> None:
        """Forget the command waiting on `site` (the conversation moved on)."""
        if self._pending.pop(site, None) is not None:
            log.info("site %s: a command waiting for its confirmation was dropped", site)

    def take(self, site: str, session_id: str, heard: str,
             speaker: SpeakerMatch) -> tuple[Pending | None, Verdict]:
        """The confirmation turn: what `speaker` said (`heard`) on `site`. One try: the
        waiting command is gone after it, passed or not."""
        pending = self._pending.pop(site, None)
        if pending is None or pending.session_id != session_id:
            elsewhere = [s for s, p in self._pending.items() if p.session_id == session_id]
            for other in elsewhere:
                del self._pending[other]
            why = (f"the answer came from site {site!r}, not the one that asked" if elsewhere
                   else "nothing is waiting for a confirmation in this session")
            return self._refuse(site, pending, CODE_FAILED, why)
        if self._clock() > pending.deadline:
            return self._refuse(site, pending, CODE_EXPIRED, "the confirmation came too late")
        said = normalise(heard)
        right = [_same(said, self._secrets[name]) for name in pending.rules]
        for name in pending.rules:
            voice = _why_not(self.rules[name], speaker, site, "template", True)
            if voice is not None:
                return self._refuse(site, pending, CODE_PROTECTED,
                                    f"protect rule {name!r}, on the confirming voice: {voice}")
        if not all(right):
            return self._refuse(site, pending, CODE_FAILED,
                                f"protect rule(s) {', '.join(pending.rules)}: wrong confirmation")
        log.info("site %s: confirmation of rule(s) %s passed", site, ", ".join(pending.rules))
        return pending, ALLOWED

    def is_secret(self, text: str) -> bool:
        """True when `text` holds a configured secret (a PIN among its numbers, a
        passphrase among its words): such text is never shown."""
        if not self._secrets:
            return False
        said = normalise(text)
        hits: list[bool] = []
        for secret in self._secrets.values():
            if secret.isdigit():
                hits.extend(_same(token, secret) for token in said.split())
            else:
                hits.append(f" {secret} " in f" {said} ")
        return any(hits)

    def _refuse(self, site: str, pending: Pending | None, code: str,
                why: str) -> tuple[Pending | None, Verdict]:
        log.warning("site %s: refused: %s", site, why)
        return pending, Verdict(code, why)

    def _expire(self, now: float) -> None:
        for site in [s for s, p in self._pending.items() if p.deadline < now]:
            del self._pending[site]


def warn_unknown_people(config: Config, speakers: Any = None) -> None:
    """Log the people a rule names that are neither in `speakers:` nor enrolled: nobody
    can be identified as them, so the rule refuses everyone it would have let in (a typo
    fails closed; it is a warning, not an error, as people may be enrolled later)."""
    known = set(config.speakers.people)
    if speakers is not None:
        known |= {p.name for p in speakers.store.people(speakers.model_id)}
    for rule in config.protect:
        unknown = sorted(set(rule.people or ()) - known)
        if unknown:
            log.warning("protect rule %r names %s, who are neither in speakers: nor enrolled; "
                        "nobody is identified as them until they enroll", rule.name,
                        ", ".join(unknown))


def _why_not(rule: ProtectRule, speaker: SpeakerMatch, site: str, matched_by: str,
             spoken: bool) -> str | None:
    """Why `rule` refuses this command (None: it does not), naming no allowed person."""
    if rule.sites is not None and site not in rule.sites:
        return f"not allowed from site {site[:64]!r}"
    if matched_by != "template" and not rule.allow_fuzzy:
        return "the command was guessed (fuzzy match), not heard exactly"
    if rule.people is not None or rule.min_confidence is not None:
        who = repr(speaker.name[:64])
        if not speaker.verified:
            return f"the name {who} was claimed, not identified by voice"
        if not speaker.known:
            return "the voice was not identified as anyone"
        if rule.people is not None and speaker.name not in rule.people:
            return f"the voice identified as {who} may not"
        if rule.min_confidence is not None and speaker.confidence < rule.min_confidence:
            return (f"the voice was identified as {who} with confidence "
                    f"{speaker.confidence:.2f}, below {rule.min_confidence:g}")
    if rule.confirm is not None and not spoken:
        return "it needs a spoken confirmation, which text entry cannot give"
    return None
