"""`csf serve`: run the detector service (`detector.service.app`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the detector service")
    serve.add_argument("--config", help="YAML config file (default: embedded simulator + default pack)")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="listen port (default 9466)")
    serve.add_argument("--data-dir", default=None, help="state directory (default ./.csf)")
    serve.add_argument("--pack", default=None, help="pack file (default: the built-in platform pack)")
    serve.add_argument("--scenario", default=None, help="simulator scenario (default: sequence)")
    serve.add_argument("--seed", type=int, default=None, help="simulator seed")
    serve.add_argument("--speed", type=float, default=None, help="play simulated time N times faster")
    serve.add_argument(
        "--evaluation-interval", default=None, help="seconds or duration between evaluations (e.g. 60s, 1m)"
    )
    serve.add_argument("--log-level", default=None, help="debug, info, warning, error")
    serve.add_argument(
        "--shard", default=None, help="I/N: evaluate only the pipelines whose name hashes to shard I of N"
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening on a non-loopback address without an auth token (CSF_AUTH_TOKEN)",
    )
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from detector.service.app import serve_cli

    return serve_cli(args)
