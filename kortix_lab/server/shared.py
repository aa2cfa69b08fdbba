"""The shared deployment as a Jupyter server sees it: Postgres records, Redis streams, a queue.

With ``KortixLabApp.database_url`` and ``redis_url`` set, a server executes no
run itself. ``SharedParts`` holds what it needs instead:

* a ``PostgresStore`` scoped to the server's account (threads, messages, runs,
  agents; a run's configuration rides in its record);
* the Redis event log (any server relays any run of the account, from any
  seq), the control channel (stops and approval decisions reach the worker
  executing the run) and the run leases;
* the queue's dispatcher (``shared.queue.RunQueue``): ``start_run`` stores the
  run and sends ``(account_id, run_id)`` to ``kortix-lab worker`` processes;
* a cross-server admission gate: a short Redis lease per account, held while a
  start is checked against the account's limit and registered, so two servers
  cannot both take the account's last slot;
* a sweeper task (``shared.sweeper``): a ``running`` run whose executor died
  (its lease lapsed) is marked failed and its stream ended, even when there is
  a single worker and it is the one that died.

``shared_server`` wires these into the server's workbench, admission and
service, as ``KortixLabApp`` does (and tests that play a second server).
Nothing here is imported unless the shared deployment is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..agentpress.errors import ConfigError
from ..config import Settings, SharedSettings
from .admission import Admission
from .errors import ApiError
from .service import Service
from .workbench import ServerWorkbench

if TYPE_CHECKING:
    from ..shared.control import RedisControl
    from ..shared.locks import RedisLeaseLock
    from ..shared.queue import RunQueue
    from ..shared.redis_event_log import RedisEventLog
    from ..shared.sweeper import Sweeper
    from ..store.postgres_store import PostgresStore
    from ..tools.provider import SandboxTools

log = logging.getLogger("kortix_lab.server")

# The admission gate: held for a start's check and registration (a few store writes),
# given up after GATE_LEASE_S if its holder died, waited for at most GATE_WAIT_S.
GATE_LEASE_S = 15.0
GATE_WAIT_S = 10.0


class SharedParts:
    def __init__(self, settings: SharedSettings, account_id: str) -> None:
        from ..shared.control import RedisControl
        from ..shared.locks import RedisLeaseLock
        from ..shared.queue import RunQueue
        from ..shared.redis_event_log import RedisEventLog
        from ..store.postgres_store import PostgresStore

        settings.check()
        if not account_id:
            raise ConfigError("the shared deployment needs an account id "
                              "(KortixLabApp.account_id or $KORTIX_LAB_ACCOUNT_ID)")
        assert settings.database_url is not None and settings.redis_url is not None
        self.settings = settings
        self.account_id = account_id
        url, prefix = settings.redis_url, settings.redis_prefix
        self.store: PostgresStore = PostgresStore(settings.database_url, account_id=account_id)
        self.events: RedisEventLog = RedisEventLog(url, prefix=prefix)
        self.control: RedisControl = RedisControl(url, prefix=prefix)
        self.leases: RedisLeaseLock = RedisLeaseLock(url, prefix=prefix)
        self.queue: RunQueue = RunQueue(settings)
        self._sweeper: Sweeper | None = None
        self._sweep_stop: asyncio.Event | None = None
        self._sweep_task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        redis_url = self.settings.redis_url or ""
        return (f"{self.store.where} and Redis {redis_url.split('@')[-1]} "
                f"(prefix {self.settings.redis_prefix!r}), account {self.account_id!r}")

    def probe(self) -> str | None:
        """What does not answer at start-up (Redis, Postgres), or None. The store also
        applies missing migrations here. A service that is down now may be up for the
        next request, so this is reported, not fatal."""
        import redis

        from ..agentpress.errors import StoreError

        client = redis.Redis.from_url(self.settings.redis_url or "", socket_timeout=5,
                                      socket_connect_timeout=5)
        try:
            client.ping()
        except redis.RedisError as exc:
            return (f"Redis at {(self.settings.redis_url or '').split('@')[-1]} does not "
                    f"answer ({exc}); runs cannot start or stream until it does")
        finally:
            client.close()
        try:
            self.store.count_active_runs()
        except StoreError as exc:
            return f"{exc}; requests answer 503 until Postgres does"
        return None

    def manager_options(self) -> dict[str, Any]:
        """What the server's ``RunManager`` needs to dispatch runs instead of running them."""
        return {"event_log": self.events, "control": self.control, "leases": self.leases,
                "lease_s": self.settings.lease_s,
                "dispatch": self.queue.dispatcher(self.account_id)}

    @contextlib.asynccontextmanager
    async def admission_gate(self) -> AsyncIterator[None]:
        """One start at a time per account, across every server on this Redis."""
        key = f"admission:{self.account_id}"
        owner = f"admission:{uuid.uuid4().hex}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATE_WAIT_S
        delay = 0.002
        while not await self.leases.acquire(key, owner, GATE_LEASE_S):
            if loop.time() > deadline:
                raise ApiError(503, f"other servers are starting runs of account "
                                    f"{self.account_id!r}; try again")
            await asyncio.sleep(delay)
            delay = min(0.05, delay * 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # it lapses by itself otherwise
                await self.leases.release(key, owner)

    # ---- the sweeper ---------------------------------------------------------------------
    def start_sweeper(self, owner: str) -> None:
        """Start sweeping on the running loop (idempotent)."""
        if self._sweep_task is not None:
            return
        from ..shared.sweeper import Sweeper

        assert self.settings.database_url is not None
        # As the workers sweep (shared.worker): a lease must stay free for a whole lease
        # period (a Redis flush frees every lease for a moment) before its run is judged.
        lease_s = self.settings.lease_s
        self._sweeper = Sweeper(self.settings.database_url, lock=self.leases, log=self.events,
                                owner=f"sweeper:{owner}", grace_s=lease_s, hold_s=lease_s,
                                free_s=lease_s, resend=self.queue.resend,
                                resend_after_s=self.settings.resend_after_s)
        self._sweep_stop = asyncio.Event()
        self._sweep_task = asyncio.get_running_loop().create_task(
            self._sweeper.run(self._sweep_stop, interval_s=self.settings.sweep_interval_s),
            name="kortix-lab-server-sweeper")

    @property
    def sweeping(self) -> bool:
        return self._sweep_task is not None and not self._sweep_task.done()

    async def aclose(self) -> None:
        """Stop sweeping and close the Redis clients and the queue's broker (the store is
        closed with the workbench). Runs on workers are left alone."""
        if self._sweep_stop is not None:
            self._sweep_stop.set()
        if self._sweep_task is not None:
            with contextlib.suppress(Exception):
                await self._sweep_task
        if self._sweeper is not None:
            self._sweeper.close()
        for part in (self.events, self.control, self.leases):
            with contextlib.suppress(Exception):
                await part.aclose()
        with contextlib.suppress(Exception):
            self.queue.close()


@dataclass(slots=True)
class SharedServer:
    """One server's part of the shared deployment, wired."""

    parts: SharedParts
    workbench: ServerWorkbench
    admission: Admission
    service: Service

    async def aclose(self) -> None:
        """Close this server's side; runs on workers go on."""
        await self.workbench.manager.shutdown()
        await self.parts.aclose()
        await self.workbench.close()


def shared_server(settings: SharedSettings, account_id: str, run_settings: Settings, *,
                  sandbox: SandboxTools | None = None, sandbox_backend: str = "local",
                  daily_cost_budget: float | None = None) -> SharedServer:
    """The workbench (Postgres store of ``account_id``; a ``RunManager`` that dispatches to
    the queue and reads Redis), the account-wide admission and the service."""
    parts = SharedParts(settings, account_id)
    workbench = ServerWorkbench(run_settings, sandbox=sandbox, store=parts.store,
                                manager_options=parts.manager_options())
    admission = Admission(workbench.manager, workbench.store,
                          max_parallel=settings.max_runs_per_account,
                          daily_cost_budget=daily_cost_budget, account_id=account_id,
                          gate=parts.admission_gate)
    service = Service(workbench, admission, sandbox_backend=sandbox_backend,
                      account_id=account_id)
    return SharedServer(parts, workbench, admission, service)
