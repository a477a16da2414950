"""`/metrics` of a real daemon: parses with prometheus-client's own parser, the stage
histograms and the counters move after a spoken command over real MQTT, every metric the
Grafana dashboard charts exists, and each daemon has its own registry."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from support import FIXTURES, REPO, Mosquitto, make_config, running_daemon

from voiced.audio.wav import read_wav_file
from voiced.metrics import MAX_LABELS, OTHER, LabelCap, Metrics
from voiced.satellite import Satellite

MANIFEST = yaml.safe_load((FIXTURES / "commands.yaml").read_text())
ENTRY = next(e for e in MANIFEST["commands"] if e["intent"] == "HassTurnOn")
HANDLERS = [{"intent": "HassTurnOn", "plugin": "say",
             "options": {"text": "Turning on the {area} lights"}}]
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum",
                                                              "_created"),
            "summary": ("_count", "_sum", "_created"), "gauge": (), "info": ("_info",),
            "unknown": ()}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(http: aiohttp.ClientSession, daemon: Any) -> tuple[Samples, set[str]]:
    """Every sample by (name, labels), and every name a query may use."""
    async with http.get(f"http://127.0.0.1:{daemon.http.port}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await resp.text()
    samples: Samples = {}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
            names.add(s.name)
    return samples, names


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _dashboard_metrics() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    found = set()
    for expr in exprs:
        # metric names: identifiers that are not PromQL functions, keywords or labels
        for name in re.findall(r"\b((?:voiced|process)_[a-z_]+)\b", expr):
            found.add(name)
    return found


@pytest.mark.slow
async def test_metrics_move_after_a_command(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = make_config(tmp_path, mosquitto.port, handlers=HANDLERS)
    pcm = read_wav_file(FIXTURES / ENTRY["file"])
    async with running_daemon(config) as daemon, aiohttp.ClientSession() as http:
        before, _ = await _scrape(http, daemon)
        for stage in ("vad", "asr", "nlu", "handler", "processing"):
            assert _value(before, "voiced_stage_seconds_count", stage=stage) == 0
        assert _value(before, "voiced_ready") == 1
        async with Satellite("127.0.0.1", mosquitto.port, "hall") as sat:
            answer = await sat.command(pcm, timeout=60)
        assert answer.intent == "HassTurnOn", answer
        await daemon.sink.error("audioServer", "pcm_partial_frame", "test", "hall")
        after, names = await _scrape(http, daemon)
    for stage in ("vad", "asr", "nlu", "handler", "processing"):
        count = _value(after, "voiced_stage_seconds_count", stage=stage)
        assert count == 1, stage
        assert _value(after, "voiced_stage_seconds_bucket", stage=stage, le="+Inf") == count
        assert _value(after, "voiced_stage_seconds_sum", stage=stage) > 0
    assert 0 < answer.timings["processing"] / 1000 <= _value(
        after, "voiced_stage_seconds_sum", stage="processing") + 0.01
    assert _value(after, "voiced_utterances_total", site="hall", outcome="handled") == 1
    assert _value(after, "voiced_utterance_audio_seconds_count") == 1
    assert _value(after, "voiced_events_total", type="intent") == 1
    assert _value(after, "voiced_handler_results_total", plugin="say", outcome="handled") == 1
    assert _value(after, "voiced_errors_total", component="audioServer",
                  code="pcm_partial_frame") == 1
    assert _value(after, "voiced_site_frames_total", site="hall") * 640 >= len(pcm)
    assert _value(after, "voiced_site_dropped_chunks_total", site="hall") == 0
    assert ("voiced_site_queue_depth", frozenset({("site", "hall")})) in after
    assert _value(after, "voiced_mqtt_connected", connection="publish") == 1
    assert _value(after, "voiced_mqtt_reconnects_total", connection="read") == 0
    assert _value(after, "voiced_model_load_seconds", model="asr") > 0
    assert _value(after, "voiced_plugin_state", plugin="say", state="running") == 1
    assert _value(after, "process_resident_memory_bytes") > 10_000_000
    assert _value(after, "voiced_utterances_processed_total") == 1
    # the dashboard charts only what exists
    missing = _dashboard_metrics() - names
    assert not missing, f"the dashboard queries metrics /metrics does not have: {missing}"


async def test_each_daemon_has_its_own_registry(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = make_config(tmp_path, mosquitto.port)
    async with running_daemon(config) as daemon, aiohttp.ClientSession() as http:
        first = Metrics(daemon)
        second = Metrics(daemon)  # the same names again: no clash, nothing global
        first.stage_seconds.labels("asr").observe(0.5)
        assert first.registry.get_sample_value("voiced_stage_seconds_count",
                                               {"stage": "asr"}) == 1
        assert second.registry.get_sample_value("voiced_stage_seconds_count",
                                                {"stage": "asr"}) == 0
        assert REGISTRY.get_sample_value("voiced_stage_seconds_count", {"stage": "asr"}) is None
        served, _ = await _scrape(http, daemon)
        assert _value(served, "voiced_stage_seconds_count", stage="asr") == 0


def test_label_values_are_bounded() -> None:
    cap = LabelCap(3)
    assert [cap(v) for v in ("a", "b", "a", "c", "d", "b")] == ["a", "b", "a", "c", OTHER, "b"]
    odd = LabelCap(MAX_LABELS)
    assert odd("x\n\x00é" + "y" * 100) == "x???" + "y" * 60
    assert odd(None) == ""
