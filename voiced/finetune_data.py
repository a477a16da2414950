"""Fine-tuning's data side: exported examples as Whisper inputs, and the evaluation.

An example becomes the log-Mel spectrogram of its audio (Whisper's 30-second window) and
the token sequence the decoder is trained to produce: the start-of-transcript sequence
with the example's language and "no timestamps", the transcript, end-of-text. The loss
covers the transcript and end-of-text only.

The evaluation decodes the validation split greedily (as voiced transcribes) and reports
the word error rate against the corrected transcripts and, with the intents loaded, the
share of utterances whose transcript is understood as the intended intent and slots (or
as nothing, for "not a command"). torch and whisper are imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voiced.dataset import Example
from voiced.teach import slots_agree, words

if TYPE_CHECKING:
    import torch
    from whisper.model import Whisper

    from voiced.intents.recognizer import IntentRecognizer

IGNORE = -100
"""Target positions that carry no loss (the prompt, padding)."""
CACHE_BYTES = 2 * 1024**3
"""Most memory kept for spectrograms and encoder outputs between epochs."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Inputs and targets for one training step."""

    audio: torch.Tensor
    """(batch, n_mels, 3000) log-Mel spectrograms, or (batch, n_audio_ctx, n_audio_state)
    encoder outputs when the encoder is frozen (`Inputs`)."""
    encoded: bool
    tokens: torch.Tensor
    """(batch, length): decoder input."""
    targets: torch.Tensor
    """(batch, length): the next token at each position, IGNORE where there is no loss."""


def tokenizer_for(model: Whisper, language: str) -> Any:
    """Whisper's tokenizer for `model` transcribing `language`."""
    from whisper.tokenizer import LANGUAGES, get_tokenizer

    code = language.split("-")[0].lower()
    if not model.is_multilingual or code not in LANGUAGES:
        code = "en"
    return get_tokenizer(model.is_multilingual, num_languages=model.num_languages,
                         language=code, task="transcribe")


def sequence(model: Whisper, example: Example) -> tuple[list[int], int]:
    """The decoder's token sequence for `example`, and how many leading tokens are prompt."""
    tokenizer = tokenizer_for(model, example.language)
    prompt = list(tokenizer.sot_sequence_including_notimestamps)
    text = " " + " ".join(example.text.split())
    return [*prompt, *tokenizer.encode(text), tokenizer.eot], len(prompt)


def mel(model: Whisper, example: Example) -> torch.Tensor:
    """The example's log-Mel spectrogram over Whisper's 30-second window."""
    import numpy as np
    import torch
    import whisper

    from voiced.review import read_kept_audio

    samples = np.frombuffer(read_kept_audio(example.audio), dtype="<i2")
    audio = torch.from_numpy(samples.astype(np.float32) / 32768.0)
    return whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), n_mels=model.dims.n_mels)


class Inputs:
    """Each example's spectrogram and, while the encoder is frozen, its encoder output,
    computed once and kept on the CPU (within `budget` bytes) instead of every epoch."""

    def __init__(self, model: Whisper, device: str, encoder_frozen: bool,
                 budget: int = CACHE_BYTES) -> None:
        self.model = model
        self.device = device
        self.encoder_frozen = encoder_frozen
        self.budget = budget
        self.used = 0
        self._kept: dict[str, torch.Tensor] = {}

    def __call__(self, examples: Sequence[Example], fp16: bool = False) -> torch.Tensor:
        """(batch, ...) inputs on the device: encoder outputs when frozen, else mels."""
        import torch

        missing = [e for e in examples if str(e.audio) not in self._kept]
        made: dict[str, torch.Tensor] = {}
        if missing:
            mels = torch.stack([mel(self.model, e) for e in missing]).to(self.device)
            if self.encoder_frozen:
                with torch.no_grad(), autocast(fp16):
                    mels = self.model.encoder(mels).float()
            for example, row in zip(missing, mels, strict=True):
                made[str(example.audio)] = row
                size = row.numel() * row.element_size()
                if self.used + size <= self.budget:
                    self._kept[str(example.audio)] = row.cpu()
                    self.used += size
        rows = [made.get(str(e.audio)) if str(e.audio) in made
                else self._kept[str(e.audio)].to(self.device) for e in examples]
        return torch.stack(rows)  # type: ignore[arg-type]


