"""Whisper backend: real loader, real architecture (tiny dims, random weights), offline.

The checkpoint is built here with whisper's own `ModelDimensions` and `Whisper` classes and
saved with `torch.save` in the format `whisper.load_model` reads; every test loads it
through `WhisperTranscriber.load()` and so through the real loader.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import whisper
from hassil import Intents
from whisper.model import ModelDimensions, Whisper

from voiced.asr.base import AsrIntents
from voiced.asr.service import asr_intents, create_transcriber
from voiced.asr.whisper import WhisperTranscriber
from voiced.asr.whisper_models import (
    BASE_URL_ENV,
    MODEL_DIMS,
    download,
    load_checkpoint,
    pick_device,
    write_random_checkpoint,
)
from voiced.asr.whisper_prompt import build_prompt
from voiced.config import AsrConfig
from voiced.const import SAMPLE_RATE, ms_to_bytes
from voiced.errors import AsrError
from voiced.inference import InferenceEngine, MicroBatcher
from voiced.models import Transcript

TINY = ModelDimensions(
    n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
    n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1,
)


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """Random weights large enough (cross-attention doubled) that the tokens depend on the audio."""
    gen = torch.Generator().manual_seed(seed)
    model = Whisper(TINY)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.fill_(1.0 if name.endswith(("ln.weight", "ln_post.weight")) else 0.0)
            else:
                std = 2.0 if "embedding" in name else 2.0 / math.sqrt(param.shape[-1])
                if "cross_attn" in name:
                    std *= 2
                param.copy_(torch.randn(param.shape, generator=gen) * std)
    torch.save({"dims": asdict(TINY), "model_state_dict": model.state_dict()}, path)
    return path


def tone_pcm(freq: float, seconds: float = 2.0, amp: float = 0.3) -> bytes:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (amp * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes()


def noise_pcm(seed: int, seconds: float = 1.5) -> bytes:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(SAMPLE_RATE * seconds)) * 3000).astype("<i2").tobytes()


UTTERANCES = [tone_pcm(200), tone_pcm(900, 3.0), tone_pcm(3000, 1.0), noise_pcm(1)]


def assert_same(a: Sequence[Transcript], b: Sequence[Transcript]) -> None:
    """Equal transcripts; scores may differ in the last float bits (batched kernels)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.text, x.tokens, x.language, x.is_speech) == (y.text, y.tokens, y.language,
                                                                y.is_speech)
        assert x.confidence == pytest.approx(y.confidence, abs=1e-4)
        assert x.no_speech_prob == pytest.approx(y.no_speech_prob, abs=1e-5)


def vocabulary(words: set[str]) -> AsrIntents:
    """Intents where only the vocabulary matters (English, no sentences)."""
    return AsrIntents("en", Intents.from_dict({"language": "en", "intents": {}}), None,
                      {"en": frozenset(words)})


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run several times faster on one thread on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("whisper") / "tiny-test.pt")


def make(ckpt: Path, state: Path, intents: AsrIntents | None = None,
         **asr: object) -> WhisperTranscriber:
    config = AsrConfig(backend="whisper", model=str(ckpt), **asr)  # type: ignore[arg-type]
    transcriber = create_transcriber(config, intents, state)
    assert isinstance(transcriber, WhisperTranscriber)
    transcriber.max_tokens = 8
    transcriber.load()
    return transcriber


@pytest.fixture(scope="module")
def whisper_auto(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> WhisperTranscriber:
    """Loaded once: language detection, a vocabulary prompt, CPU."""
    vocab = vocabulary({"kitchen", "living room", "Zyxel lamp", "turn on", "dim"})
    return make(tiny_ckpt, tmp_path_factory.mktemp("state"), vocab, language="auto")


def test_loads_checkpoint_through_whisper_loader(
    whisper_auto: WhisperTranscriber, tiny_ckpt: Path
) -> None:
    t = whisper_auto
    assert t.model_path == tiny_ckpt
    assert t.model.dims == TINY
    assert t.supports_batching and t.supports_streaming
    transcript = t.transcribe(UTTERANCES[0])
    assert transcript.text and 0 < transcript.confidence <= 1
    assert transcript.language in whisper.tokenizer.LANGUAGES


def test_batched_equals_unbatched(whisper_auto: WhisperTranscriber) -> None:
    t = whisper_auto
    batched = t.decode_batch(UTTERANCES)
    alone = [t.decode_batch([pcm])[0] for pcm in UTTERANCES]
    # the utterances decode differently, so a mix-up inside the batch would show
    assert len({r.token_ids for r in alone}) >= 3
    for b, a in zip(batched, alone, strict=True):
        assert b.token_ids == a.token_ids
        assert b.text == a.text
        assert b.language == a.language
        assert b.avg_logprob == pytest.approx(a.avg_logprob, abs=1e-4)
        assert b.no_speech_prob == pytest.approx(a.no_speech_prob, abs=1e-5)
    assert_same(t.transcribe_batch(UTTERANCES[:2]), [t.transcribe(p) for p in UTTERANCES[:2]])


def test_batched_mel_equals_whisper_reference(whisper_auto: WhisperTranscriber) -> None:
    mels = whisper_auto.log_mel([UTTERANCES[0], UTTERANCES[3]])
    for row, pcm in enumerate((UTTERANCES[0], UTTERANCES[3])):
        audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
        reference = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), TINY.n_mels)
        assert torch.allclose(mels[row], reference, atol=1e-5)


