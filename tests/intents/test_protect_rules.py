"""Protection rules, pure: targets, patterns, the checks, confirmations and their secrets,
and voiced.yaml validation. The pipeline and the daemon are in tests/test_protect*.py."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from voiced_plugins.command import CommandOptions, CommandPlugin
from voiced_plugins.home_assistant import HomeAssistantOptions, HomeAssistantPlugin
from voiced_plugins.http import HttpOptions, HttpPlugin
from voiced_plugins.mqtt_publish import MqttPublishOptions, MqttPublishPlugin

from voiced.config import Config, load_config
from voiced.errors import ConfigError
from voiced.intents.catalog import load_catalog
from voiced.intents.recognizer import IntentRecognizer
from voiced.models import NO_SPEAKER, IntentResult, Slot, SpeakerMatch
from voiced.protect import (
    CODE_EXPIRED,
    CODE_FAILED,
    CODE_PROTECTED,
    CONFIRM_INTENT,
    MAX_PENDING,
    Protector,
    matches,
    normalise,
    url_target,
)

REPO = Path(__file__).resolve().parents[2]
ALICE = SpeakerMatch("alice", 0.9)
CAROL = SpeakerMatch("carol", 0.9)
ENTITIES = [{"name": "front door", "id": "lock.front_door", "domain": "lock"},
            {"name": "garage door", "domain": "cover"}]


def _config(rules: list[dict[str, Any]], **extra: Any) -> Config:
    return Config.model_validate({
        "intents": {"paths": [str(REPO / "config" / "intents")], "official": True,
                    "areas": ["hall", "garage"], "entities": ENTITIES},
        "speakers": {"backend": "resemblyzer"}, "protect": rules, **extra})


@pytest.fixture(scope="module")
def official() -> IntentRecognizer:
    return load_catalog(_config([{"name": "doors", "match": ["lock.*"],
                                  "confirm": {"secret_env": "UNUSED"}}]))


def _rule(**fields: Any) -> dict[str, Any]:
    return {"name": "doors", "match": ["lock.*", "cover.garage_*"], **fields}


def test_normalise_digits_and_words() -> None:
    assert normalise("One, two 3 four.") == normalise("1234") == "1234"
    assert normalise("oh four nine") == "049"
    assert normalise("  Open   Sesame! ") == "open sesame"
    assert normalise("open sesame 4 2") == normalise("Open sesame, four two") == "open sesame 42"


def test_targets_follow_what_the_command_acts_on(official: IntentRecognizer) -> None:
    """"unlock the front door" is the ungated HassTurnOff of lock.front_door; "open the
    garage door" acts on the cover domain (so `cover.garage_*` catches it); an entity
    configured without an id counts as <domain>.<name>."""
    protector = Protector.from_config(_config([_rule()]))
    unlock = official.recognize("unlock the front door", {"site": "hall"})
    assert unlock.name == "HassTurnOff"
    assert protector.targets(unlock) == ["intent:HassTurnOff", "lock.front_door"]
    garage = official.recognize("open the garage door", {"site": "hall"})
    assert "cover.*" in protector.targets(garage)
    assert [r.name for r in protector.matching(protector.targets(garage))] == ["doors"]
    lights = official.recognize("turn on the hall lights", {"site": "hall"})
    assert protector.matching(protector.targets(lights)) == []
    named = IntentResult("t", "HassTurnOn", (Slot("name", "garage door", "", "name", 0, 0),))
    assert "cover.garage_door" in protector.targets(named)


def test_patterns() -> None:
    assert matches("lock.*", "lock.front_door") and not matches("lock.*", "light.kitchen")
    assert matches("cover.garage_*", "cover.*") and not matches("cover.garage_*", "lock.*")
    assert matches("intent:Unlock*", "intent:UnlockDoor")
    assert not matches("Lock.*", "lock.front_door")  # case-sensitive
    assert matches("mqtt:home/+/lock", "mqtt:home/+/lock")  # + is literal, not a wildcard


def test_plugins_declare_their_targets() -> None:
    ha = HomeAssistantOptions(service="lock.unlock", entity_id=["lock.front_door"],
                              data={"target": {"entity_id": "lock.back_door"}})
    assert HomeAssistantPlugin.targets(ha) == ["service:lock.unlock", "lock.front_door",
                                               "lock.back_door"]
    # no entity, or `all`: the whole domain
    assert HomeAssistantPlugin.targets(HomeAssistantOptions(service="lock.unlock")) == [
        "service:lock.unlock", "lock.*"]
    assert "lock.*" in HomeAssistantPlugin.targets(
        HomeAssistantOptions(service="lock.unlock", data={"entity_id": "all"}))
    assert MqttPublishPlugin.targets(MqttPublishOptions(topic="home/lock/set")) == [
        "mqtt:home/lock/set"]
    http = HttpOptions(url="https://user:pw@door.lan:8443/api/open?token=s3cret#x")
    assert HttpPlugin.targets(http) == ["http:https://door.lan:8443/api/open"]
    assert url_target("http://h/p") == "http:http://h/p"
    assert CommandPlugin.targets(CommandOptions(argv=["/usr/bin/door", "open"])) == [
        "command:/usr/bin/door"]


def test_each_check_refuses_and_says_why_not_who(caplog: pytest.LogCaptureFixture) -> None:
    protector = Protector(_config([_rule(people=["alice", "bob"], sites=["hall"],
                                         min_confidence=0.8)]).protect)
    door = ["intent:HassTurnOff", "lock.front_door"]
    assert protector.check(door, ALICE, "hall").allowed
    assert protector.check(["intent:HassTurnOn", "light.hall"], NO_SPEAKER, "porch").allowed
    cases = {
        "porch": (ALICE, "template", True, "not allowed from site 'porch'"),
        "fuzzy": (ALICE, "fuzzy", True, "guessed (fuzzy match)"),
        "claimed": (SpeakerMatch("alice", 1.0, verified=False), "template", True, "claimed"),
        "stranger": (NO_SPEAKER, "template", True, "not identified"),
        "carol": (CAROL, "template", True, "identified as 'carol' may not"),
        "unsure": (SpeakerMatch("alice", 0.7), "template", True, "0.70, below 0.8"),
    }
    for case, (speaker, matched_by, spoken, why) in cases.items():
        site = "porch" if case == "porch" else "hall"
        verdict = protector.check(door, speaker, site, matched_by, spoken)
        assert verdict.code == CODE_PROTECTED and not verdict.allowed, case
        assert verdict.message.startswith("protect rule 'doors' (lock.front_door): "), case
        assert why in verdict.message, (case, verdict.message)
        assert "bob" not in verdict.message  # never who may
    assert "refused: protect rule 'doors'" in caplog.text
    fuzzy_ok = Protector(_config([_rule(allow_fuzzy=True)]).protect)
    assert fuzzy_ok.check(door, NO_SPEAKER, "hall", "fuzzy").allowed


def _confirming(clock: list[float] | None = None) -> Protector:
    config = _config([_rule(people=["alice"], sites=["hall", "kitchen"],
                            confirm={"secret_env": "PIN", "prompt": "Say the PIN.",
                                     "timeout_s": 10}),
                      {"name": "alarm", "match": ["alarm_control_panel.*"]}])
    now = clock if clock is not None else [0.0]
    return Protector(config.protect, {"doors": "2580"}, clock=lambda: now[0])


def test_confirmation_one_try_per_command() -> None:
    clock = [100.0]
    protector = _confirming(clock)
    verdict = protector.check(["lock.front_door"], ALICE, "hall")
    assert verdict.confirm == ("doors",) and verdict.prompt == "Say the PIN." and \
        not verdict.allowed
    # text entry cannot answer a prompt
    assert protector.check(["lock.front_door"], ALICE, "hall", spoken=False).code == \
        CODE_PROTECTED

    def attempt(said: str, speaker: SpeakerMatch = ALICE, site: str = "hall",
                session: str = "s1", later: float = 1.0) -> tuple[Any, str | None]:
        protector.hold("hall", "s1", verdict, payload="unlock")
        assert protector.waiting("hall")
        clock[0] += later
        pending, answer = protector.take(site, session, said, speaker)
        assert not protector.waiting("hall") and not protector.waiting(site)  # one try
        return (pending.payload if pending else None), answer.code

    assert attempt("two five eight zero") == ("unlock", None)
    assert attempt("2 5 8 0.") == ("unlock", None)
    assert attempt("two five eight one") == ("unlock", CODE_FAILED)
    assert attempt("two five eight zero", later=11.0) == ("unlock", CODE_EXPIRED)
    assert attempt("two five eight zero", speaker=CAROL)[1] == CODE_PROTECTED
    assert attempt("two five eight zero", speaker=SpeakerMatch("alice", 1, verified=False)
                   )[1] == CODE_PROTECTED
    # the answer on another site (allowed by the rule, too): refused, and the command
    # waiting on the first site is dropped with it
    assert attempt("two five eight zero", site="kitchen")[1] == CODE_FAILED
    assert attempt("two five eight zero", session="forged")[1] == CODE_FAILED
    assert protector.take("hall", "s1", "two five eight zero", ALICE)[1].code == CODE_FAILED


def test_waiting_confirmations_are_bounded() -> None:
    protector = _confirming()
    verdict = protector.check(["lock.front_door"], ALICE, "hall")
    for i in range(MAX_PENDING + 10):
        protector.hold(f"site{i}", f"s{i}", verdict, payload=i)
    assert sum(protector.waiting(f"site{i}") for i in range(MAX_PENDING + 10)) == MAX_PENDING
    assert not protector.waiting("site0") and protector.waiting(f"site{MAX_PENDING + 9}")
    protector.cancel(f"site{MAX_PENDING + 9}")
    assert not protector.waiting(f"site{MAX_PENDING + 9}")


def test_a_secret_is_recognised_anywhere_in_a_sentence() -> None:
    protector = _confirming()
    assert protector.is_secret("two five eight zero")
    assert protector.is_secret("my pin is 2580 okay")
    assert not protector.is_secret("two five eight") and not protector.is_secret("25801")
    words = Protector(_config([_rule(confirm={"secret_env": "X"})],
                              asr={"backend": "whisper"}).protect,
                      {"doors": "open sesame"})
    assert words.is_secret("well, Open Sesame!") and not words.is_secret("open the door")


def test_secrets_are_read_checked_and_never_shown(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    rules = [_rule(people=["alice"], confirm={"secret_env": "DOOR_PIN"})]
    monkeypatch.delenv("DOOR_PIN", raising=False)
    with pytest.raises(ConfigError, match="DOOR_PIN holds no secret"):
        Protector.from_config(_config(rules))
    monkeypatch.setenv("DOOR_PIN", "97")
    with pytest.raises(ConfigError, match="4 to 8 digits") as weak:
        Protector.from_config(_config(rules))
    assert "97" not in weak.value.message
    monkeypatch.setenv("DOOR_PIN", "open sesame")
    with pytest.raises(ConfigError, match="hears only PINs") as words:
        Protector.from_config(_config(rules))
    assert "sesame" not in words.value.message
    assert Protector.from_config(_config(rules, asr={"backend": "whisper"})).is_secret(
        "open sesame")
    monkeypatch.setenv("DOOR_PIN", " 2 5 8 0 ")
    assert Protector.from_config(_config(rules)).is_secret("two five eight zero")
    (tmp_path / "door-pin").write_text("7 3 9 6\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cred = [_rule(confirm={"secret_credential": "door-pin"})]
    assert Protector.from_config(_config(cred)).is_secret("seven three nine six")
    missing = [_rule(confirm={"secret_credential": "nope"})]
    with pytest.raises(ConfigError, match="cannot read the secret"):
        Protector.from_config(_config(missing))


@pytest.mark.parametrize(("rules", "speakers", "expected"), [
    ([{"name": "a", "match": ["lock.*"], "confirm": {"prompt": "PIN?"}}], "resemblyzer",
     "protect.0.confirm: Value error, give exactly one of secret_env and secret_credential"),
    ([{"name": "a", "match": ["lock.*"], "people": []}], "resemblyzer", "protect.0.people"),
    ([{"name": "a", "match": []}], "resemblyzer", "protect.0.match"),
    ([{"name": "a", "match": [" lock.*"]}], "resemblyzer", "is not a pattern"),
    ([{"name": "a", "match": ["x"]}, {"name": "a", "match": ["y"]}], "resemblyzer",
     "rule names must be unique: a"),
    ([{"name": "a", "match": ["lock.*"], "people": ["alice"]}], "none",
     "speakers.backend is none"),
    ([{"name": "a", "match": ["lock.*"], "sites": ["hall"], "who": ["x"]}], "resemblyzer",
     "protect.0.who: Extra inputs are not permitted"),
])
def test_rules_are_validated_with_file_and_line(tmp_path: Path, rules: list[dict[str, Any]],
                                                speakers: str, expected: str) -> None:
    import yaml

    path = tmp_path / "voiced.yaml"
    path.write_text(yaml.safe_dump({"speakers": {"backend": speakers}, "protect": rules}))
    with pytest.raises(ConfigError) as failed:
        load_config(path)
    assert expected in failed.value.message
    assert f"{path}:" in failed.value.message


def test_unknown_people_are_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from voiced.protect import warn_unknown_people

    config = _config([_rule(people=["alice", "alcie"])], speakers={
        "backend": "resemblyzer", "alice": {"playlist": "x"}})
    with caplog.at_level(logging.WARNING):
        warn_unknown_people(config)
    assert "names alcie, who are neither" in caplog.text and "alice," not in caplog.text


def test_digits_are_a_sentence_but_never_a_command(official: IntentRecognizer) -> None:
    """With a confirming rule the catalog holds spoken digits (so the embedded recognizer
    can hear a PIN); the pipeline treats them as no command (tests/test_protect.py)."""
    assert official.recognize("two five eight zero", {}).name == CONFIRM_INTENT
    assert official.recognize("oh one two three four five six seven", {}).name == \
        CONFIRM_INTENT
    assert official.recognize("unlock the front door", {}).name == "HassTurnOff"