def batch(model: Whisper, examples: Sequence[Example], device: str,
          inputs: Inputs | None = None, fp16: bool = False) -> Batch:
    """Stack examples into one padded batch on `device`."""
    import torch

    sequences = [sequence(model, e) for e in examples]
    length = max(len(s) for s, _ in sequences) - 1
    limit = model.dims.n_text_ctx
    if length > limit:
        raise ValueError(f"a transcript is longer than the decoder's {limit} tokens")
    tokens = torch.full((len(examples), length), sequences[0][0][-1], dtype=torch.long)
    targets = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    for row, (seq, prompt) in enumerate(sequences):
        tokens[row, : len(seq) - 1] = torch.tensor(seq[:-1])
        # position p predicts token p + 1: the prompt's own tokens carry no loss
        targets[row, prompt - 1 : len(seq) - 1] = torch.tensor(seq[prompt:])
    inputs = inputs or Inputs(model, device, False, budget=0)
    return Batch(inputs(examples, fp16), inputs.encoder_frozen, tokens.to(device),
                 targets.to(device))


def loss(model: Whisper, data: Batch) -> torch.Tensor:
    """Mean cross-entropy of the transcript tokens (teacher forcing)."""
    import torch.nn.functional as F

    if data.encoded:
        logits = model.decoder(data.tokens, data.audio)
    else:
        logits = model(data.audio, data.tokens)
    return F.cross_entropy(logits.transpose(1, 2).float(), data.targets, ignore_index=IGNORE)


def autocast(fp16: bool) -> Any:
    """Half precision on CUDA while `fp16`; nothing otherwise."""
    import contextlib

    import torch

    if not fp16:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.float16)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edits, reference words): word-level Levenshtein distance, case and punctuation
    ignored as the intent matcher ignores them."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (r != h)))
        previous = current
    return previous[-1], len(ref)


def understood(recognizer: IntentRecognizer, example: Example, text: str) -> bool:
    """True when `text` is understood as the example's intent and slots (or, for a
    sentence that is not a command, as no intent)."""
    result = recognizer.recognize(text, {"language": example.language})
    if example.intent is None:
        return result.name is None
    return result.name == example.intent and slots_agree(result.slot_values(), example.slots)


def evaluate(model: Whisper, examples: Sequence[Example], device: str, fp16: bool,
             recognizer: IntentRecognizer | None = None, batch_size: int = 8,
             inputs: Inputs | None = None) -> dict[str, Any]:
    """Validation loss, word error rate and intent accuracy of `model` on `examples`
    (`inputs` may keep encoder outputs only while the encoder is unchanged)."""
    import torch
    import whisper

    model.eval()
    edits = total = right = 0
    losses: list[float] = []
    samples: list[dict[str, str]] = []
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start : start + batch_size])
        data = batch(model, chunk, device, inputs, fp16)
        with torch.no_grad(), autocast(fp16):
            losses.append(float(loss(model, data)) * len(chunk))
        texts: list[str] = []
        for language in dict.fromkeys(e.language for e in chunk):
            rows = [i for i, e in enumerate(chunk) if e.language == language]
            options = whisper.DecodingOptions(
                language=tokenizer_for(model, language).language, temperature=0.0,
                without_timestamps=True, fp16=fp16, sample_len=64)
            # whisper skips its encoder for input shaped like the encoder's output
            results = whisper.decode(model, data.audio[rows], options)
            texts.extend(r.text for r in results)  # type: ignore[union-attr]
        order = [i for language in dict.fromkeys(e.language for e in chunk)
                 for i, e in enumerate(chunk) if e.language == language]
        for index, text in zip(order, texts, strict=True):
            example = chunk[index]
            e, n = word_errors(example.text, text)
            edits, total = edits + e, total + n
            if recognizer is not None:
                right += understood(recognizer, example, text)
            if len(samples) < 5:
                samples.append({"said": example.text, "heard": text})
    return {"loss": round(sum(losses) / max(1, len(examples)), 5),
            "wer": round(edits / total, 4) if total else math.nan,
            "intent_accuracy": round(right / len(examples), 4)
            if recognizer is not None and examples else None,
            "samples": samples}