def test_decodes_as_whisper_itself_does(whisper_auto: WhisperTranscriber) -> None:
    """voiced encodes, then runs whisper's decoding task on the features: the same tokens
    as `whisper.decode` on whisper's own mel."""
    t = whisper_auto
    for pcm in UTTERANCES[:2]:
        audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), TINY.n_mels)
        reference = whisper.decode(t.model, mel, t.decoding_options())
        (ours,) = t.decode_batch([pcm])
        assert ours.token_ids == tuple(reference.tokens) and ours.text == reference.text
        assert ours.language == reference.language


@pytest.mark.parametrize("language", ["en", "auto"])
def test_shorter_encoder_window(tiny_ckpt: Path, tmp_path: Path, language: str) -> None:
    t = make(tiny_ckpt, tmp_path, language=language, encoder_window_s=10)
    mels = t.log_mel(UTTERANCES)
    assert mels.shape == (4, TINY.n_mels, 1000)
    assert t.encode(mels).shape == (4, 500, TINY.n_audio_state)
    # the first 10 seconds of Whisper's mel (the end differs only in the STFT's padding)
    audio = np.frombuffer(UTTERANCES[1], "<i2").astype(np.float32) / 32768
    full = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), TINY.n_mels)
    assert torch.allclose(mels[1][:, :990], full[:, :990], atol=1e-5)
    batched = t.decode_batch(UTTERANCES)
    alone = [t.decode_batch([pcm])[0] for pcm in UTTERANCES]
    assert len({r.token_ids for r in alone}) >= 3
    assert [r.token_ids for r in batched] == [r.token_ids for r in alone]
    assert [r.language for r in batched] == [r.language for r in alone]
    assert t.model.dims.n_audio_ctx == 1500  # as loaded, outside a decode
    # the encoder attends over 10 s, not 30: its output differs from the 30-second one's
    full_window = make(tiny_ckpt, tmp_path, language=language)
    short, full = t.encode(mels), full_window.encode(full_window.log_mel(UTTERANCES))
    assert not torch.allclose(short, full[:, :500], atol=1e-3)


def test_encoder_window_bounds() -> None:
    from pydantic import ValidationError

    for bad in (1, 31):
        with pytest.raises(ValidationError, match="encoder_window_s"):
            AsrConfig(backend="whisper", encoder_window_s=bad)


def test_language_detection_per_utterance(whisper_auto: WhisperTranscriber) -> None:
    results = whisper_auto.decode_batch(UTTERANCES)
    mels = whisper_auto.log_mel(UTTERANCES)
    _, probs = whisper.detect_language(whisper_auto.model, mels)
    assert [r.language for r in results] == [max(p, key=p.get) for p in probs]
    assert len({r.language for r in results}) > 1


def test_configured_language_is_used(tiny_ckpt: Path, tmp_path: Path) -> None:
    t = make(tiny_ckpt, tmp_path, language="de")
    assert {r.language for r in t.decode_batch(UTTERANCES)} == {"de"}
    with pytest.raises(AsrError) as err:
        make(tiny_ckpt, tmp_path, language="klingon")
    assert err.value.code == "language_unsupported"


