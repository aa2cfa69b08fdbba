"""A worker process's host: per-account run managers over Postgres and Redis, and a sweeper.

``kortix-lab worker --processes N --threads M`` starts Dramatiq, whose worker
processes import ``shared.worker_entry``; that module builds one
``WorkerHost`` per process. Each Dramatiq message names an account and a run;
the host's manager for that account (a ``Workbench`` on a ``PostgresStore``
scoped to it, with the Redis event log, control channel and leases) executes
the run with ``RunManager.execute``.

Every worker also sweeps (``shared.sweeper``): with two or more workers, one
dying is noticed by the others within about ``2 × lease_s`` + ``sweep_interval_s``
(its lease must lapse, then stay free for a lease period: see ``shared.sweeper``).

SIGTERM: Dramatiq's worker process notices it within a second, stops taking
messages and waits for the runs in hand. The host gives them ``grace_s`` to
finish, then stops the rest with a reason (their status is ``stopped``, their
streams end), so a shutdown is never a crash and never leaves a run running. A
message that still reaches the host while it shuts down goes back to the queue
(``requeue``) for another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..agentpress.runner import RunConfig
from ..config import Settings, SharedSettings
from ..runs.owner import current_owner

if TYPE_CHECKING:
    from ..workbench import Workbench
    from .control import RedisControl
    from .locks import RedisLeaseLock
    from .redis_event_log import RedisEventLog
    from .sweeper import Sweeper

log = logging.getLogger("kortix_lab.worker")

# Sends ``(account_id, run_id)`` to the queue again (a new message).
Requeue = Callable[[str, str], Awaitable[None]]

SHUTDOWN_REASON = ("the worker executing it was shut down (SIGTERM) before the run "
                   "finished; start it again to continue")


class WorkerHost:
    def __init__(self, settings: Settings | None = None,
                 shared: SharedSettings | None = None, *, owner: str | None = None,
                 grace_s: float = 30.0, sweep: bool = True,
                 requeue: Requeue | None = None) -> None:
        from .control import RedisControl
        from .locks import RedisLeaseLock
        from .redis_event_log import RedisEventLog

        self.settings = settings or Settings()
        self.shared = shared or SharedSettings()
        self.shared.check()
        assert self.shared.redis_url is not None
        url, prefix = self.shared.redis_url, self.shared.redis_prefix
        self.events: RedisEventLog = RedisEventLog(url, prefix=prefix)
        self.control: RedisControl = RedisControl(url, prefix=prefix)
        self.leases: RedisLeaseLock = RedisLeaseLock(url, prefix=prefix)
        self.owner = owner or current_owner()
        from ..mcp.manager import McpManager
        from .mcp_cache import RedisSchemaCache
        from .registry import RedisRunRegistry

        # One MCP manager for every account's runs here; its schema cache is Redis's, so
        # a server listed once is cached for every worker and server of the deployment.
        self.mcp = McpManager(cache=RedisSchemaCache(url, prefix=prefix))
        # Which runs this worker executes, heartbeated: ops can see who runs what.
        self.registry = RedisRunRegistry(url, self.owner, prefix=prefix,
                                         ttl_s=max(3 * self.shared.lease_s, 5.0))
        self.grace_s = grace_s
        self._sweep = sweep
        self._requeue = requeue
        self._benches: dict[str, Workbench] = {}
        self._stopping = asyncio.Event()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._sweeper: Sweeper | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None

    # ---- runs --------------------------------------------------------------------------
    def _bench(self, account_id: str) -> Workbench:
        bench = self._benches.get(account_id)
        if bench is None:
            from ..store.postgres_store import PostgresStore
            from ..workbench import Workbench

            assert self.shared.database_url is not None
            store = PostgresStore(self.shared.database_url, account_id=account_id,
                                  min_size=0, max_size=8)
            bench = self._benches[account_id] = Workbench(
                self.settings, store=store, mcp_manager=self.mcp, manager_options={
                    "event_log": self.events, "control": self.control,
                    "leases": self.leases, "lease_s": self.shared.lease_s,
                    "owner": self.owner, "max_parallel": 1000})
        return bench

    async def execute(self, account_id: str, run_id: str) -> None:
        """Execute one queued run (the Dramatiq actor's body); never raises for a run's
        own failure: that is the run's final status, not a reason to retry."""
        self._start_sweeper()
        if self._stopping.is_set():
            # Shutting down: the run goes back to the queue for another worker. (Raising
            # would not do it: with retries off, Dramatiq dead-letters a failed message
            # and the run would stay queued for ever.)
            if self._requeue is None:
                raise RuntimeError("this worker is shutting down")
            await self._requeue(account_id, run_id)
            log.info("run %s (account %s) handed back to the queue: shutting down",
                     run_id, account_id)
            return
        self._inflight += 1
        self._idle.clear()
        try:
            await self._registered(run_id, True)
            run = await self._bench(account_id).manager.execute(run_id)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()
            await self._registered(run_id, False)
        log.info("run %s (account %s) ended %s", run_id, account_id, run.status)

    async def _registered(self, run_id: str, executing: bool) -> None:
        """Keep the registry current; it is for people and tools, never for a run's
        correctness (leases are), so a Redis hiccup here is logged and ignored."""
        try:
            if executing:
                await self.registry.register(run_id)
            else:
                await self.registry.unregister(run_id)
        except Exception as exc:
            log.warning("run registry not updated for run %s: %s", run_id, exc)

    async def _heartbeat(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(Exception):
                await self.registry.heartbeat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.registry.ttl_s / 3)

    # ---- sweeping ----------------------------------------------------------------------
    def _start_sweeper(self) -> None:
        if self._heartbeat_task is None:
            self._heartbeat_task = asyncio.get_running_loop().create_task(
                self._heartbeat(), name="kortix-registry-heartbeat")
        if not self._sweep or self._sweep_task is not None:
            return
        from .sweeper import Sweeper

        assert self.shared.database_url is not None
        self._sweeper = Sweeper(self.shared.database_url, lock=self.leases, log=self.events,
                                owner=f"sweeper:{self.owner}", grace_s=self.shared.lease_s,
                                hold_s=self.shared.lease_s, free_s=self.shared.lease_s,
                                resend=self._requeue,
                                resend_after_s=self.shared.resend_after_s)
        self._sweep_task = asyncio.get_running_loop().create_task(
            self._sweeper.run(self._stopping, interval_s=self.shared.sweep_interval_s),
            name="kortix-sweeper")

    async def boot(self) -> None:
        """Start sweeping at once, and warm the model layer now: LiteLLM takes seconds to
        import, and its first completion (with tools, which imports ``mcp``) another
        0.5-1 s; the first run this worker takes would otherwise pay for both."""
        self._start_sweeper()
        from ..workbench import make_model

        await asyncio.to_thread(make_model, RunConfig(model=self.settings.model),
                                self.settings)
        await _warm_first_completion(self.settings)

    # ---- shutdown ----------------------------------------------------------------------
    def active_runs(self) -> list[str]:
        return [run for bench in self._benches.values() for run in bench.manager.active_runs()]

    async def drain(self) -> None:
        """Let runs in hand finish for ``grace_s``, then stop those still going, until
        none is left (a run whose ``execute`` began just before the shutdown may only be
        tracked a moment later: it is stopped on the next pass)."""
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.grace_s)
        while not self._idle.is_set():
            for bench in list(self._benches.values()):
                for run_id in bench.manager.active_runs():
                    await bench.manager.stop_run(run_id, SHUTDOWN_REASON)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 0.2)

    async def aclose(self) -> None:
        self._stopping.set()
        for task in (self._sweep_task, self._heartbeat_task):
            if task is not None:
                with contextlib.suppress(Exception):
                    await task
        if self._sweeper is not None:
            self._sweeper.close()
        for bench in self._benches.values():
            with contextlib.suppress(Exception):
                await bench.close()
        self._benches.clear()
        with contextlib.suppress(Exception):
            await self.mcp.aclose()
        with contextlib.suppress(Exception):
            await self.registry.forget(self.owner)  # gone: not left to expire
        for part in (self.events, self.control, self.leases, self.registry):
            with contextlib.suppress(Exception):
                await part.aclose()


