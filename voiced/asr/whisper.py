"""Whisper speech recognition (openai-whisper on torch), batched across satellites.

`WhisperTranscriber.transcribe_batch` decodes several utterances as one batch: their
log-Mel spectrograms (each padded to Whisper's 30-second window, or the shorter
`asr.encoder_window_s`) are stacked, the encoder runs once over the stack, and greedy
decoding advances every utterance in the same decoder passes (`whisper.decode` on the
encoder's output). The daemon feeds it through `voiced.inference.MicroBatcher`, so
commands that end close together on different satellites share one GPU pass. Results
equal those of one call per utterance.

Decoding is greedy (temperature 0) without timestamps, with an initial prompt built from
the intents' vocabulary (`voiced.asr.whisper_prompt`) and either the configured language
or, with `asr.language: auto`, per-utterance language detection.

Confidence is `exp(avg_logprob)`: the geometric mean of the probabilities of the decoded
tokens (end-of-text included), 0..1. An utterance is not speech when Whisper's
no-speech probability is above `no_speech_threshold`, or when nothing was decoded.

The model is used by one decode at a time (whisper's key/value cache hooks are installed
on the shared model). Final decodes have priority: a partial decode (`WhisperStream`)
starts only when the model is free and no final is waiting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voiced.asr.base import AsrIntents, AsrStream, Completion, Transcriber
from voiced.asr.whisper_models import (
    DEFAULT_CPU_MODEL,
    DEFAULT_GPU_MODEL,
    load_checkpoint,
    pick_device,
    resolve_checkpoint,
)
from voiced.asr.whisper_prompt import build_prompt
from voiced.const import SAMPLE_RATE, SAMPLE_WIDTH
from voiced.errors import AsrError
from voiced.models import Transcript

if TYPE_CHECKING:
    import torch
    from whisper.model import Whisper

    from voiced.config import AsrConfig

log = logging.getLogger(__name__)

WINDOW_SECONDS = 30
"""Whisper's fixed input window; longer audio is cut (commands are far shorter)."""


@dataclass(frozen=True, slots=True)
class WhisperResult:
    """Whisper's raw output for one utterance."""

    text: str
    token_ids: tuple[int, ...]
    """Decoded text tokens (no prompt, no special tokens)."""
    language: str
    avg_logprob: float
    """Sum of token log-probabilities / (tokens + 1), natural log."""
    no_speech_prob: float


class ModelGate:
    """One model user at a time; finals first, partials only when the model is idle."""

    def __init__(self) -> None:
        self._use = threading.Lock()
        self._state = threading.Lock()
        self._finals = 0

    def acquire_final(self) -> None:
        """Block until the model is free (a running partial finishes first)."""
        with self._state:
            self._finals += 1
        self._use.acquire()

    def release_final(self) -> None:
        """Give the model back after a final decode."""
        with self._state:
            self._finals -= 1
        self._use.release()

    def try_acquire_partial(self) -> bool:
        """Take the model for a partial decode, only if no final runs or waits."""
        with self._state:
            return self._finals == 0 and self._use.acquire(blocking=False)

    def release_partial(self) -> None:
        """Give the model back after a partial decode."""
        self._use.release()


