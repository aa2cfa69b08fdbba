"""A shared deployment for server tests: its own database and Redis prefix, and real workers.

``Deployment`` names one (a Postgres database of its own, so no other test's
sweeper judges its runs, and a unique Redis key prefix); ``Worker`` is a real
``kortix-lab worker`` process group on it. Scenario files for the scripted
model are written into a directory the workers read (``KORTIX_LAB_SCENARIO_DIR``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

START_TIMEOUT = 90.0

# Paced like a remote model, so a test can act while the run goes on.
SCENARIOS = {
    # ≈ 2.5 s of small deltas: streams relayed while the run is live.
    "drip": "chunk_size: 3\nchunk_delay_ms: 40\nturns: []\n"
            "fallback: \"" + " ".join(f"w{i:02d}" for i in range(60)) + "\"\n",
    # ≈ 60 s: a run that is still going whenever a test looks (stopped by the test).
    "hold": "chunk_size: 2\nchunk_delay_ms: 300\nturns: []\n"
            "fallback: \"" + "x" * 400 + "\"\n",
}


@dataclass
class Deployment:
    database_url: str
    redis_url: str
    prefix: str
    scenarios: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a worker (or server) of this deployment."""
        env = {**os.environ, "KORTIX_LAB_DATABASE_URL": self.database_url,
               "KORTIX_LAB_REDIS_URL": self.redis_url, "KORTIX_LAB_REDIS_PREFIX": self.prefix,
               "KORTIX_LAB_SCENARIO_DIR": str(self.scenarios),
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true",
               "PYTHONUNBUFFERED": "1", **extra}
        for name in ("KORTIX_LAB_ACCOUNT_ID", "KORTIX_LAB_SERVER_URL", "KORTIX_LAB_TOKEN"):
            env.pop(name, None)
        return env

    def server_traits(self, account_id: str, **overrides: Any) -> dict[str, Any]:
        """``KortixLabApp`` traits of a server of this deployment."""
        return {"database_url": self.database_url, "redis_url": self.redis_url,
                "redis_prefix": self.prefix, "account_id": account_id,
                "default_model": "scripted/echo", **overrides}


def make_deployment(admin_url: str, redis_url: str, tmp: Path) -> Deployment:
    from tests.support.services import create_database

    scenarios = tmp / "scenarios"
    scenarios.mkdir(parents=True, exist_ok=True)
    for name, text in SCENARIOS.items():
        (scenarios / f"{name}.yaml").write_text(text)
    return Deployment(create_database(admin_url), redis_url,
                      f"kortix-test:{uuid.uuid4().hex[:12]}:", scenarios)


def remove_deployment(admin_url: str, deployment: Deployment) -> None:
    import redis

    from tests.support.services import drop_database

    drop_database(admin_url, deployment.database_url)
    client = redis.Redis.from_url(deployment.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{deployment.prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class Worker:
    """``kortix-lab worker`` in a process group of its own (so a test can kill it whole)."""

    def __init__(self, deployment: Deployment, log_path: Path, *, processes: int = 1,
                 threads: int = 8, **env: str) -> None:
        self.deployment = deployment
        self.log_path = log_path
        self.processes = processes
        self.threads = threads
        self.extra_env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        command = [str(Path(sys.executable).with_name("kortix-lab")), "worker",
                   "--processes", str(self.processes), "--threads", str(self.threads),
                   "--grace", "2"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(command, env=self.deployment.env(**self.extra_env),
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"kortix-lab worker exited with {self.proc.returncode}:\n"
                            f"{self.log()}")
            if len(self.owners()) >= self.processes:
                return self
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"kortix-lab worker was not ready in {START_TIMEOUT:.0f} s:\n{self.log()}")

    def owners(self) -> list[str]:
        """The run owners (``host:pid:start``) of its worker processes, once ready."""
        return re.findall(r"kortix-lab worker (\S+) ready", self.log())

    def pids(self) -> set[int]:
        return {int(owner.rsplit(":", 2)[1]) for owner in self.owners()}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole group: no drain, no final status — a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.proc.poll() is not None:
            with contextlib.suppress(ProcessLookupError):  # children that outlived it
                os.killpg(self.proc.pid, signal.SIGKILL)


async def stop_account_runs_async(deployment: Deployment, account_id: str,
                                  reason: str = "the test ended") -> None:
    """Stop whatever the account still has queued or running (frees the workers' threads):
    recorded on the run in Postgres and sent on the control channel, as a server does."""
    from kortix_lab.shared.control import RedisControl
    from kortix_lab.store.postgres_store import PostgresStore

    store = PostgresStore(deployment.database_url, account_id=account_id, min_size=0)
    control = RedisControl(deployment.redis_url, prefix=deployment.prefix)
    try:
        runs = await asyncio.to_thread(store.list_runs, statuses=["queued", "running"])
        for run in runs:
            await asyncio.to_thread(store.record_stop, run.run_id, reason)
            await control.stop(run.run_id, reason)
    finally:
        await control.aclose()
        store.close()


def stop_account_runs(deployment: Deployment, account_id: str,
                      reason: str = "the test ended") -> None:
    asyncio.run(stop_account_runs_async(deployment, account_id, reason))
