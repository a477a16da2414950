"""`voiced finetune whisper`: fine-tune Whisper on a `voiced dataset export` folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from voiced.errors import VoicedError


def register(sub: Any) -> None:
    """Add `voiced finetune`."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "finetune", help="fine-tune a speech model on corrected utterances")
    cmds = parser.add_subparsers(dest="finetune_command", metavar="MODEL", required=True)
    p = cmds.add_parser("whisper", help="fine-tune Whisper; load the result with asr.model: OUT")
    p.add_argument("--data", type=Path, required=True,
                   help="a voiced dataset export folder (hf or nemo)")
    p.add_argument("--base", required=True,
                   help="Whisper model name (tiny, base, small, ...) or checkpoint file/folder")
    p.add_argument("--out", type=Path, required=True, help="folder for the result")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, help="learning rate (default 1e-5; 1e-3 with LoRA)")
    p.add_argument("--train", default="decoder",
                   help="layers to train: decoder (default), encoder, all, or comma-separated "
                        "parameter-name prefixes (decoder.blocks.3,decoder.ln)")
    p.add_argument("--lora-rank", type=int, default=0,
                   help="train rank-R adapters on the chosen layers' linear projections "
                        "instead of the layers (merged into the weights at the end)")
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--fp32", action="store_true", help="no fp16 on CUDA")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", type=Path,
                   help="voiced.yaml: its intents score intent accuracy, its state_dir holds "
                        "downloaded models")
    p.add_argument("--state-dir", type=Path, help="state folder (default: from the config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_whisper)


def _whisper(args: argparse.Namespace) -> int:
    from voiced.config import load_config
    from voiced.finetune import Options, run
    from voiced.intents.catalog import load_catalog

    if args.epochs < 1 or args.batch_size < 1 or args.lora_rank < 0:
        print("voiced finetune whisper: --epochs and --batch-size must be at least 1, "
              "--lora-rank at least 0", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        state_dir = args.state_dir or config.state_dir
        recognizer = load_catalog(config)
        options = Options(
            data=args.data, base=args.base, out=args.out, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, train=args.train,
            lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, device=args.device,
            fp16=not args.fp32, resume=args.resume, seed=args.seed,
            cache_dir=state_dir / "models" / "whisper", progress=not args.no_progress)
        report = run(options, recognizer)
    except VoicedError as exc:
        print(f"voiced finetune whisper: {exc.message}", file=sys.stderr)
        return 2 if exc.component == "config" else 1
    except KeyboardInterrupt:
        print(f"voiced finetune whisper: interrupted; continue with --resume (the last "
              f"finished epoch is saved in {args.out})", file=sys.stderr)
        return 130
    summary = {k: report[k] for k in ("device", "method", "train", "validation",
                                      "seconds_per_epoch")}
    for when in ("before", "after"):
        summary[when] = {k: report[when][k] for k in ("loss", "wer", "intent_accuracy")}
    print(json.dumps({"out": str(args.out), **summary}))
    return 0
