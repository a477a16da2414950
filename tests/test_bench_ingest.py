"""`voiced bench ingest` end to end: a real mosquitto, `voiced serve` and the load generator
as their own processes, three satellites streaming room noise and then one command each.

At this size nothing may be lost: the report must account for every frame and answer
every command, and its figures must agree with each other.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import REPO

pytestmark = pytest.mark.slow

SATELLITES = 3


def test_three_satellites_every_frame_and_command_accounted_for() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "voiced.cli", "bench", "ingest", "--satellites", str(SATELLITES),
         "--seconds", "4", "--command-spread", "1", "--answer-timeout", "15", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads(proc.stdout)

    assert r["satellites"] == SATELLITES
    frames = r["frames"]
    # 4 s of noise, a 2-4 s command, 1.2 s of noise after the last one: 50 frames a second
    assert SATELLITES * 50 * 7 <= frames["published"] <= SATELLITES * 50 * 11
    assert frames["seen"] == frames["published"]
    assert frames["lost"] == 0 and frames["unaccounted"] == 0
    assert frames["dropped_by_voiced"] == 0
    assert frames["dropped_by_broker"] == 0  # $SYS arrived: mosquitto runs sys_interval 1
    assert frames["sites_unseen"] == 0

    commands = r["commands"]
    assert commands["spoken"] == SATELLITES
    assert commands["answered"] == SATELLITES and commands["unanswered"] == []
    assert commands["answers_before_command"] == 0  # room noise never passes for speech
    latency = commands["speech_end_to_answer_ms"]
    # the endpoint needs 500 ms of silence after the last speech frame
    assert 400 < latency["p50"] <= latency["p95"] <= latency["max"] < 10_000

    voiced = r["voiced"]
    assert voiced["cpu_cores"] is not None and 0 < voiced["cpu_cores"] < 2
    assert voiced["cpu_per_satellite"] == pytest.approx(voiced["cpu_cores"] / SATELLITES,
                                                        abs=1e-4)
    assert voiced["rss_mb_max"] > 10
    assert len(voiced["timeline"]) >= 8
    assert not voiced["saturated"]
    assert voiced["log"]["errors"] == 0 and voiced["log"]["mqtt_connection_lost"] == 0

    generator = r["generator"]
    assert generator["kept_real_time"] and generator["publish_errors"] == 0
    assert generator["lag_ms"]["p50"] < 20
    assert r["ok"] is True
