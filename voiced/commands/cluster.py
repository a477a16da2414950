"""`voiced cluster serve|delete|token`: voiced's Whisper on a Ray Serve cluster.

    voiced cluster token                      a new random bearer token (put it in
                                              VOICED_CLUSTER_TOKEN for both sides)
    voiced cluster serve --address HEAD:6379 --model large-v3-turbo --replicas 2 \\
        --gpus-per-replica 1 --max-batch 16 --batch-wait-ms 30 --http-host 192.168.1.20
    voiced cluster delete --address HEAD:6379

Run on a node of the cluster (a short-lived Ray driver; with Ray's token authentication
on, RAY_AUTH_MODE=token and the Ray token must be in its environment or ~/.ray/auth_token).
Needs the extra `voiced[cluster]` on every node. See docs/cluster.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add `voiced cluster`."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "cluster", help="deploy voiced's Whisper on a Ray Serve cluster",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = parser.add_subparsers(dest="cluster", metavar="ACTION")
    serve = cmds.add_parser("serve", help="deploy (or update) the ASR application")
    serve.add_argument("--address", help="Ray address HOST:PORT (default: RAY_ADDRESS or "
                                         "the cluster this node belongs to)")
    serve.add_argument("--app", default="voiced-asr", help="Serve application and route name")
    serve.add_argument("--model", required=True, help="whisper model name or checkpoint "
                                                      "path (the same path on every node)")
    serve.add_argument("--state-dir", type=Path, default=Path("state"),
                       help="model cache folder on the nodes (default ./state)")
    serve.add_argument("--replicas", type=int, default=1)
    serve.add_argument("--gpus-per-replica", type=float, default=0.0,
                       help="1: one replica per GPU; 0: CPU replicas")
    serve.add_argument("--cpus-per-replica", type=float, default=1.0)
    serve.add_argument("--max-batch", type=int, default=16)
    serve.add_argument("--batch-wait-ms", type=float, default=30.0,
                       help="how long a replica waits to fill a batch")
    serve.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    serve.add_argument("--compute", choices=["fp16", "fp32"], default="fp16")
    serve.add_argument("--max-tokens", type=int, default=128)
    serve.add_argument("--forced-tokens", type=int, help=argparse.SUPPRESS)  # benchmarks
    serve.add_argument("--http-host", default="127.0.0.1",
                       help="where Serve's HTTP proxies listen (default loopback)")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--token-env", default="VOICED_CLUSTER_TOKEN",
                       help="environment variable holding the bearer token")
    serve.add_argument("--no-token", action="store_true",
                       help="no bearer token (refused unless --http-host is loopback)")
    serve.set_defaults(func=_serve)
    remove = cmds.add_parser("delete", help="remove the ASR application")
    remove.add_argument("--address")
    remove.add_argument("--app", default="voiced-asr")
    remove.set_defaults(func=_delete)
    token = cmds.add_parser("token", help="print a new random bearer token")
    token.set_defaults(func=_token)

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=usage)


def _token(_args: argparse.Namespace) -> int:
    print(secrets.token_urlsafe(32))
    return 0


def _fail(message: str) -> int:
    print(f"voiced cluster: {message}", file=sys.stderr)
    return 1


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    try:
        import ray  # noqa: F401
    except ImportError:
        return _fail("Ray is not installed: install the extra voiced[cluster]")
    from voiced.cluster import Placement, ServeSettings, deploy, token_digest

    if min(args.replicas, args.max_batch) < 1 or args.batch_wait_ms < 0:
        return _fail("--replicas and --max-batch must be at least 1, --batch-wait-ms >= 0")
    token = os.environ.get(args.token_env) if not args.no_token else None
    if not token and not _loopback(args.http_host):
        return _fail(f"--http-host {args.http_host} is not loopback: set {args.token_env} "
                     "(voiced cluster token makes one) so only voiced can use the cluster")
    if not token:
        print(f"voiced cluster: no bearer token ({args.token_env} unset): anyone on this "
              "machine can use the deployment", file=sys.stderr)
    if os.environ.get("RAY_AUTH_MODE") != "token":
        print("voiced cluster: RAY_AUTH_MODE is not 'token' here: Ray's token "
              "authentication is off for this driver (docs/cluster.md)", file=sys.stderr)
    model = args.model
    if Path(model).suffix == ".pt":
        model = str(Path(model).resolve())
    settings = ServeSettings(
        model=model, state_dir=str(args.state_dir.resolve()), device=args.device,
        compute=args.compute, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
        max_tokens=args.max_tokens, token_sha256=token_digest(token) if token else None,
        forced_tokens=args.forced_tokens or None)
    placement = Placement(address=args.address, app=args.app, replicas=args.replicas,
                          gpus=args.gpus_per_replica, cpus=args.cpus_per_replica,
                          http_host=args.http_host, http_port=args.http_port)
    try:
        url = deploy(settings, placement)
    except Exception as exc:  # Ray's own errors: unreachable, refused, unschedulable
        return _fail(f"deploying failed: {type(exc).__name__}: {exc}")
    print(f"voiced cluster: {args.replicas} replica(s) of {args.model} at {url} "
          f"(asr.backend: ray, asr.ray.address: "
          f"http://{args.http_host}:{args.http_port}, asr.ray.app: {args.app})", flush=True)
    return 0


def _delete(args: argparse.Namespace) -> int:
    try:
        from voiced.cluster import delete

        delete(args.address, args.app)
    except ImportError:
        return _fail("Ray is not installed: install the extra voiced[cluster]")
    except Exception as exc:
        return _fail(f"deleting failed: {type(exc).__name__}: {exc}")
    print(f"voiced cluster: removed {args.app}")
    return 0
