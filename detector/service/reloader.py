"""Configuration reload of the running service (``POST /-/reload`` and SIGHUP).

`ConfigReloader` loads, validates and applies a fresh configuration: the runner swaps
its pipelines (`Runner.reload`), the security policy and log level follow; the settings
in `RESTART_ONLY` keep their running values (the answer lists them under
``restart_required``). A refused reload leaves everything as it was.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from detector.service.auth import SecurityPolicy, check_exposure
from detector.service.config_model import Config, ConfigError
from detector.service.runner import Runner
from exporters.selfmetrics import AdminMetrics

log = logging.getLogger("csf.service")

RESTART_ONLY: tuple[str, ...] = ("host", "port", "data_dir", "state_url")
"""Settings a reload cannot change (the listener and the state database stay)."""


def security_policy(config: Config) -> SecurityPolicy:
    """What the security middleware enforces for `config`."""
    return SecurityPolicy(
        token=config.auth_token, max_body_bytes=config.max_body_bytes, protect_reads=config.protect_reads
    )


class ConfigReloader:
    """Calling it reloads the configuration: (HTTP status, body) of ``POST /-/reload``.

    `state` (the app's state) gets the applied configuration as ``state.config``;
    `policy` is the security policy of the current configuration. `loader` None: every
    reload answers 409; `insecure` is the ``--insecure`` flag a reload is checked against.
    """

    def __init__(
        self,
        state: Any,
        runner: Runner,
        metrics: AdminMetrics,
        config: Config,
        *,
        loader: Callable[[], Config] | None,
        insecure: bool,
    ) -> None:
        self.state = state
        self.runner = runner
        self.metrics = metrics
        self.config = config
        self.policy = security_policy(config)
        self.loader = loader
        self.insecure = insecure
        self._lock = threading.Lock()

    def __call__(self) -> tuple[int, dict[str, Any]]:
        """Load, validate and apply a fresh configuration: (HTTP status, body)."""
        with self._lock:
            if self.loader is None:
                return 409, {"status": "error", "error": "reload is not available: no configuration source"}
            old = self.config
            try:
                new = self.loader()
                check_exposure(new.host, new.auth_token is not None, self.insecure)
                restart = [key for key in RESTART_ONLY if getattr(new, key) != getattr(old, key)]
                effective = replace(new, **{key: getattr(old, key) for key in RESTART_ONLY})
                result = self.runner.reload(effective)
            except (ConfigError, ValueError) as exc:
                self.metrics.reloaded(False)
                log.error(
                    "configuration reload refused; the running configuration stays", extra={"error": str(exc)}
                )
                return 400, {"status": "error", "error": str(exc)}
            except Exception as exc:
                self.metrics.reloaded(False)
                log.exception("configuration reload failed; the running configuration stays")
                return 500, {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            self._apply(effective, restart)
            return 200, {"status": "success", "pipelines": result.to_dict(), "restart_required": restart}

    def _apply(self, effective: Config, restart: list[str]) -> None:
        """Make `effective` the running configuration (the runner has reloaded it already)."""
        self.config = effective
        self.state.config = effective
        self.policy = security_policy(effective)
        logging.getLogger().setLevel(effective.log_level.upper())
        self.metrics.reloaded(True)
        if restart:
            log.warning(
                "settings that need a restart were not applied", extra={"settings": ",".join(restart)}
            )
        log.info(
            "configuration reloaded",
            extra={"config": effective.path or "-", "auth": effective.auth_token_origin or "none"},
        )


__all__ = ["RESTART_ONLY", "ConfigReloader", "security_policy"]
