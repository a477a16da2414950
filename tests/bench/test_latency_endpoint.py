"""`voiced bench latency --endpoint`: the server under test gets the config asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

from voiced.bench.latency import endpoint_config
from voiced.config import load_config


def test_endpoint_overrides_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config(endpoint_config(None, "adaptive", tmp_path))
    assert config.vad.endpoint == "adaptive"
    assert config.intents.paths == [REPO / "config" / "intents"]


def test_endpoint_overrides_a_config_and_keeps_its_paths(tmp_path: Path) -> None:
    base = tmp_path / "conf" / "voiced.yaml"
    base.parent.mkdir()
    base.write_text("vad:\n  endpoint: adaptive\n  preset: fast\n"
                    "intents:\n  paths: [mine]\nstate_dir: state\n")
    config = load_config(endpoint_config(base, "fixed", tmp_path))
    assert (config.vad.endpoint, config.vad.preset) == ("fixed", "fast")
    assert config.intents.paths == [base.parent / "mine"]
    assert config.state_dir == base.parent / "state"


def test_a_server_that_cannot_start_fails_the_bench_at_once(tmp_path: Path) -> None:
    # it used to wait two minutes for a server that had exited on a bad config
    bad = tmp_path / "voiced.yaml"
    bad.write_text(f"intents:\n  paths: [{REPO / 'config' / 'intents'}]\n"
                   "asr:\n  search: nonsense\n")
    done = subprocess.run([sys.executable, "-m", "voiced", "bench", "latency",
                           "--satellites", "1", "--utterances", "1", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 1
    assert "asr.search" in done.stderr  # the server's own message
    assert "exited (code 2) before it was ready" in done.stderr
