"""voiced's Whisper on a real Ray Serve cluster: a Ray head started here on loopback (CPU
only, Ray's token authentication on), a scripted Whisper checkpoint deployed with the real
`voiced cluster serve` command, and the daemon with `asr.backend: ray`.

The scripted model says "turn off the kitchen lights" whatever it hears, while the spoken
fixture says "turn on the kitchen lights": HassTurnOff proves the cluster transcribed,
HassTurnOn that the embedded fallback did.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from scripted_whisper import write_scripted_checkpoint
from support import FIXTURES, Mosquitto, free_port, make_config, running_daemon

from voiced.asr.ray_backend import RayServeClient
from voiced.audio.wav import read_wav_file
from voiced.cluster import LocalRayHead
from voiced.config import AsrConfig
from voiced.errors import AsrError
from voiced.satellite import Satellite

pytestmark = pytest.mark.slow

SAID = "turn off the kitchen lights"
KITCHEN = yaml.safe_load((FIXTURES / "commands.yaml").read_text())["commands"][0]
TOKEN = "voiced-test-cluster-token"


@dataclass
class Cluster:
    head: LocalRayHead
    model: Path
    http_port: int
    state: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def serve(self) -> None:
        """`voiced cluster serve`, as an operator runs it on a node."""
        env = {**self.head.env(), "VOICED_CLUSTER_TOKEN": TOKEN}
        done = subprocess.run(
            [sys.executable, "-m", "voiced", "cluster", "serve", "--address",
             self.head.address, "--model", str(self.model), "--device", "cpu",
             "--compute", "fp32", "--max-batch", "2", "--batch-wait-ms", "1500",
             "--max-tokens", "16", "--http-port", str(self.http_port),
             "--state-dir", str(self.state)],
            env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{self.url}/voiced-asr" in done.stdout

    def refused(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.http_port)) != 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    model = write_scripted_checkpoint(tmp / "says-off.pt", SAID, "en")
    head = LocalRayHead(cpus=2, token=os.urandom(16).hex())
    head.start()
    found = Cluster(head, model, free_port(), tmp / "state")
    try:
        found.serve()
        yield found
    finally:
        head.cleanup()


def ray_config(tmp_path: Path, port: int, cluster: Cluster) -> Any:
    return make_config(tmp_path, port, asr={
        "backend": "ray", "language": "en", "prompt_tokens": 0, "processes": 1,
        "remote_retry_s": 0.5, "ray": {"address": cluster.url, "timeout_s": 30}})


async def test_two_satellites_share_one_cluster_batch(cluster: Cluster, mosquitto: Mosquitto,
                                                      tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICED_CLUSTER_TOKEN", TOKEN)
    pcm = read_wav_file(FIXTURES / KITCHEN["file"])
    async with running_daemon(ray_config(tmp_path, mosquitto.port, cluster)) as daemon:
        client = daemon.transcriber.client
        assert isinstance(client, RayServeClient)

        async def speak(site: str) -> Any:
            async with Satellite("127.0.0.1", mosquitto.port, site) as sat:
                return await sat.command(pcm, timeout=90)

        answers = await asyncio.gather(speak("attic"), speak("cellar"))
        status = daemon.stats()["asr_remote"]
        stats = await asyncio.to_thread(client.stats)
    for answer in answers:
        assert answer.intent == "HassTurnOff" and answer.text == SAID, answer
    # the deployment's own record: both utterances in one @serve.batch call of size 2
    (batch_a, size_a), (batch_b, size_b) = list(client.batches)[-2:]
    assert batch_a == batch_b and size_a == size_b == 2, client.batches
    assert 2 in stats["recent_batch_sizes"] and stats["model"] == str(cluster.model)
    assert (status["state"], status["remote"], status["fallbacks"]) == ("up", 2, 0)


def test_the_deployment_wants_its_token(cluster: Cluster) -> None:
    request = urllib.request.Request(f"{cluster.url}/voiced-asr/stats")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    config = AsrConfig(backend="ray", ray={"address": cluster.url, "token_env": "NO_SUCH_VAR"})  # type: ignore[arg-type]
    with pytest.raises(AsrError) as error:
        RayServeClient(config, None).probe()
    assert error.value.code == "cluster_token"
    request.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["max_batch"] == 2
    bad = urllib.request.Request(f"{cluster.url}/voiced-asr", data=b'{"audio": "%%%"}',
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as rejected:
        urllib.request.urlopen(bad, timeout=10)
    assert rejected.value.code == 400 and b"base64" in rejected.value.read()


def test_bench_asr_against_the_deployment(cluster: Cluster, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from voiced.cli import main

    monkeypatch.setenv("VOICED_CLUSTER_TOKEN", TOKEN)
    code = main(["bench", "asr", "--backend", "ray", "--address", cluster.url, "--model",
                 str(cluster.model), "--device", "cpu", "--compute", "fp32",
                 "--concurrency", "1,2", "--rounds", "2", "--tokens", "0", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["concurrency"] for r in report["rows"]] == [1, 2]
    assert [r["concurrency"] for r in report["in_process"]] == [1, 2]
    # every command's hop was measured: round trip minus the replica's own time
    assert report["hop_ms"]["n"] == 2 * (1 + 2) and 0 < report["hop_ms"]["p50"] < 1000
    assert set(report["overhead_p50_ms"]) == {"1", "2"}


async def test_head_killed_then_back(cluster: Cluster, mosquitto: Mosquitto, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICED_CLUSTER_TOKEN", TOKEN)
    pcm = read_wav_file(FIXTURES / KITCHEN["file"])
    async with running_daemon(ray_config(tmp_path, mosquitto.port, cluster)) as daemon, \
            Satellite("127.0.0.1", mosquitto.port, "hall") as sat:
        answer = await sat.command(pcm, timeout=90)
        assert answer.intent == "HassTurnOff", answer

        await asyncio.to_thread(cluster.head.kill)
        async with asyncio.timeout(30):  # Serve's proxy dies with its raylet
            while not cluster.refused():
                await asyncio.sleep(0.1)
        answer = await sat.command(pcm, timeout=90)
        assert answer.intent == "HassTurnOn" and answer.slots == KITCHEN["slots"], answer
        status = daemon.stats()["asr_remote"]
        assert (status["state"], status["fallbacks"], status["failures"]) == ("down", 1, 1)

        await asyncio.to_thread(cluster.head.start)
        await asyncio.to_thread(cluster.serve)
        answer = await sat.command(pcm, timeout=90)
        assert answer.intent == "HassTurnOff", answer
        status = daemon.stats()["asr_remote"]
    assert (status["state"], status["remote"], status["fallbacks"]) == ("up", 2, 1)
    assert status["recoveries"] == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20"])
def test_cluster_serve_wants_a_token_off_loopback(host: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VOICED_CLUSTER_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "voiced", "cluster", "serve", "--model",
                           "tiny", "--http-host", host], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert f"--http-host {host} is not loopback: set VOICED_CLUSTER_TOKEN" in done.stderr
