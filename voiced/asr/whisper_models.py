"""Whisper checkpoints: find or download them, load them on the right device and precision.

`asr.model` is either a path to a checkpoint file (or to a folder holding `model.pt`, as
`voiced finetune whisper` writes; loaded with no network) or one of the
official model names (`tiny`, `base`, `small`, `medium`, `large-v3`, `large-v3-turbo`, ...),
which is downloaded once into `<state_dir>/models/whisper/` and checked against the SHA-256
in its official URL. `VOICED_WHISPER_BASE_URL` points downloads at a mirror that keeps the
official layout (`<base>/<sha256>/<name>.pt`).

Random-weight checkpoints with the real dimensions (`write_random_checkpoint`) let the
tests and `voiced bench asr` exercise the real loader and the real architecture where no
machine can reach a model hub.

torch and whisper are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voiced.errors import AsrError

if TYPE_CHECKING:
    from whisper.model import Whisper

log = logging.getLogger(__name__)

BASE_URL_ENV = "VOICED_WHISPER_BASE_URL"
"""Environment variable: a mirror of the official download folder (same layout)."""
DOWNLOAD_TIMEOUT_S = 30.0
"""Socket timeout of a model download (per read, not for the whole file)."""
DEFAULT_GPU_MODEL = "large-v3-turbo"
"""Model used when `asr.model` is unset and a GPU is used."""
DEFAULT_CPU_MODEL = "base"
"""Model used when `asr.model` is unset and the CPU is used."""

_ENC = {"n_mels": 80, "n_audio_ctx": 1500, "n_vocab": 51865, "n_text_ctx": 448}
MODEL_DIMS: dict[str, dict[str, int]] = {
    "tiny": {**_ENC, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
             "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4},
    "base": {**_ENC, "n_audio_state": 512, "n_audio_head": 8, "n_audio_layer": 6,
             "n_text_state": 512, "n_text_head": 8, "n_text_layer": 6},
    "small": {**_ENC, "n_audio_state": 768, "n_audio_head": 12, "n_audio_layer": 12,
              "n_text_state": 768, "n_text_head": 12, "n_text_layer": 12},
    "medium": {**_ENC, "n_audio_state": 1024, "n_audio_head": 16, "n_audio_layer": 24,
               "n_text_state": 1024, "n_text_head": 16, "n_text_layer": 24},
    "large-v3": {**_ENC, "n_mels": 128, "n_vocab": 51866, "n_audio_state": 1280,
                 "n_audio_head": 20, "n_audio_layer": 32, "n_text_state": 1280,
                 "n_text_head": 20, "n_text_layer": 32},
    "large-v3-turbo": {**_ENC, "n_mels": 128, "n_vocab": 51866, "n_audio_state": 1280,
                       "n_audio_head": 20, "n_audio_layer": 32, "n_text_state": 1280,
                       "n_text_head": 20, "n_text_layer": 4},
}
"""The dimensions of the official checkpoints (for random-weight stand-ins)."""


def official_models() -> dict[str, str]:
    """Official model name → download URL (from the installed openai-whisper)."""
    import whisper

    return dict(whisper._MODELS)


def model_url(name: str) -> str:
    """The URL `name` downloads from, honouring the `VOICED_WHISPER_BASE_URL` mirror."""
    url = official_models()[name]
    base = os.environ.get(BASE_URL_ENV)
    if base:
        url = base.rstrip("/") + "/" + "/".join(url.split("/")[-2:])
    return url


def _how_to_get(name: str, target: Path) -> str:
    return (
        f"download it on a machine with internet access ({official_models()[name]}), copy it "
        f"to {target} (or anywhere) and set asr.model to its path; or set "
        f"{BASE_URL_ENV} to a mirror of the official download folder"
    )


def resolve_checkpoint(
    model: str, cache_dir: Path, *, timeout_s: float = DOWNLOAD_TIMEOUT_S, progress: bool = True
) -> Path:
    """Return a local checkpoint file for `model` (a path or an official name).

    A name is looked up in `cache_dir`, then in openai-whisper's own cache
    (`$XDG_CACHE_HOME/whisper`), and downloaded into `cache_dir` when in neither.
    Raises AsrError `model_unavailable` (no such file, download impossible),
    `model_checksum` (download corrupted) or `model_unknown` (neither a file nor a name).
    """
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.is_dir() and (path / "model.pt").is_file():  # `voiced finetune whisper --out`
        return path / "model.pt"
    names = official_models()
    if model not in names:
        if path.suffix or os.sep in model or path.exists():
            raise AsrError(
                "model_unavailable", f"asr.model {model!r}: no such checkpoint file"
            )
        raise AsrError(
            "model_unknown",
            f"asr.model {model!r} is neither a checkpoint file nor a Whisper model name "
            f"({', '.join(names)})",
        )
    filename = names[model].rsplit("/", 1)[-1]
    target = cache_dir / filename
    if target.is_file():
        return target
    whisper_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper"
    if (whisper_cache / filename).is_file():
        log.info("using whisper's cached %s", whisper_cache / filename)
        return whisper_cache / filename
    url = model_url(model)
    sha256 = names[model].split("/")[-2]
    log.info("downloading whisper model %s from %s to %s", model, url, target)
    try:
        return download(url, target, sha256, timeout_s=timeout_s, progress=progress)
    except AsrError as exc:
        raise AsrError(exc.code, f"{exc.message}; {_how_to_get(model, target)}") from exc


def download(
    url: str,
    target: Path,
    sha256: str | None,
    *,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
    progress: bool = True,
) -> Path:
    """Download `url` to `target` atomically (via `target.part`), checking its SHA-256.

    Progress goes to stderr. Raises AsrError `model_unavailable` when the download fails
    and `model_checksum` when the bytes do not match `sha256`.
    """
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as src, part.open("wb") as out:
            total = int(src.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="iB", unit_scale=True, unit_divisor=1024,
                      desc=target.name, disable=not progress, file=sys.stderr) as bar:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise AsrError("model_unavailable", f"cannot download {url}: {reason}") from exc
    if sha256 and digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise AsrError(
            "model_checksum", f"{url}: SHA-256 {digest.hexdigest()} does not match {sha256}"
        )
    os.replace(part, target)
    return target


def pick_device(requested: str) -> str:
    """`auto` → `cuda` when torch sees a GPU, else `cpu`; `cuda` without a GPU is an error."""
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    if requested == "cuda" and not has_cuda:
        raise AsrError(
            "device_unavailable",
            f"asr.device is cuda but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}); set asr.device to auto or cpu",
        )
    return requested


def load_checkpoint(path: Path, device: str, fp16: bool) -> Whisper:
    """Load a checkpoint through `whisper.load_model`, in eval mode, on `device`.

    With `fp16`, weights are converted to half precision once (LayerNorms stay fp32, as
    whisper's LayerNorm computes in fp32), instead of whisper casting fp32 weights on
    every forward pass.
    """
    import torch
    import whisper

    try:
        model = whisper.load_model(str(path), device=device)
    except Exception as exc:  # torch.load and load_state_dict fail in many ways
        raise AsrError(
            "model_invalid", f"cannot load Whisper checkpoint {path}: {exc}"
        ) from exc
    model.eval()
    if fp16:
        model.half()
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.float()
    return model


def write_random_checkpoint(
    dims: str | dict[str, int], path: Path, *, seed: int = 0, fp16: bool = True,
    scale: float = 2.0,
) -> Path:
    """Write a checkpoint with random weights in the format `whisper.load_model` reads.

    `dims` is a size from `MODEL_DIMS` or a dict of `ModelDimensions` fields. Weights are
    normal with std `scale / sqrt(fan_in)` (embeddings: std `scale`), so the decoder's
    output depends on the audio; LayerNorms are identity. Saved in fp16 like the official
    files unless `fp16` is False.
    """
    import torch
    from whisper.model import ModelDimensions, Whisper

    fields: dict[str, int] = MODEL_DIMS[dims] if isinstance(dims, str) else dict(dims)
    model_dims = ModelDimensions(**fields)
    generator = torch.Generator().manual_seed(seed)
    model = Whisper(model_dims)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.fill_(1.0 if name.endswith(("ln.weight", "ln_post.weight")) else 0.0)
            else:
                std = scale if "embedding" in name else scale / param.shape[-1] ** 0.5
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    if fp16:
        model.half()
    state: dict[str, Any] = {"dims": fields, "model_state_dict": model.state_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