class WhisperTranscriber(Transcriber):
    """openai-whisper backend: GPU (fp16) or CPU, batched, with partial transcripts."""

    name = "whisper"

    def __init__(
        self, config: AsrConfig, intents: AsrIntents | None, state_dir: Path
    ) -> None:
        self.config = config
        self.intents = intents
        self.cache_dir = Path(state_dir) / "models" / "whisper"
        self.no_speech_threshold = config.no_speech_threshold
        self.max_tokens = config.max_tokens
        self.prompt_max_tokens = config.prompt_tokens
        self.partial_interval_ms = config.partial_interval_ms
        self.window_s = config.encoder_window_s
        """Seconds of audio the encoder sees (Whisper's own: 30; audio is padded or cut)."""
        """New audio needed before the next partial decode of a stream."""
        self.partial_max_duty = 0.25
        """Largest share of wall time one stream's partial decodes may take."""
        self.forced_tokens: int | None = None
        """Benchmarks: decode exactly this many tokens (end-of-text suppressed)."""
        self.device = "cpu"
        self.fp16 = False
        self.language: str | None = None
        """Decoding language; None: detect per utterance."""
        self.model_path: Path | None = None
        self.prompt_text = ""
        self.prompt_tokens: list[int] = []
        self.partial_decodes = 0
        """How many partial decodes ran (metrics, tests)."""
        self.gate = ModelGate()
        self.judge: Callable[[str], Completion] | None = None
        """Completion of a partial transcript (adaptive endpointing); None: no intents."""
        self._model: Whisper | None = None
        self._tokenizer: Any = None

    @property
    def supports_batching(self) -> bool:
        """One batched pass for utterances ending together on several satellites."""
        return True

    @property
    def supports_streaming(self) -> bool:
        """Partial transcripts while the person speaks (see `WhisperStream`)."""
        return True

    @property
    def model(self) -> Whisper:
        """The loaded model (after `load()`)."""
        if self._model is None:
            raise AsrError("not_loaded", "WhisperTranscriber.load() was not called")
        return self._model

    def load(self) -> None:
        """Find/download the checkpoint, load it, build the prompt and warm up."""
        from whisper.tokenizer import LANGUAGES, get_tokenizer

        started = time.monotonic()
        self.device = pick_device(self.config.device)
        self.fp16 = self.device.startswith("cuda") and self.config.compute == "fp16"
        if self.config.compute == "fp16" and not self.fp16:
            log.info("whisper: fp16 needs a GPU; computing in fp32 on %s", self.device)
        name = self.config.model or (
            DEFAULT_GPU_MODEL if self.device.startswith("cuda") else DEFAULT_CPU_MODEL
        )
        self.model_path = resolve_checkpoint(name, self.cache_dir)
        model = load_checkpoint(self.model_path, self.device, self.fp16)
        language = self.config.language.lower()
        if not model.is_multilingual:
            if language not in ("en", "auto"):
                raise AsrError(
                    "language_unsupported",
                    f"{self.model_path.name} is English-only; asr.language is {language!r}",
                )
            language = "en"
        if language != "auto" and language not in LANGUAGES:
            raise AsrError(
                "language_unsupported",
                f"asr.language {language!r} is not a Whisper language code (or 'auto')",
            )
        self.language = None if language == "auto" else language
        self._tokenizer = get_tokenizer(
            model.is_multilingual, num_languages=model.num_languages,
            language=self.language or "en", task="transcribe",
        )
        self._model = model
        self.refresh_prompt()
        self.refresh_judge()
        silence = bytes(SAMPLE_RATE * SAMPLE_WIDTH)
        self.decode_batch([silence], max_tokens=4)  # warm-up: allocations, kernels
        if self.device.startswith("cuda") and self.config.max_batch > 1:
            # the first pass at a new batch shape picks its GPU kernels: do it now
            self.decode_batch([silence] * self.config.max_batch, max_tokens=2)
        log.info(
            "whisper: %s on %s (%s, language %s, prompt %d tokens) ready in %.0f ms",
            self.model_path, self.device, "fp16" if self.fp16 else "fp32",
            self.language or "auto", len(self.prompt_tokens),
            (time.monotonic() - started) * 1000,
        )

    def reload(self, intents: AsrIntents) -> None:
        """Use new intents: rebuild the vocabulary prompt."""
        self.intents = intents
        if self._tokenizer is not None:
            self.refresh_prompt()
        self.refresh_judge()

    def refresh_judge(self) -> None:
        """Rebuild the completion judge of partial transcripts from the intents."""
        from voiced.asr.text_judge import TextJudge

        self.judge = TextJudge(self.intents.intents) if self.intents is not None else None

    def refresh_prompt(self) -> None:
        """Rebuild the initial prompt from the intents' vocabulary (after a reload)."""
        words: frozenset[str] = frozenset()
        if self.intents is not None:
            # a configured language uses its own sentences; detection any language's
            words = (self.intents.words_for(self.language) if self.language
                     else self.intents.all_words())
        text, tokens = build_prompt(words, self._tokenizer.encode, self.prompt_max_tokens)
        self.prompt_text, self.prompt_tokens = text, tokens
        if text:
            log.debug("whisper prompt (%d tokens): %s", len(tokens), text)

    def decoding_options(self, max_tokens: int | None = None) -> Any:
        """The `whisper.DecodingOptions` used for every decode."""
        import whisper

        suppress: str | list[int] = "-1"
        if self.forced_tokens:
            suppress = [-1, self._tokenizer.eot]
        return whisper.DecodingOptions(
            task="transcribe",
            language=self.language,
            temperature=0.0,
            sample_len=self.forced_tokens or max_tokens or self.max_tokens,
            prompt=list(self.prompt_tokens) or None,
            suppress_tokens=suppress,
            without_timestamps=True,
            fp16=self.fp16,
        )

    def log_mel(self, pcms: Sequence[bytes]) -> torch.Tensor:
        """Log-Mel spectrograms (batch, n_mels, 100 × window) on the model's device.

        The same computation as `whisper.log_mel_spectrogram(pad_or_trim(audio))` for
        each utterance (with the 30-second window); the dynamic-range floor is taken per
        utterance, so batching does not change any utterance's input. On a GPU all rows go
        through one STFT; on the CPU row by row, which keeps the working set in cache
        (several times faster there).
        """
        import numpy as np
        import torch
        from whisper.audio import HOP_LENGTH, N_FFT, mel_filters

        n_samples = self.window_s * SAMPLE_RATE
        audio = np.zeros((len(pcms), n_samples), dtype=np.float32)
        for row, pcm in enumerate(pcms):
            usable = len(pcm) - len(pcm) % SAMPLE_WIDTH
            samples = np.frombuffer(pcm[:usable], dtype="<i2")[:n_samples]
            audio[row, : len(samples)] = samples.astype(np.float32) / 32768.0
        x = torch.from_numpy(audio).to(self.device)
        window = torch.hann_window(N_FFT, device=x.device)
        filters = mel_filters(x.device, self.model.dims.n_mels)

        def rows(part: torch.Tensor) -> torch.Tensor:
            stft = torch.stft(part, N_FFT, HOP_LENGTH, window=window, return_complex=True)
            log_spec = torch.clamp(filters @ stft[..., :-1].abs() ** 2, min=1e-10).log10()
            floor = log_spec.amax(dim=(-2, -1), keepdim=True) - 8.0
            return (torch.maximum(log_spec, floor) + 4.0) / 4.0

        if x.device.type == "cuda":
            return rows(x)
        return torch.cat([rows(x[i : i + 1]) for i in range(len(pcms))])

    def encode(self, mels: torch.Tensor) -> torch.Tensor:
        """The encoder's output for a batch of mels (one pass).

        With Whisper's 30-second window this is `model.encoder`. A shorter window
        (`asr.encoder_window_s`) runs the same layers over fewer frames, with the first
        part of the positional embedding: the encoder's work shrinks in proportion.
        """
        import torch
        import torch.nn.functional as F

        encoder = self.model.encoder
        mels = mels.to(encoder.conv1.weight.dtype)
        with torch.no_grad():
            if self.window_s == WINDOW_SECONDS:
                return encoder(mels)  # type: ignore[no-any-return]
            x = F.gelu(encoder.conv2(F.gelu(encoder.conv1(mels)))).permute(0, 2, 1)
            x = (x + encoder.positional_embedding[: x.shape[1]]).to(x.dtype)
            for block in encoder.blocks:
                x = block(x)
            return encoder.ln_post(x)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def _encoded_length(self, frames: int) -> Iterator[None]:
        """While decoding, the model's `n_audio_ctx` is the encoded length: whisper takes
        input of shape (n_audio_ctx, n_audio_state) as encoder output (and skips its
        encoder, in decoding and in language detection). Only one decode uses the model
        at a time (`ModelGate`), so nothing else sees the change."""
        model = self.model
        dims = model.dims
        if frames == dims.n_audio_ctx:
            yield
            return
        model.dims = dataclasses.replace(dims, n_audio_ctx=frames)
        try:
            yield
        finally:
            model.dims = dims

    def _decode(self, pcms: Sequence[bytes], max_tokens: int | None) -> list[WhisperResult]:
        import whisper

        out: list[WhisperResult] = []
        step = max(1, self.config.max_batch)
        for start in range(0, len(pcms), step):
            features = self.encode(self.log_mel(pcms[start : start + step]))
            with self._encoded_length(features.shape[1]):
                results = whisper.decode(self.model, features,
                                         self.decoding_options(max_tokens))
            out.extend(
                WhisperResult(
                    text=r.text,
                    token_ids=tuple(r.tokens),
                    language=r.language,
                    avg_logprob=float(r.avg_logprob),
                    no_speech_prob=float(r.no_speech_prob),
                )
                for r in results
            )
        return out

    def decode_batch(
        self, pcms: Sequence[bytes], max_tokens: int | None = None
    ) -> list[WhisperResult]:
        """Decode utterances (internal-format PCM) in batches of `asr.max_batch`."""
        if not pcms:
            return []
        self.gate.acquire_final()
        try:
            return self._decode(pcms, max_tokens)
        finally:
            self.gate.release_final()

    def try_decode_partial(self, pcm: bytes) -> WhisperResult | None:
        """Decode `pcm` unless the model is busy or a final is waiting (then None)."""
        if not self.gate.try_acquire_partial():
            return None
        try:
            self.partial_decodes += 1
            return self._decode([pcm], None)[0]
        finally:
            self.gate.release_partial()

    def to_transcript(self, result: WhisperResult) -> Transcript:
        """Map whisper's output to a `Transcript` (confidence = exp(avg_logprob))."""
        confidence = math.exp(result.avg_logprob) if math.isfinite(result.avg_logprob) else 0.0
        no_speech = result.no_speech_prob if math.isfinite(result.no_speech_prob) else 0.0
        return Transcript(
            text=result.text,
            confidence=min(1.0, max(0.0, confidence)),
            language=result.language,
            tokens=tuple(result.text.split()),
            no_speech_prob=no_speech,
            is_speech=bool(result.text) and no_speech <= self.no_speech_threshold,
        )

    def transcribe_batch(self, pcms: Sequence[bytes]) -> list[Transcript]:
        """Transcribe several utterances in one batched encoder and decoder pass."""
        return [self.to_transcript(r) for r in self.decode_batch(pcms)]

    def transcribe(self, pcm: bytes) -> Transcript:
        """Transcribe one utterance (a batch of one)."""
        return self.transcribe_batch([pcm])[0]

    def start_stream(self) -> AsrStream:
        """A stream with cost-capped partial transcripts; see `WhisperStream`."""
        from voiced.asr.whisper_stream import WhisperStream

        return WhisperStream(self)
