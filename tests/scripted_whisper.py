"""A Whisper checkpoint that says what it is told.

Real architecture (whisper's own `Whisper` class), saved in the format `whisper.load_model`
reads, with weights set so that greedy decoding of *any* audio detects a chosen language
and yields a chosen sentence. Tests use it to follow Whisper's output through the daemon
(detected language → that language's intent files → handler) with no model hub.

How: every decoder block's output projections are zero, so each block passes its input
through; the decoder's output at position p is then LayerNorm(token + position) times the
token embeddings. Each scripted token gets its own basis direction as its embedding, and
position p's positional embedding points (much harder) at the direction of the token that
must follow it. Position 0 (start of transcript) points at the language token, which is
what language detection reads, or at the no-speech token.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from whisper.model import ModelDimensions, Whisper
from whisper.tokenizer import get_tokenizer

DIMS = ModelDimensions(
    n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
    n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1,
)
TOKEN_SCALE = 4.0
"""Length of a scripted token's embedding (its logit dwarfs the other 51,864)."""
POSITION_SCALE = 100.0
"""Length of a positional embedding (it outweighs the token at that position)."""


def write_scripted_checkpoint(path: Path, text: str, language: str = "en",
                              no_speech: bool = False, token_scale: float = TOKEN_SCALE) -> Path:
    """A checkpoint that transcribes any audio as `text` in `language`; with `no_speech`,
    one that also judges every audio not to be speech (no-speech probability ~1; detection
    then finds no particular language: configure one). A smaller `token_scale` makes it
    less sure of each token (1.6: a confidence of about 0.85), still saying `text`.

    Decoding must run without an initial prompt (`asr.prompt_tokens: 0`) and without
    timestamps, as voiced decodes: a prompt would shift the positions.
    """
    tokenizer = get_tokenizer(True, num_languages=99, language=language, task="transcribe")
    prefix = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    script = [*prefix, *tokenizer.encode(" " + text), tokenizer.eot]
    direction = {token: i for i, token in enumerate(dict.fromkeys(
        [*script, tokenizer.no_speech]))}
    if len(direction) > DIMS.n_text_state:
        raise ValueError(f"{text!r}: too many distinct tokens for {DIMS.n_text_state} dims")
    generator = torch.Generator().manual_seed(0)
    model = Whisper(DIMS)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        decoder = model.decoder
        for block in decoder.blocks:
            for linear in (block.attn.out, block.mlp[2],
                           *([block.cross_attn.out] if block.cross_attn else [])):
                linear.weight.zero_()
                if linear.bias is not None:
                    linear.bias.zero_()
        embedding = decoder.token_embedding.weight
        for token, axis in direction.items():
            embedding[token].zero_()
            embedding[token, axis] = token_scale
        position = decoder.positional_embedding
        position.zero_()
        # the start of transcript: language detection, and the no-speech probability
        position[0, direction[tokenizer.no_speech if no_speech else script[1]]] = POSITION_SCALE
        for p in range(len(prefix) - 1, len(script) - 1):
            position[p, direction[script[p + 1]]] = POSITION_SCALE
    torch.save({"dims": asdict(DIMS), "model_state_dict": model.state_dict()}, path)
    return path
