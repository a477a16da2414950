"""`voiced finetune whisper`: fine-tune a Whisper checkpoint on exported corrections.

The data is a `voiced dataset export` folder (either format). The base is an official
model name (downloaded into the state folder as the whisper backend does) or a checkpoint
file or folder. Training updates the chosen layers fully (`--train decoder`, the default;
`encoder`, `all`, or parameter-name prefixes), or, with `--lora-rank R`, small low-rank
adapters on the chosen layers' linear projections (W + B·A·alpha/R, B starting at zero),
merged into the weights at the end so the result is a plain Whisper checkpoint. On CUDA it
computes in fp16 (autocast, loss scaling); on a CPU in fp32, which works for tiny models.

Before the first epoch and after the last, the validation split is decoded and scored:
word error rate against the corrected transcripts, and intent accuracy with the intents
of `--config`. The result is `OUT/model.pt` (load it with `asr.model: OUT`) and
`OUT/report.json` (the scores, the loss and seconds of every epoch). After each epoch the
state is saved to `OUT/training.pt`, so an interrupted run continues with `--resume`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voiced.dataset import DatasetError, Example, read
from voiced.errors import VoicedError
from voiced.finetune_data import Inputs, autocast, batch, evaluate, loss

if TYPE_CHECKING:
    import torch
    from whisper.model import Whisper

    from voiced.intents.recognizer import IntentRecognizer

log = logging.getLogger(__name__)

MIN_TRAIN = 4
"""Fewest training utterances worth a run."""
MIN_VALIDATION = 1
MAX_GRAD_NORM = 1.0
"""Gradients are clipped to this norm (steadier steps on small data)."""
STATE_FILE = "training.pt"
MODEL_FILE = "model.pt"
REPORT_FILE = "report.json"
PARTS = {"decoder": ("decoder.",), "encoder": ("encoder.",), "all": ("",)}


class FinetuneError(VoicedError):
    """A fine-tuning run that cannot start or go on; the message says why."""

    component = "finetune"


@dataclass(frozen=True, slots=True)
class Options:
    """One run's settings (`voiced finetune whisper` flags)."""

    data: Path
    base: str
    out: Path
    epochs: int = 5
    batch_size: int = 8
    lr: float | None = None
    """Learning rate (None: 1e-5 for full fine-tuning, 1e-3 for LoRA)."""
    train: str = "decoder"
    lora_rank: int = 0
    lora_alpha: float = 16.0
    device: str = "auto"
    fp16: bool = True
    """Half precision on CUDA (ignored on a CPU)."""
    resume: bool = False
    seed: int = 0
    cache_dir: Path = Path("state/models/whisper")
    progress: bool = True

    @property
    def rate(self) -> float:
        """The learning rate used."""
        return self.lr if self.lr is not None else (1e-3 if self.lora_rank else 1e-5)

    def identity(self) -> dict[str, Any]:
        """What must match for `--resume` to continue a run."""
        return {"data": str(self.data), "base": self.base, "train": self.train,
                "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha,
                "batch_size": self.batch_size, "lr": self.rate, "seed": self.seed}


@functools.cache
def _adapter() -> type:
    """The LoRA adapter module class (torch is imported only when it is needed)."""
    import torch

    class LoRA(torch.nn.Module):
        """A frozen linear layer plus a trainable low-rank update B·A·(alpha/rank), B
        starting at zero so training starts from the base model's output."""

        def __init__(self, base: torch.nn.Linear, rank: int, alpha: float) -> None:
            super().__init__()
            self.base = base
            self.scale = alpha / rank
            device = base.weight.device
            self.lora_a = torch.nn.Parameter(
                torch.randn(rank, base.in_features, device=device) / math.sqrt(base.in_features))
            self.lora_b = torch.nn.Parameter(torch.zeros(base.out_features, rank, device=device))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            update = (x @ self.lora_a.to(x.dtype).T) @ self.lora_b.to(x.dtype).T
            return self.base(x) + update * self.scale  # type: ignore[no-any-return]

        def merged(self) -> torch.nn.Linear:
            """The base layer with the update folded into its weight."""
            with torch.no_grad():
                delta = (self.lora_b @ self.lora_a) * self.scale
                self.base.weight += delta.to(self.base.weight.dtype)
            return self.base

    return LoRA


def chosen(name: str, train: str) -> bool:
    """True when parameter `name` is in the layers `train` names."""
    prefixes = PARTS.get(train) or tuple(p.strip() for p in train.split(",") if p.strip())
    return any(name.startswith(p) for p in prefixes)


def prepare(model: Whisper, options: Options) -> list[torch.nn.Parameter]:
    """Freeze everything but the chosen layers (or add LoRA adapters to them); returns the
    parameters to train (FinetuneError when the choice names nothing)."""
    import torch

    for param in model.parameters():
        param.requires_grad_(False)
    if options.lora_rank:
        targets = [(name, module) for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and chosen(name + ".", options.train)]
        for name, module in targets:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, _adapter()(module, options.lora_rank, options.lora_alpha))
        params = [p for n, p in model.named_parameters() if "lora_" in n]
    else:
        params = [p for n, p in model.named_parameters() if chosen(n, options.train)]
    for param in params:
        param.requires_grad_(True)
    if not params:
        raise FinetuneError("nothing_to_train", f"--train {options.train!r} names no "
                            "layer (decoder, encoder, all, or parameter-name prefixes such "
                            "as decoder.blocks.3)")
    return params


def merge_lora(model: Whisper) -> None:
    """Fold every adapter into its linear layer (a plain Whisper model again)."""
    for name, module in list(model.named_modules()):
        if hasattr(module, "merged"):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.merged())


