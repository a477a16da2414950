"""`voiced speakers ...` end to end through `voiced.cli.main`, with real resemblyzer."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from voiced.audio.wav import read_wav_file, write_wav_file
from voiced.cli import main

Wavs = Callable[..., tuple[list[Path], list[Path]]]


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main(["-q", *(str(a) for a in argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_enroll_list_calibrate_identify_remove(
    tmp_path: Path, make_wavs: Wavs, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ("--state-dir", tmp_path / "state")
    awb, awb_test = make_wavs("flite-awb", n_enroll=3, n_test=2)
    rms, rms_test = make_wavs("flite-rms", n_enroll=3, n_test=1)
    _, stranger = make_wavs("flite-slt", n_enroll=1, n_test=1)

    code, out, _ = run(capsys, "speakers", "enroll", "awb", *awb, *state)
    assert code == 0, out
    assert out.count("ok  ") == 3 and "enrolled awb: 3 sample(s) stored, 3 in all" in out
    assert run(capsys, "speakers", "enroll", "rms", *rms, *state)[0] == 0

    code, out, _ = run(capsys, "speakers", "list", *state)
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == ["awb", "rms"]
    code, out, _ = run(capsys, "speakers", "list", "--json", *state)
    people = [json.loads(line) for line in out.splitlines()]
    assert {p["name"]: p["samples"] for p in people} == {"awb": 3, "rms": 3}

    code, out, _ = run(capsys, "speakers", "calibrate", *state)
    assert code == 0, out
    threshold = float(out.split()[1])
    assert 0.6 < threshold < 0.95
    assert "expected false-accept rate" in out and "stored in" in out

    code, out, _ = run(capsys, "speakers", "identify", awb_test[0], rms_test[0], stranger[0],
                       *state)
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == [str(awb_test[0]), str(rms_test[0]),
                                                str(stranger[0])]
    assert [line["speaker"] for line in lines] == ["awb", "rms", "unknown"]
    assert lines[0]["confidence"] >= threshold and lines[2]["confidence"] == 0.0
    assert set(lines[0]["scores"]) == {"awb", "rms"}

    assert run(capsys, "speakers", "remove", "rms", *state)[0] == 0
    code, _, err = run(capsys, "speakers", "remove", "rms", *state)
    assert code == 1 and "not enrolled" in err
    code, out, _ = run(capsys, "speakers", "identify", rms_test[0], *state)
    result = json.loads(out)
    assert set(result["scores"]) == {"awb"} and result["speaker"] == "unknown"


def test_enroll_refuses_bad_recordings_and_says_why(
    tmp_path: Path, make_wavs: Wavs, capsys: pytest.CaptureFixture[str]
) -> None:
    files, _ = make_wavs("flite-awb", n_enroll=2, n_test=0)
    samples = np.frombuffer(read_wav_file(files[1]), dtype="<i2").astype(np.float64)
    clipped = tmp_path / "too-loud.wav"
    write_wav_file(clipped, np.clip(samples * 12, -32768, 32767).astype("<i2").tobytes())
    state = ("--state-dir", tmp_path / "state")
    code, out, err = run(capsys, "speakers", "enroll", "awb", files[0], clipped, *state)
    assert code == 1
    assert f"BAD {clipped}: " in out and "lower the microphone gain" in out
    assert "nothing stored for awb" in err
    code, out, _ = run(capsys, "speakers", "list", "--json", *state)
    assert out == ""
    code, out, _ = run(capsys, "speakers", "enroll", "unknown", files[0], *state)
    assert code == 1
    # a file that is not a recording of a few sentences is refused before it is embedded
    long = tmp_path / "long.wav"
    write_wav_file(long, bytes(121 * 32_000))
    code, _, err = run(capsys, "speakers", "enroll", "awb", long, *state)
    assert code == 1 and "121 s of audio; at most 120 s per file" in err, err
    code, _, err = run(capsys, "speakers", "enroll", "awb", Path("/dev/zero"), *state)
    assert code == 1 and "/dev/zero: not a file" in err, err


def test_state_dir_and_backend_come_from_the_config(
    tmp_path: Path, make_wavs: Wavs, capsys: pytest.CaptureFixture[str]
) -> None:
    files, _ = make_wavs("flite-awb", n_enroll=1, n_test=0)
    config = tmp_path / "voiced.yaml"
    config.write_text("state_dir: house\nspeakers:\n  backend: none\n  alice: {playlist: x}\n")
    code, out, _ = run(capsys, "speakers", "enroll", "awb", files[0], "--config", config)
    assert code == 0, out
    assert (tmp_path / "house" / "speakers.db").is_file()
    assert "(resemblyzer:" in out  # backend none: these commands use resemblyzer
    config.write_text("speakers:\n  backend: [nope]\n")
    code, _, err = run(capsys, "speakers", "list", "--config", config)
    assert code == 2 and "speakers.backend" in err
