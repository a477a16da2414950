"""`voiced finetune whisper` on CPU: a tiny scripted Whisper checkpoint (the real
architecture and loader; it says "turn off the office lights" whatever it hears) is
fine-tuned on an exported set of corrections (espeak-ng speech, corrected to "turn on the
kitchen lights"). Its loss falls, its output moves to the corrected text (word error rate
and intent accuracy before and after), and the result loads through voiced's whisper
backend. An interrupted run continues with --resume; too little data is refused clearly;
LoRA adapters fold into the weights exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from review_support import VOICES, corrected_state, espeak
from scripted_whisper import write_scripted_checkpoint
from support import REPO

from voiced.asr.whisper import WhisperTranscriber
from voiced.cli import main
from voiced.config import AsrConfig
from voiced.dataset import examples, export
from voiced.finetune import STATE_FILE, FinetuneError, Options, merge_lora, prepare, run

pytestmark = pytest.mark.slow

SAID = "turn on the kitchen lights"
SCRIPTED = "turn off the office lights"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(exported hf folder, scripted checkpoint, config file with the state folder)."""
    root = tmp_path_factory.mktemp("finetune")
    entries = [(SAID, voice, "HassTurnOn", {"area": "kitchen"}, None) for voice in VOICES]
    corrected_state(root / "state", entries)
    export(examples(root / "state"), root / "data", "hf", validation=0.34)
    base = write_scripted_checkpoint(root / "scripted.pt", SCRIPTED)
    config = root / "voiced.yaml"
    config.write_text(f"state_dir: {root / 'state'}\nintents:\n"
                      f"  paths: [{REPO / 'config' / 'intents'}]\n")
    return root / "data", base, config


def test_fine_tuning_moves_the_output_to_the_corrections(
        data: tuple[Path, Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder, base, config = data
    out = tmp_path / "tuned"
    assert main(["finetune", "whisper", "--data", str(folder), "--base", str(base),
                 "--out", str(out), "--epochs", "8", "--batch-size", "4", "--lr", "0.02",
                 "--device", "cpu", "--config", str(config), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["train"], summary["validation"]) == (4, 2)
    before, after = summary["before"], summary["after"]
    assert before["wer"] == 0.4 and before["intent_accuracy"] == 0.0  # "off the office"
    assert after["loss"] < before["loss"] / 4
    assert after["wer"] < before["wer"] and after["intent_accuracy"] == 1.0, summary
    report = json.loads((out / "report.json").read_text())
    assert [e["epoch"] for e in report["epochs"]] == list(range(1, 9))
    losses = [e["loss"] for e in report["epochs"]]
    assert losses == sorted(losses, reverse=True), losses  # falls epoch after epoch
    assert report["seconds_per_epoch"] > 0 and report["device"] == "cpu"
    assert not (out / STATE_FILE).exists()

    # the whisper backend loads the folder (asr.model: OUT) and now hears the correction
    asr = WhisperTranscriber(AsrConfig(backend="whisper", model=str(out), device="cpu",
                                       language="en", prompt_tokens=0), None, tmp_path)
    asr.load()
    heard = asr.transcribe(espeak("turn on the kitchen lights", "en-us+f2"))
    assert heard.text.strip() == SAID and asr.model_path == out / "model.pt"

    # the same OUT again: refused, nothing overwritten
    with pytest.raises(FinetuneError) as refused:
        run(Options(data=folder, base=str(base), out=out, device="cpu", progress=False))
    assert refused.value.code == "out_exists"


def test_an_interrupted_run_resumes(data: tuple[Path, Path, Path], tmp_path: Path) -> None:
    folder, base, config = data
    out = tmp_path / "tuned"
    args = [sys.executable, "-m", "voiced.cli", "finetune", "whisper", "--data", str(folder),
            "--base", str(base), "--out", str(out), "--epochs", "6", "--batch-size", "4",
            "--lr", "0.001", "--device", "cpu", "--config", str(config), "--no-progress"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while not (out / STATE_FILE).exists():  # the first epoch is saved: interrupt
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert b"--resume" in err and not (out / "model.pt").exists()
    with pytest.raises(FinetuneError) as unfinished:
        run(Options(data=folder, base=str(base), out=out, device="cpu", progress=False))
    assert unfinished.value.code == "unfinished"
    with pytest.raises(FinetuneError) as other:
        run(Options(data=folder, base=str(base), out=out, epochs=6, batch_size=2, lr=0.001,
                    device="cpu", resume=True, progress=False))
    assert other.value.code == "resume_mismatch"
    saved = torch.load(out / STATE_FILE, weights_only=False)["epoch"]
    assert 1 <= saved < 6
    assert main([*args[3:], "--resume"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [e["epoch"] for e in report["epochs"]] == list(range(1, 7))
    assert (out / "model.pt").exists() and not (out / STATE_FILE).exists()


def test_too_little_data_is_refused(data: tuple[Path, Path, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, base, _ = data
    small = tmp_path / "state"
    corrected_state(small, [(SAID, "en-us", "HassTurnOn", {"area": "kitchen"}, None),
                            (SAID, "en-us+f2", "HassTurnOn", {"area": "kitchen"}, None)])
    export(examples(small), tmp_path / "small", "nemo")
    assert main(["finetune", "whisper", "--data", str(tmp_path / "small"), "--base",
                 str(base), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "has 1 training and 1 validation utterances; fine-tuning needs at least 4" in err
    assert main(["finetune", "whisper", "--data", str(tmp_path / "nothing"), "--base",
                 str(base), "--out", str(tmp_path / "out")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_lora_adapters_fold_into_the_weights_exactly(data: tuple[Path, Path, Path]) -> None:
    import whisper

    _, base, _ = data
    model = whisper.load_model(str(base), device="cpu").float()
    params = prepare(model, Options(data=Path(), base="", out=Path(), lora_rank=4))
    assert params and all(p.requires_grad for p in params)
    assert sum(p.requires_grad for p in model.parameters()) == len(params)
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.05)  # as after training: B is no longer zero
        mels = torch.randn(1, 80, 3000)
        tokens = torch.tensor([[50258, 50259, 50359, 50363, 1261]])
        adapted = model(mels, tokens)
        merge_lora(model)
        assert not any("lora_" in n for n, _ in model.named_parameters())
        assert torch.allclose(model(mels, tokens), adapted, atol=1e-3, rtol=1e-4)
    with pytest.raises(FinetuneError) as nothing:
        prepare(model, Options(data=Path(), base="", out=Path(), train="nowhere."))
    assert nothing.value.code == "nothing_to_train"
