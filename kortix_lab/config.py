"""Settings from the environment, with the offline defaults.

One small object, read once: the CLI and workers take it from the environment;
the Jupyter server extension will map its traitlets onto the same fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "scripted/demo"


def default_store_path() -> str:
    return os.environ.get("KORTIX_LAB_STORE") or str(Path.home() / ".kortix_lab" / "store.duckdb")


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc


@dataclass(slots=True)
class Settings:
    store: str = field(default_factory=default_store_path)
    model: str = field(default_factory=lambda: os.environ.get("KORTIX_LAB_MODEL", DEFAULT_MODEL))
    fallback_model: str | None = field(
        default_factory=lambda: os.environ.get("KORTIX_LAB_FALLBACK_MODEL") or None)
    api_base: str | None = field(default_factory=lambda: os.environ.get("KORTIX_LAB_API_BASE")
                                 or None)
    max_parallel_runs: int = field(default_factory=lambda: _int_env("KORTIX_LAB_MAX_PARALLEL", 3))
    max_iterations: int = field(default_factory=lambda: _int_env("KORTIX_LAB_MAX_ITERATIONS", 25))
    llm_retries: int = field(default_factory=lambda: _int_env("KORTIX_LAB_LLM_RETRIES", 2))
    sandbox: str = field(default_factory=lambda: os.environ.get("KORTIX_LAB_SANDBOX", "local"))


@dataclass(slots=True)
class SharedSettings:
    """The shared deployment's settings (servers and workers read the same variables).

    Both URLs set means shared: records in Postgres, runs queued on Redis for
    ``kortix-lab worker`` processes. See docs/shared-deployment.md.
    """

    database_url: str | None = field(
        default_factory=lambda: os.environ.get("KORTIX_LAB_DATABASE_URL") or None)
    redis_url: str | None = field(
        default_factory=lambda: os.environ.get("KORTIX_LAB_REDIS_URL") or None)
    # Keys (and the queue's namespace) start with this: deployments can share a Redis.
    redis_prefix: str = field(
        default_factory=lambda: os.environ.get("KORTIX_LAB_REDIS_PREFIX", "kortix:"))
    # Whose rows a server reads and writes (row-level security on Supabase).
    account_id: str | None = field(
        default_factory=lambda: os.environ.get("KORTIX_LAB_ACCOUNT_ID") or None)
    # A run's executor must renew its lease within this; a dead one's runs are swept
    # about this long after it died.
    lease_s: float = field(default_factory=lambda: _float_env("KORTIX_LAB_LEASE_S", 30.0))
    sweep_interval_s: float = field(
        default_factory=lambda: _float_env("KORTIX_LAB_SWEEP_INTERVAL_S", 10.0))
    # Dramatiq re-delivers a dead worker's unfinished messages after this.
    queue_heartbeat_s: float = field(
        default_factory=lambda: _float_env("KORTIX_LAB_QUEUE_HEARTBEAT_S", 60.0))
    # A queued run no worker took within this has its message sent again (it may have
    # been lost with a Redis restart); duplicates are harmless.
    resend_after_s: float = field(
        default_factory=lambda: _float_env("KORTIX_LAB_RESEND_AFTER_S", 120.0))
    # Runs per account across every server and worker (queued + running).
    max_runs_per_account: int = field(
        default_factory=lambda: _int_env("KORTIX_LAB_MAX_RUNS_PER_ACCOUNT", 50))

    @property
    def enabled(self) -> bool:
        return bool(self.database_url and self.redis_url)

    def check(self) -> None:
        """Raise ``ConfigError`` unless both URLs are set and the numbers make sense."""
        from .agentpress.errors import ConfigError

        missing = [name for name, value in (("KORTIX_LAB_DATABASE_URL", self.database_url),
                                            ("KORTIX_LAB_REDIS_URL", self.redis_url))
                   if not value]
        if missing:
            raise ConfigError(f"the shared deployment needs {' and '.join(missing)} "
                              "(a postgresql:// and a redis:// URL)")
        if self.lease_s <= 0 or self.sweep_interval_s <= 0 or self.queue_heartbeat_s <= 0 \
                or self.resend_after_s <= 0:
            raise ConfigError("lease, sweep interval, queue heartbeat and resend delay must "
                              "be positive")
        if self.max_runs_per_account < 1:
            raise ConfigError("KORTIX_LAB_MAX_RUNS_PER_ACCOUNT must be at least 1")