def load_data(options: Options) -> dict[str, list[Example]]:
    """Both splits, refused with a clear error when too small to learn from."""
    if not options.data.is_dir():
        raise FinetuneError("data_missing", f"--data {options.data}: no such folder (export "
                            "one with voiced dataset export)")
    try:
        parts = read(options.data)
    except (DatasetError, ValueError, KeyError) as exc:
        raise FinetuneError("data_invalid", f"--data {options.data}: {exc}") from exc
    train, held = len(parts["train"]), len(parts["validation"])
    if train < MIN_TRAIN or held < MIN_VALIDATION:
        raise FinetuneError(
            "data_too_small",
            f"{options.data} has {train} training and {held} validation utterances; "
            f"fine-tuning needs at least {MIN_TRAIN} and {MIN_VALIDATION}. Correct more "
            "utterances in the Review view and export again (a second speaker, or an "
            "unidentified voice, puts some in validation)")
    return parts


def load_base(options: Options, device: str) -> tuple[Whisper, Path, Any]:
    """The base model in fp32 on `device`, its checkpoint file and its saved dtype."""
    import torch
    import whisper

    from voiced.asr.whisper_models import resolve_checkpoint

    path = resolve_checkpoint(options.base, options.cache_dir)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        dtype = next(iter(saved["model_state_dict"].values())).dtype
        model = whisper.load_model(str(path), device=device)
    except Exception as exc:
        raise FinetuneError("base_invalid", f"--base {options.base}: cannot load {path}: "
                            f"{exc}") from exc
    return model.float(), path, dtype


def run(options: Options, recognizer: IntentRecognizer | None = None) -> dict[str, Any]:
    """Fine-tune as `options` say; returns the report (also written to OUT)."""
    import torch
    from tqdm import tqdm

    from voiced.asr.whisper_models import pick_device

    out, state_path = options.out, options.out / STATE_FILE
    if not options.resume and state_path.exists():
        raise FinetuneError("unfinished", f"{out} holds an unfinished run: --resume continues "
                            "it, or choose another --out")
    if not options.resume and (out / MODEL_FILE).exists():
        raise FinetuneError("out_exists", f"{out} already holds a fine-tuned model; choose "
                            "another --out")
    if options.resume and not state_path.exists():
        raise FinetuneError("nothing_to_resume", f"{out} has no unfinished run to resume")
    parts = load_data(options)
    device = pick_device(options.device)
    fp16 = options.fp16 and device.startswith("cuda")
    torch.manual_seed(options.seed)
    model, path, dtype = load_base(options, device)
    params = prepare(model, options)
    frozen = not any(p.requires_grad for p in model.encoder.parameters())
    inputs = Inputs(model, device, frozen)
    optimizer = torch.optim.AdamW(params, lr=options.rate, weight_decay=0.0)
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)
    report: dict[str, Any] = {"base": str(path), "data": str(options.data), "device": device,
                              "fp16": fp16, "method": f"lora r={options.lora_rank}"
                              if options.lora_rank else f"full ({options.train})",
                              "trained_parameters": sum(p.numel() for p in params),
                              "train": len(parts["train"]),
                              "validation": len(parts["validation"]), "epochs": []}
    start = 0
    if options.resume:
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state["identity"] != options.identity():
            raise FinetuneError("resume_mismatch", f"{out} was started with other settings: "
                                f"{state['identity']}")
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        report, start = state["report"], state["epoch"]
        log.info("resuming %s after epoch %d of %d", out, start, options.epochs)
    else:
        out.mkdir(parents=True, exist_ok=True)
        report["before"] = evaluate(model, parts["validation"], device, fp16, recognizer,
                                    options.batch_size, inputs)
    rng = random.Random(options.seed)
    order = list(parts["train"])
    for epoch in range(start, options.epochs):
        rng.seed(options.seed * 1000 + epoch)
        rng.shuffle(order)
        model.train()
        began, total = time.monotonic(), 0.0
        steps = range(0, len(order), options.batch_size)
        bar = tqdm(steps, desc=f"epoch {epoch + 1}/{options.epochs}", unit="batch",
                   disable=not options.progress, file=sys.stderr)
        for at in bar:
            chunk = order[at : at + options.batch_size]
            data = batch(model, chunk, device, inputs, fp16)
            optimizer.zero_grad(set_to_none=True)
            with autocast(fp16):
                value = loss(model, data)
            scaler.scale(value).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            scaler.step(optimizer)
            scaler.update()
            total += float(value.detach()) * len(chunk)
            bar.set_postfix(loss=f"{total / (at + len(chunk)):.4f}")
        bar.close()
        report["epochs"].append({"epoch": epoch + 1, "loss": round(total / len(order), 5),
                                 "seconds": round(time.monotonic() - began, 2)})
        trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        partial = state_path.with_name(STATE_FILE + ".part")  # never half a state file
        torch.save({"identity": options.identity(), "epoch": epoch + 1, "report": report,
                    "trainable": trainable, "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict()}, partial)
        partial.replace(state_path)
    merge_lora(model)
    report["after"] = evaluate(model, parts["validation"], device, fp16, recognizer,
                               options.batch_size, inputs if frozen else None)
    seconds = [e["seconds"] for e in report["epochs"]]
    report["seconds_per_epoch"] = round(sum(seconds) / len(seconds), 2) if seconds else None
    save(model, out / MODEL_FILE, dtype)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    state_path.unlink(missing_ok=True)
    return report


def save(model: Whisper, path: Path, dtype: Any) -> None:
    """A checkpoint in openai-whisper's format (what `whisper.load_model` and the backend
    read), in the base checkpoint's precision."""
    import torch

    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype)
             for k, v in model.state_dict().items()}
    partial = path.with_name(path.name + ".part")
    torch.save({"dims": dataclasses.asdict(model.dims), "model_state_dict": state}, partial)
    partial.replace(path)