def test_forced_token_count(
    whisper_auto: WhisperTranscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(whisper_auto, "forced_tokens", 11)
    assert [len(r.token_ids) for r in whisper_auto.decode_batch(UTTERANCES)] == [11] * 4


def test_prompt_from_vocabulary(whisper_auto: WhisperTranscriber, tmp_path: Path) -> None:
    t = whisper_auto
    assert "Zyxel lamp" in t.prompt_text and "living room" in t.prompt_text
    assert t.decoding_options().prompt == t.prompt_tokens
    bare = make(Path(str(t.model_path)), tmp_path, language="auto")
    assert bare.prompt_tokens == []
    # the prompt conditions the decoder: with random weights the output changes
    assert bare.decode_batch(UTTERANCES) != t.decode_batch(UTTERANCES)


def test_prompt_is_bounded_and_keeps_rare_words(whisper_auto: WhisperTranscriber) -> None:
    encode = whisper_auto._tokenizer.encode
    common = {f"word{i}" for i in range(300)} | {"the", "on", "light"}
    text, tokens = build_prompt(common | {"Xochiquetzal", "kitchen"}, encode, 20)
    assert 0 < len(tokens) <= 20
    assert tokens == encode(" " + text)
    assert "Xochiquetzal" in text
    assert build_prompt({"kitchen"}, encode, 0) == ("", [])
    assert build_prompt({"1", "", "  "}, encode, 50) == ("", [])


def test_confidence_and_no_speech_rejection(
    whisper_auto: WhisperTranscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = whisper_auto
    raw = t.decode_batch(UTTERANCES)
    transcripts = t.transcribe_batch(UTTERANCES)
    for r, tr in zip(raw, transcripts, strict=True):
        assert tr.confidence == pytest.approx(math.exp(r.avg_logprob))
        assert tr.no_speech_prob == pytest.approx(r.no_speech_prob)
        assert tr.tokens == tuple(r.text.split())
        assert tr.is_speech
    monkeypatch.setattr(t, "no_speech_threshold", 0.0)
    assert not any(tr.is_speech for tr in t.transcribe_batch(UTTERANCES))


def test_cpu_fallback_when_no_gpu(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    t = make(tiny_ckpt, tmp_path, device="auto", compute="fp16")
    assert (t.device, t.fp16) == ("cpu", False)
    assert next(t.model.parameters()).dtype == torch.float32
    assert t.transcribe(UTTERANCES[0]).text
    with pytest.raises(AsrError) as err:
        make(tiny_ckpt, tmp_path, device="cuda")
    assert err.value.code == "device_unavailable"


def test_auto_prefers_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda"
    assert pick_device("cpu") == "cpu"


def test_half_precision_model(whisper_auto: WhisperTranscriber, tiny_ckpt: Path) -> None:
    """The fp16 code path (used on CUDA), exercised on the CPU, which also runs fp16."""
    half = load_checkpoint(tiny_ckpt, "cpu", fp16=True)
    assert half.encoder.conv1.weight.dtype == torch.float16
    assert half.decoder.token_embedding.weight.dtype == torch.float16
    assert half.decoder.ln.weight.dtype == torch.float32
    t = WhisperTranscriber(whisper_auto.config, None, Path("unused"))
    t._model, t._tokenizer, t.fp16, t.language = half, whisper_auto._tokenizer, True, "en"
    t.forced_tokens = 3
    results = t.decode_batch(UTTERANCES[:2])
    assert [len(r.token_ids) for r in results] == [3, 3]
    assert t.decoding_options().fp16
    t.window_s = 10  # the shorter encoder window in half precision too
    assert t.encode(t.log_mel(UTTERANCES[:2])).dtype == torch.float16
    assert [len(r.token_ids) for r in t.decode_batch(UTTERANCES[:2])] == [3, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_batched_equals_unbatched(tiny_ckpt: Path, tmp_path: Path) -> None:
    t = make(tiny_ckpt, tmp_path, device="cuda", compute="fp16")
    assert t.fp16 and next(t.model.parameters()).dtype == torch.float16
    for window in (30, 10):
        t.window_s = window
        batched = t.decode_batch(UTTERANCES)
        assert [r.token_ids for r in batched] == [t.decode_batch([p])[0].token_ids
                                                  for p in UTTERANCES]


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Downloads fail at once (a file:// mirror that does not exist); empty caches."""
    monkeypatch.setenv(BASE_URL_ENV, (tmp_path / "no-mirror").as_uri())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    yield tmp_path / "state"


def test_missing_model_without_network(offline: Path) -> None:
    t = create_transcriber(AsrConfig(backend="whisper", model="tiny"), None, offline)
    started = time.monotonic()
    with pytest.raises(AsrError) as err:
        t.load()
    assert time.monotonic() - started < 5
    assert err.value.code == "model_unavailable"
    assert "asr.model" in err.value.message and "tiny.pt" in err.value.message
    cache = offline / "models" / "whisper"
    assert not list(cache.glob("*")) if cache.exists() else True


def test_model_name_uses_the_state_cache(offline: Path, tiny_ckpt: Path) -> None:
    cached = offline / "models" / "whisper" / "tiny.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_ckpt.read_bytes())
    t = make(Path("tiny"), offline)
    assert t.model_path == cached


def test_bad_model_values(offline: Path, tmp_path: Path) -> None:
    for model, code in [(str(tmp_path / "nope.pt"), "model_unavailable"),
                        ("tinyy", "model_unknown")]:
        with pytest.raises(AsrError) as err:
            create_transcriber(AsrConfig(backend="whisper", model=model), None, offline).load()
        assert err.value.code == code
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(AsrError) as err:
        create_transcriber(AsrConfig(backend="whisper", model=str(junk)), None, offline).load()
    assert err.value.code == "model_invalid"


def test_download_checks_sha256(tiny_ckpt: Path, tmp_path: Path) -> None:
    data = tiny_ckpt.read_bytes()
    target = tmp_path / "cache" / "tiny.pt"
    with pytest.raises(AsrError) as err:
        download(tiny_ckpt.as_uri(), target, "0" * 64, progress=False)
    assert err.value.code == "model_checksum"
    assert not target.exists() and not list(target.parent.glob("*.part"))
    download(tiny_ckpt.as_uri(), target, hashlib.sha256(data).hexdigest(), progress=False)
    assert target.read_bytes() == data


def test_random_checkpoint_of_real_dims(tmp_path: Path) -> None:
    path = write_random_checkpoint("tiny", tmp_path / "tiny.pt")
    model = load_checkpoint(path, "cpu", fp16=False)
    assert model.dims == ModelDimensions(**MODEL_DIMS["tiny"])
    assert model.is_multilingual


def test_partials_are_rate_capped(
    whisper_auto: WhisperTranscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = whisper_auto
    monkeypatch.setattr(t, "partial_interval_ms", 500.0)
    from voiced.asr.whisper_stream import WhisperStream

    now = [0.0]

    def clock() -> float:  # advances 0.1 s per reading, so a decode "takes" 0.1 s
        now[0] += 0.1
        return now[0]

    stream = WhisperStream(t, clock=clock)
    pcm = tone_pcm(440, 3.0)
    chunk = ms_to_bytes(100)
    decodes = t.partial_decodes
    stream.feed(pcm[: 2 * chunk])
    assert stream.partial() is None and t.partial_decodes == decodes  # 200 ms: too little
    stream.feed(pcm[2 * chunk : 6 * chunk])
    first = stream.partial()
    assert isinstance(first, str) and t.partial_decodes == decodes + 1
    assert stream.partial() == first and t.partial_decodes == decodes + 1  # no new audio
    stream.feed(pcm[6 * chunk : 12 * chunk])
    # that decode took 0.1 s; at 25 % duty the next may start 0.3 s after it ended
    assert stream.partial() == first and stream.partial() == first
    assert t.partial_decodes == decodes + 1
    assert isinstance(stream.partial(), str) and t.partial_decodes == decodes + 2
    # a waiting final decode has priority: no partial starts
    stream.feed(pcm[12 * chunk : 20 * chunk])
    now[0] += 10
    t.gate.acquire_final()
    try:
        before = stream.partial()
    finally:
        t.gate.release_final()
    assert t.partial_decodes == decodes + 2 and before is not None
    assert_same([stream.finish()], [t.transcribe(pcm[: 20 * chunk])])


async def test_microbatcher_batches_within_window(whisper_auto: WhisperTranscriber) -> None:
    engine = InferenceEngine(workers=2)
    batcher = MicroBatcher(engine, whisper_auto.transcribe_batch, window_s=0.25, max_batch=16)
    try:
        first = asyncio.create_task(batcher.submit(UTTERANCES[0]))
        await asyncio.sleep(0.03)
        second = asyncio.create_task(batcher.submit(UTTERANCES[3]))
        async with asyncio.timeout(30):
            results = await asyncio.gather(first, second)
        assert [b.size for b in batcher.history] == [2]
        assert_same(results, [whisper_auto.transcribe(UTTERANCES[0]),
                              whisper_auto.transcribe(UTTERANCES[3])])
    finally:
        await batcher.close()
        engine.close()


async def test_microbatcher_lone_utterance_waits_at_most_the_window(
    whisper_auto: WhisperTranscriber,
) -> None:
    engine = InferenceEngine(workers=2)
    window = 0.05
    batcher = MicroBatcher(engine, whisper_auto.transcribe_batch, window_s=window, max_batch=16)
    try:
        async with asyncio.timeout(30):
            await batcher.submit(UTTERANCES[1])
        (stats,) = batcher.history
        assert stats.size == 1
        # it waits for the window (a partner may come) and then goes alone: never for a
        # second utterance. The bound is loose on purpose: how late a timer fires on a
        # loaded machine is the scheduler's business (`voiced bench asr` measures waits)
        assert window * 1000 * 0.8 <= stats.waited_ms < window * 1000 * 10
    finally:
        await batcher.close()
        engine.close()


def test_bench_asr_reports_latency_and_batching_gain(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voiced.cli import main

    code = main(["bench", "asr", "--model", str(tiny_ckpt), "--concurrency", "1,3",
                 "--rounds", "2", "--tokens", "5", "--seconds", "1", "--threads", "1",
                 "--state-dir", str(tmp_path), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["device"], report["tokens"]) == ("cpu", 5)
    rows = {row["concurrency"]: row for row in report["rows"]}
    assert set(rows) == {1, 3}
    for row in rows.values():
        assert 0 < row["p50_ms"] <= row["p95_ms"] and row["wall_ms"] > 0
        assert row["throughput"] == pytest.approx(row["concurrency"] / row["wall_ms"] * 1000)
    assert report["batching"]["n"] == 3
    assert report["batching"]["gain"] == pytest.approx(
        rows[3]["wall_ms"] / (3 * rows[1]["wall_ms"]))


def test_reload_rebuilds_the_prompt(tiny_ckpt: Path, tmp_path: Path) -> None:
    t = make(tiny_ckpt, tmp_path, vocabulary({"kitchen"}))
    assert t.prompt_text == "kitchen"
    t.reload(vocabulary({"garage", "Zyxel lamp"}))
    assert t.prompt_text == "garage, Zyxel lamp"


def test_transcribe_command_prints_json_lines(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voiced.audio.wav import write_wav_file
    from voiced.cli import main

    config = tmp_path / "voiced.yaml"
    config.write_text("state_dir: state\nintents:\n  paths: [no-intents-here]\n")
    files = [tmp_path / "a.wav", tmp_path / "b.wav"]
    write_wav_file(files[0], UTTERANCES[0])
    write_wav_file(files[1], UTTERANCES[3])
    code = main(["transcribe", *map(str, files), "--asr", "whisper", "--model", str(tiny_ckpt),
                 "--config", str(config), "--device", "cpu", "--language", "auto"])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == list(map(str, files))
    for line in lines:
        assert line["text"] and 0 < line["confidence"] <= 1
        assert line["language"] in whisper.tokenizer.LANGUAGES
        assert line["intent"] is None and line["slots"] == {}
        assert line["timings"]["asr_ms"] > 0
    assert "load_ms" in lines[0]["timings"] and "load_ms" not in lines[1]["timings"]
    assert lines[0]["text"] != lines[1]["text"]


def test_transcribe_command_reports_bad_files(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voiced.cli import main

    config = tmp_path / "voiced.yaml"
    config.write_text("state_dir: state\nintents:\n  paths: [no-intents-here]\n")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF junk")
    code = main(["transcribe", str(tmp_path / "missing.wav"), str(broken), "--asr", "whisper",
                 "--model", str(tiny_ckpt), "--config", str(config)])
    assert code == 1
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert len(lines) == 2
    assert lines[0]["error"]["code"] == "file_unreadable"
    assert lines[1]["error"]["code"] != "file_unreadable"  # the WAV parser's own code
    assert "broken.wav" in lines[1]["error"]["message"]
    assert "missing.wav" in out.err
    code = main(["transcribe", str(broken), "--asr", "whisper", "--model",
                 str(tmp_path / "nope.pt"), "--config", str(config)])
    assert code == 1
    assert "no such checkpoint file" in capsys.readouterr().err


INTENTS_YAML = """\
language: en
intents:
  HassTurnOn:
    data:
      - sentences:
          - "turn on [the] {area} light"
lists:
  area:
    values: [kitchen, garage, Xochimilco]
"""


@pytest.fixture
def intents_file(tmp_path: Path) -> Path:
    path = tmp_path / "intents.yaml"
    path.write_text(INTENTS_YAML)
    return path


def test_prompt_from_real_intents(tiny_ckpt: Path, tmp_path: Path, intents_file: Path) -> None:
    from voiced.intents.recognizer import IntentRecognizer

    recognizer = IntentRecognizer.load([intents_file], "en")
    t = make(tiny_ckpt, tmp_path, asr_intents(recognizer))
    for word in ("xochimilco", "kitchen", "garage", "light"):
        assert word in t.prompt_text.split(", ")
    assert t.decoding_options().prompt == t.prompt_tokens != []


def test_transcribe_pcm_matches_intents(intents_file: Path, tmp_path: Path) -> None:
    """Scripted Whisper models (real architecture and loader) that hear the same words: sure
    of them, less sure (confidence ~0.85), and judging the audio not speech."""
    from scripted_whisper import write_scripted_checkpoint

    from voiced.commands.transcribe import transcribe_pcm
    from voiced.intents.recognizer import IntentRecognizer

    def hearing(name: str, **script: Any) -> WhisperTranscriber:
        model = write_scripted_checkpoint(tmp_path / f"{name}.pt", "turn on the kitchen light",
                                          **script)
        return make(model, tmp_path, language="en", prompt_tokens=0)

    recognizer = IntentRecognizer.load([intents_file], "en")
    sure, unsure = hearing("sure"), hearing("unsure", token_scale=1.6)
    out = transcribe_pcm(sure, recognizer, UTTERANCES[0])
    assert (out["text"], out["intent"], out["slots"]) == (
        "turn on the kitchen light", "HassTurnOn", {"area": "kitchen"})
    assert out["timings"]["nlu_ms"] > 0
    assert transcribe_pcm(unsure, recognizer, UTTERANCES[0])["intent"] == "HassTurnOn"
    rejected = [
        transcribe_pcm(hearing("cough", no_speech=True), recognizer, UTTERANCES[0]),
        transcribe_pcm(unsure, recognizer, UTTERANCES[0], 0.95),
    ]
    for line in rejected:
        assert line["text"] == "turn on the kitchen light"
        assert (line["intent"], line["timings"]["nlu_ms"]) == (None, 0.0)
    assert rejected[0]["is_speech"] is False
    assert 0.5 < rejected[1]["confidence"] < 0.95


def test_transcribe_command_with_intents(
    tiny_ckpt: Path, tmp_path: Path, intents_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voiced.audio.wav import write_wav_file
    from voiced.cli import main

    wav = tmp_path / "a.wav"
    write_wav_file(wav, UTTERANCES[1])
    config = tmp_path / "voiced.yaml"
    config.write_text("state_dir: state\n")
    assert main(["transcribe", str(wav), "--asr", "whisper", "--model", str(tiny_ckpt),
                 "--intents", str(intents_file), "--config", str(config)]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert set(line) >= {"file", "text", "confidence", "language", "intent", "slots", "timings"}
    assert set(line["timings"]) == {"load_ms", "asr_ms", "nlu_ms"}
    assert main(["transcribe", str(wav), "--asr", "whisper", "--model", str(tiny_ckpt),
                 "--intents", str(tmp_path / "none.yaml"), "--config", str(config)]) == 1
    assert "none.yaml" in capsys.readouterr().err


def test_adaptive_endpoint_judges_a_transcript_of_all_the_audio(
        intents_file: Path, tmp_path: Path) -> None:
    """`WhisperStream.completion` (vad.endpoint: adaptive): a scripted model hears a whole
    command; the judgement decodes the audio not yet covered by a partial, and gives up
    (None: the utterance ends on silence) rather than judge older audio when a final
    decode waits."""
    from scripted_whisper import write_scripted_checkpoint

    from voiced.asr.base import Completion
    from voiced.intents.recognizer import IntentRecognizer

    model = write_scripted_checkpoint(tmp_path / "heard.pt", "turn on the kitchen light")
    recognizer = IntentRecognizer.load([intents_file], "en")
    t = make(model, tmp_path, asr_intents(recognizer), language="en", prompt_tokens=0)
    stream = t.start_stream()
    stream.feed(UTTERANCES[0])
    decodes = t.partial_decodes
    assert stream.completion() == Completion.COMPLETE
    assert t.partial_decodes == decodes + 1
    assert stream.completion() == Completion.COMPLETE  # nothing new: no decode
    assert t.partial_decodes == decodes + 1
    stream.feed(UTTERANCES[2])
    t.gate.acquire_final()
    try:
        assert stream.completion() is None
    finally:
        t.gate.release_final()
    assert t.partial_decodes == decodes + 1
    # no intents, no judgement
    assert make(model, tmp_path, language="en").start_stream().completion() is None