async def _warm_first_completion(settings: Settings) -> None:
    """One offline completion through LiteLLM, with a tool, on the scripted model."""
    from ..agentpress.model import ModelRequest
    from ..models.scripted import register_scripted_provider
    from ..workbench import make_model

    register_scripted_provider()
    model = make_model(RunConfig(model="scripted/echo"), settings)
    tool = {"type": "function", "function": {
        "name": "warm_up", "description": "unused",
        "parameters": {"type": "object", "properties": {}}}}
    request = ModelRequest(model="scripted/echo", tools=[tool],
                           messages=[{"role": "user", "content": "warm-up"}])
    try:
        async for _ in model.stream(request):
            pass
    except Exception:  # only a warm-up: the first run reports any real error
        log.debug("model warm-up failed", exc_info=True)


def dramatiq_argv(*, processes: int, threads: int, grace_s: float) -> list[str]:
    """Arguments for Dramatiq's CLI that run ``shared.worker_entry``."""
    from .queue import QUEUE_NAME

    shutdown_ms = int((grace_s + 30) * 1000)  # the grace, then time to store the stops
    return ["kortix_lab.shared.worker_entry", "--processes", str(processes),
            "--threads", str(threads), "--queues", QUEUE_NAME,
            "--worker-shutdown-timeout", str(shutdown_ms)]


def run_worker(*, processes: int, threads: int, grace_s: float) -> int:
    """``kortix-lab worker``: Dramatiq's master process; returns its exit code."""
    import os

    # Both are read when dramatiq is imported; the worker processes inherit them.
    # By default a process takes up to 2 x threads messages: a run it could not start
    # yet waited in its memory (seconds, behind runs of any length) while another
    # worker idled. Take only what there are threads for.
    os.environ.setdefault("dramatiq_queue_prefetch", str(threads))
    # Dramatiq's Redis consumer polls with a backoff that grows to its worker timeout
    # (1 s by default) while the queue is empty or its threads are all busy: a run sent
    # to an idle worker waited ~0.5 s (p50) to start, and a freed thread waits for the
    # next poll. 20 ms bounds both, for at most 50 cheap polls a second per idle process.
    os.environ.setdefault("dramatiq_worker_timeout", "20")
    from dramatiq.cli import main, make_argument_parser

    SharedSettings().check()  # a clear error now, not N tracebacks from the children
    os.environ["KORTIX_LAB_WORKER_GRACE_S"] = str(grace_s)
    args = make_argument_parser().parse_args(  # type: ignore[no-untyped-call]
        dramatiq_argv(processes=processes, threads=threads, grace_s=grace_s))
    code: Any = main(args)  # type: ignore[no-untyped-call]
    return int(code or 0)
