"""`csf serve`: run the detector service (`detector.service.app`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
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


def build_config(args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    """Config from ``--config`` (or CSF_CONFIG), the environment and the other flags."""
    from detector.service.config import ENV_VARS, load_config

    path = args.config or env.get("CSF_CONFIG") or None
    overrides = {key: getattr(args, key, None) for key in ENV_VARS}
    return load_config(path, env, overrides)


def run(args: argparse.Namespace) -> int:
    """``csf serve``: 0 after a graceful shutdown, 2 on configuration errors, 1 when serving failed."""
    from detector.service.app import serve
    from detector.service.auth import check_exposure
    from detector.service.config import ConfigError

    try:
        config = build_config(args, os.environ)
        check_exposure(config.host, config.auth_token is not None, args.insecure)
    except (ConfigError, ValueError) as exc:
        print(f"csf serve: error: {exc}", file=sys.stderr)
        return 2
    return serve(config, loader=lambda: build_config(args, os.environ), insecure=args.insecure)
