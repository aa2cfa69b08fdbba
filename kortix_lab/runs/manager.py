"""RunManager: starts runs on threads, bounds their parallelism, relays their events.

It is the one entry point every surface uses (CLI, kernel magic, server API).
A run moves queued → running → completed | failed | stopped. One thread has at
most one active run; at most ``max_parallel`` runs execute at once, the rest
wait queued. The final status is written to the store *before* the
``run_finished`` event is published, so whatever a client saw is in the store.
On start-up, runs left queued or running by a process that died are marked
failed with the reason.

The same manager serves the shared deployment (docs/shared-deployment.md),
by what it is given rather than by subclassing:

* ``dispatch`` — ``start_run`` stores the run with its configuration
  (``runs.payload``) and hands it to the queue instead of executing it; a
  worker's manager then calls ``execute(run_id)``;
* ``leases`` — whoever executes a run holds its lease (``runs.lease``) from
  before it is marked running until its final status is stored, so no run
  executes twice and a dead executor's run is swept, never stuck;
* ``control`` — stop requests and approval decisions reach a run in another
  process (``runs.control``); a stop is also recorded in the store when it can
  keep one (``StopLedger``), so a Redis flush cannot lose it;
* ``event_log`` — any ``EventLog``: in memory, or Redis Streams so any server
  relays any run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..agentpress import events as ev
from ..agentpress._store_pool import in_store_thread
from ..agentpress.approval import Decision
from ..agentpress.errors import ConfigError, KortixLabError, NotFound
from ..agentpress.model import ChatModel
from ..agentpress.registry import ToolRegistry
from ..agentpress.runner import AgentRunner, RunConfig
from ..agentpress.store import AgentRun, NewMessage, Store
from .control import ControlChannel, ControlMessage
from .event_log import EventLog, MemoryEventLog
from .lease import Lease, LeaseLock, LeaseRefused
from .owner import current_owner, owner_alive
from .payload import CONFIG_KEY, config_from_record, config_to_record

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")


class ThreadBusy(KortixLabError):
    """The thread already has an active run (HTTP 409)."""

    def __init__(self, thread_id: str, run_id: str) -> None:
        super().__init__(f"thread {thread_id} already has an active run ({run_id}); stop it or "
                         "wait for it to finish")
        self.thread_id = thread_id
        self.run_id = run_id


@dataclass(frozen=True, slots=True)
class RunContext:
    """What a tools factory may use to build one run's tools."""

    run_id: str
    thread_id: str
    project_id: str | None
    config: RunConfig
    agent_id: str | None
    store: Store


@runtime_checkable
class StopLedger(Protocol):
    """A store that can keep a run's stop request (Postgres): it outlives a Redis flush."""

    def record_stop(self, run_id: str, reason: str) -> None: ...
    def recorded_stop(self, run_id: str) -> str | None: ...


ModelFactory = Callable[[RunConfig], ChatModel]
# Hand a stored, queued run to whoever executes runs (the shared deployment's queue).
Dispatch = Callable[[AgentRun], Awaitable[None]]
Emit = Callable[[ev.Event], Awaitable[None]]
# Async, and given ``emit``: preparing tools may start MCP servers or a sandbox, and
# whatever could not be had is reported as a status event while the run goes on.
ToolsFactory = Callable[[RunContext, Emit], Awaitable[ToolRegistry]]


@dataclass(slots=True)
class _Active:
    run_id: str
    thread_id: str
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None
    stop_reason: str = "stopped by request"
    pending: dict[str, asyncio.Future[Decision]] = field(default_factory=dict)
    lease_lost: bool = False  # another process may have taken the run over

    def ask_user(self, call_id: str, tool: str, arguments: dict[str, Any]
                 ) -> asyncio.Future[Decision]:
        """Register the question before it is announced, so an answer can never be early."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        future.add_done_callback(lambda _: self.pending.pop(call_id, None))
        return future


class RunManager:
    def __init__(self, store: Store, *, model_factory: ModelFactory,
                 tools_factory: ToolsFactory, max_parallel: int = 3,
                 event_log: EventLog | None = None, control: ControlChannel | None = None,
                 leases: LeaseLock | None = None, lease_s: float = 30.0,
                 dispatch: Dispatch | None = None, owner: str | None = None,
                 stop_poll_s: float | None = None) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        self.store = store
        self.events: EventLog = event_log if event_log is not None else MemoryEventLog()
        self.max_parallel = max_parallel
        self.control = control
        self.leases = leases
        self.lease_s = lease_s
        self.owner = owner or current_owner()
        self._dispatch = dispatch
        self._stop_poll_s = stop_poll_s if stop_poll_s is not None else lease_s / 3
        self._model_factory = model_factory
        self._tools_factory = tools_factory
        self._slots = asyncio.Semaphore(max_parallel)
        self._active: dict[str, _Active] = {}
        self._by_thread: dict[str, str] = {}
        self._closed = False

    @property
    def dispatching(self) -> bool:
        """True when runs are handed to workers rather than executed here."""
        return self._dispatch is not None

    # ---- life cycle -------------------------------------------------------------------
    def recover_orphans(self) -> list[AgentRun]:
        """Mark runs whose owner process is gone as failed; return what was changed.

        Only for runs this kind of manager owns alone: with leases, runs belong to
        workers anywhere and the sweeper (``shared.sweeper``) judges them."""
        if self.leases is not None or self.dispatching:
            return []
        changed = []
        for run in self.store.list_runs(statuses=list(ACTIVE)):
            if run.run_id in self._active:
                continue
            alive = owner_alive(run.owner)
            if alive is False:
                who = f"process {run.owner}" if run.owner else "a process"
                changed.append(self.store.update_run(
                    run.run_id, status="failed", finished=True,
                    error=f"{who} that was running it exited before it finished"))
        return changed

    async def shutdown(self, reason: str = "the server is shutting down") -> None:
        """Stop every run executing here with ``reason`` and wait until each has finished.
        Runs handed to workers are theirs: they go on."""
        self._closed = True
        for active in list(self._active.values()):
            active.stop_reason = reason
            active.stop.set()
        tasks = [a.task for a in self._active.values() if a.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ---- runs ---------------------------------------------------------------------------
    async def start_run(self, thread_id: str, message: str | dict[str, Any] | None,
                        config: RunConfig, *, agent_id: str | None = None) -> AgentRun:
        """Store the user's message, queue the run and return its record at once."""
        if self._closed:
            raise KortixLabError("the run manager is shut down")
        if (busy := self._by_thread.get(thread_id)) is not None:
            raise ThreadBusy(thread_id, busy)
        metadata: dict[str, Any] = {"max_iterations": config.max_iterations}
        if self.dispatching:
            metadata[CONFIG_KEY] = config_to_record(config)
        new = None
        if message is not None:
            content = {"role": "user", "content": message} if isinstance(message, str) \
                else message
            new = NewMessage("user", content)  # begin_run sets its run_id
        # One store operation (one thread hop, one transaction) instead of five: read the
        # thread, check it is idle, create the run with its owner, store the message.
        begin = functools.partial(
            self.store.begin_run, thread_id, model=config.model, agent_id=agent_id,
            metadata=metadata, owner=None if self.dispatching else self.owner, message=new)
        start = await in_store_thread(begin)
        if start.run is None:
            # Queued runs of a dispatching manager have no owner yet: the queue holds them.
            alive = [r for r in start.busy
                     if self.dispatching or owner_alive(r.owner) is not False]
            if alive:
                raise ThreadBusy(thread_id, alive[0].run_id)
            # Only runs of dead processes (left for recover_orphans): start past them.
            start = await in_store_thread(begin, ignore=[r.run_id for r in start.busy])
            if start.run is None:  # another run started meanwhile
                raise ThreadBusy(thread_id, start.busy[0].run_id)
        run, thread = start.run, start.thread
        try:
            if isinstance(self.events, MemoryEventLog):
                self.events.open(run.run_id)
            else:  # a network round trip (Redis): not on the event loop
                await asyncio.to_thread(self.events.open, run.run_id)
            if self._dispatch is not None:
                await self._dispatch(run)
        except Exception as exc:  # stored but not startable: fail it, never leave it queued
            await self._fail_unsent(run, exc)
            raise KortixLabError(f"could not queue run {run.run_id}: {exc}") from exc
        if self._dispatch is not None:
            return run
        active = self._track(run.run_id, thread_id)
        context = RunContext(run.run_id, thread_id, thread.project_id, config, agent_id,
                             self.store)
        active.task = asyncio.create_task(self._execute(active, context),
                                          name=f"kortix-run-{run.run_id}")
        return run

    async def execute(self, run_id: str) -> AgentRun:
        """Execute a run another process queued (the worker's entry point); return its
        final record. A run that is already finished, or executing elsewhere, is left
        alone; one whose executor died (``running``, its lease free for a whole lease
        period) is failed, never run twice: its messages so far are in the thread."""
        run = await in_store_thread(self.store.get_run, run_id)
        if run.status not in ACTIVE or run_id in self._active:
            return run
        if run.status == "running" and self.leases is not None and \
                not await self._lease_stays_free(run_id):
            return run  # its executor is alive: it holds the lease (or took it back)
        active = self._track(run_id, run.thread_id)
        try:
            try:
                config = config_from_record(run.metadata.get(CONFIG_KEY))
                thread = await in_store_thread(self.store.get_thread, run.thread_id)
            except (ConfigError, NotFound) as exc:
                await self._finalize(run, "failed", f"the run cannot be executed: {exc}",
                                     started=True)
                return await in_store_thread(self.store.get_run, run_id)
            context = RunContext(run_id, run.thread_id, thread.project_id, config,
                                 run.agent_id, self.store)
            # A task of its own, as ``start_run`` makes: ``shutdown`` waits for it.
            active.task = asyncio.create_task(self._execute(active, context),
                                              name=f"kortix-run-{run_id}")
            await active.task
        finally:
            self._untrack(active)
        return await in_store_thread(self.store.get_run, run_id)

    async def stop_run(self, run_id: str, reason: str = "stopped by request") -> bool:
        """Ask a run to stop; True when it was active. It ends within one event.

        A run executing in another process is told through the control channel (and the
        store, when it keeps stops); one still queued is ended here at once."""
        active = self._active.get(run_id)
        if active is not None:
            active.stop_reason = reason
            active.stop.set()
            return True
        if self.control is None:
            return False
        run = await in_store_thread(self.store.get_run, run_id)
        if run.status not in ACTIVE:
            return False
        if isinstance(self.store, StopLedger):
            await in_store_thread(self.store.record_stop, run_id, reason)
        await self.control.stop(run_id, reason)
        if run.status == "queued":
            await self._stop_queued(run, reason)
        return True

    def pending_approvals(self, run_id: str) -> list[str]:
        active = self._active.get(run_id)
        return list(active.pending) if active else []

    def decide(self, run_id: str, call_id: str, *, approved: bool, reason: str = "",
               remember: bool = False) -> None:
        """Answer an ``approval_requested`` event of a run executing here; ``remember``
        approves the tool for the rest of the run. Raises ``NotFound`` when nothing here
        waits for that decision (``send_decision`` reaches other processes too)."""
        active = self._active.get(run_id)
        future = active.pending.get(call_id) if active else None
        if future is None or future.done():
            raise NotFound(f"run {run_id} has no approval request {call_id!r} waiting")
        future.set_result(Decision(approved, reason, remember))

    async def send_decision(self, run_id: str, call_id: str, *, approved: bool,
                            reason: str = "", remember: bool = False) -> None:
        """``decide`` wherever the run executes: here, or through the control channel."""
        if run_id in self._active or self.control is None:
            self.decide(run_id, call_id, approved=approved, reason=reason, remember=remember)
            return
        run = await in_store_thread(self.store.get_run, run_id)
        if run.status not in ACTIVE:
            raise NotFound(f"run {run_id} has finished ({run.status}); no approval waits")
        await self.control.decide(run_id, call_id, approved=approved, reason=reason,
                                  remember=remember)

    async def wait(self, run_id: str) -> AgentRun:
        active = self._active.get(run_id)
        if active is not None and active.task is not None:
            await asyncio.gather(active.task, return_exceptions=True)
        elif self.dispatching:
            with contextlib.suppress(KeyError):
                async for _ in self.events.read(run_id):
                    pass
        return await in_store_thread(self.store.get_run, run_id)

    def subscribe(self, run_id: str, after_seq: int = 0) -> AsyncIterator[ev.Event]:
        """Events of a run after ``after_seq``, following it until ``run_finished``."""
        return self.events.read(run_id, after_seq)

    def active_runs(self) -> list[str]:
        """Runs executing (or queued) in this process."""
        return list(self._active)

    def is_active(self, run: AgentRun) -> bool:
        """Whether ``run`` is still going, wherever it executes."""
        if self.dispatching or self.leases is not None:
            return run.status in ACTIVE
        return run.run_id in self._active

    async def count_active(self) -> int:
        """Active runs this manager's limits count: its own, or with a queue, every
        queued or running run the store holds (one account's, across all servers)."""
        if not self.dispatching:
            return len(self._active)
        runs = await in_store_thread(self.store.list_runs, statuses=list(ACTIVE))
        return len(runs)

    # ---- execution ----------------------------------------------------------------------
    def _track(self, run_id: str, thread_id: str) -> _Active:
        active = _Active(run_id, thread_id, asyncio.Event())
        self._active[run_id] = active
        self._by_thread[thread_id] = run_id
        return active

    def _untrack(self, active: _Active) -> None:
        if self._active.get(active.run_id) is active:
            del self._active[active.run_id]
        if self._by_thread.get(active.thread_id) == active.run_id:
            del self._by_thread[active.thread_id]

    async def _execute(self, active: _Active, context: RunContext) -> None:
        try:
            async with self._slots:
                if self.leases is None:
                    await self._run(active, context)
                    return
                try:
                    lease = Lease(self.leases, active.run_id, self.owner, self.lease_s)
                    async with lease:
                        await self._run_leased(active, context, lease)
                except LeaseRefused as exc:
                    log.info("run %s not executed here: %s", active.run_id, exc)
        finally:
            self._untrack(active)

    async def _run_leased(self, active: _Active, context: RunContext, lease: Lease) -> None:
        """With the lease held: re-read the run (another process may have ended it), then
        run it with watchers for stop, decisions and a lost lease."""
        run = await in_store_thread(self.store.get_run, active.run_id)
        if run.status == "running":
            await self._finalize(run, "failed", (
                f"the process running it ({run.owner or 'unknown'}) stopped before it "
                "finished; the run was not started again, so nothing it did is repeated"))
            return
        if run.status != "queued":
            return
        watchers = [asyncio.create_task(self._watch_lease(active, lease))]
        if self.control is not None:
            watchers.append(asyncio.create_task(self._listen(active)))
        if isinstance(self.store, StopLedger):
            watchers.append(asyncio.create_task(self._poll_stop(active)))
        try:
            stop = await self._stop_requested(active.run_id)
            if stop is not None:
                active.stop_reason = stop
                active.stop.set()
            await self._run(active, context)
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            if self.control is not None:
                with contextlib.suppress(Exception):
                    await self.control.clear(active.run_id)

    async def _run(self, active: _Active, context: RunContext) -> None:
        run_id = active.run_id
        if active.stop.is_set():
            await self._finish_unstarted(active, context)
            return
        await in_store_thread(self.store.update_run, run_id, status="running", started=True,
                              owner=self.owner if self.leases is not None else None)
        emit = functools.partial(self._emit, run_id, active=active)
        await emit(ev.RunStarted(thread_id=context.thread_id, model=context.config.model,
                                 agent_id=context.agent_id))
        try:
            model = self._model_factory(context.config)
            registry = await self._tools_factory(context, emit)
        except Exception as exc:
            await emit(ev.ErrorEvent(code="config_error", message=str(exc)))
            await emit(ev.RunFinished(status="failed", thread_id=context.thread_id,
                                      reason=f"could not prepare the run: {exc}"))
            return
        runner = AgentRunner(
            store=self.store, model=model, registry=registry, emit=emit,
            run_id=run_id, thread_id=context.thread_id, config=context.config,
            stop=active.stop, project_id=context.project_id, announce=False,
            ask_user=active.ask_user)
        await runner.run()

    async def _lease_stays_free(self, run_id: str) -> bool:
        """True when nobody holds the run's lease for a whole lease period. A lease
        that is merely free does not mean a dead executor: after a Redis flush or
        restart every lease is gone, and each live holder takes its own back at its
        next heartbeat (``lease_s / 3``)."""
        assert self.leases is not None
        loop = asyncio.get_running_loop()
        until = loop.time() + self.lease_s
        while True:
            if await self.leases.holder(run_id) is not None:
                return False
            left = until - loop.time()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, self.lease_s / 6))

    async def _watch_lease(self, active: _Active, lease: Lease) -> None:
        await lease.lost.wait()
        active.lease_lost = True
        active.stop_reason = ("this process lost the run's lease (it could not reach the "
                              "lock service in time); the run was stopped so it cannot run "
                              "twice")
        active.stop.set()

    async def _listen(self, active: _Active) -> None:
        assert self.control is not None
        while True:
            try:
                async for message in self.control.listen(active.run_id):
                    self._apply(active, message)
                return
            except Exception as exc:  # the channel failed: the store's record still works
                log.warning("control channel for run %s failed (%s); listening again",
                            active.run_id, exc)
                await asyncio.sleep(1.0)

    def _apply(self, active: _Active, message: ControlMessage) -> None:
        if message.kind == "stop":
            active.stop_reason = message.reason or active.stop_reason
            active.stop.set()
            return
        future = active.pending.get(message.call_id)
        if future is not None and not future.done():
            future.set_result(Decision(message.approved, message.reason, message.remember))

    async def _poll_stop(self, active: _Active) -> None:
        """A stop recorded in the store reaches the run even if its message was lost."""
        assert isinstance(self.store, StopLedger)
        ledger = self.store
        while not active.stop.is_set():
            await asyncio.sleep(self._stop_poll_s)
            with contextlib.suppress(Exception):
                reason = await in_store_thread(ledger.recorded_stop, active.run_id)
                if reason is not None:
                    active.stop_reason = reason
                    active.stop.set()

    async def _stop_requested(self, run_id: str) -> str | None:
        if isinstance(self.store, StopLedger):
            reason = await in_store_thread(self.store.recorded_stop, run_id)
            if reason is not None:
                return reason
        if self.control is not None:
            with contextlib.suppress(Exception):
                return await self.control.stop_requested(run_id)
        return None

    async def _stop_queued(self, run: AgentRun, reason: str) -> None:
        """End a run no worker has started: take its lease so none can start it now."""
        if self.leases is None or not await self.leases.acquire(run.run_id, self.owner,
                                                                 self.lease_s):
            return  # a worker holds it: the stop reaches it through the channel
        try:
            current = await in_store_thread(self.store.get_run, run.run_id)
            if current.status == "queued":
                await self._finalize(current, "stopped", reason, started=True)
        finally:
            await self.leases.release(run.run_id, self.owner)

    async def _finalize(self, run: AgentRun, status: ev.FinalStatus, reason: str, *,
                        started: bool = False) -> None:
        """Store a final status for a run that will not execute, then end its stream."""
        await in_store_thread(self.store.update_run, run.run_id, status=status,
                              error=reason, finished=True)
        with contextlib.suppress(RuntimeError):  # its stream already ended
            if started:
                await self.events.append(run.run_id, ev.RunStarted(
                    thread_id=run.thread_id, model=run.model, agent_id=run.agent_id))
            await self.events.append(run.run_id, ev.RunFinished(
                status=status, thread_id=run.thread_id, reason=reason))

    async def _fail_unsent(self, run: AgentRun, exc: Exception) -> None:
        with contextlib.suppress(Exception):
            await self._finalize(run, "failed", f"the run could not be queued: {exc}")

    async def _finish_unstarted(self, active: _Active, context: RunContext) -> None:
        await self._emit(active.run_id, ev.RunStarted(thread_id=context.thread_id,
                                                      model=context.config.model))
        await self._emit(active.run_id, ev.RunFinished(
            status="stopped", thread_id=context.thread_id, reason=active.stop_reason), active)

    async def _emit(self, run_id: str, event: ev.Event, active: _Active | None = None) -> None:
        if isinstance(event, ev.RunFinished):
            reason = event.reason
            if event.status == "stopped" and active is not None and \
                    reason == "stopped by request":
                reason = active.stop_reason
                event = ev.RunFinished(status=event.status, thread_id=event.thread_id,
                                       reason=reason, usage=event.usage, cost=event.cost,
                                       duration_ms=event.duration_ms)
            if active is not None and active.lease_lost and await self._ended(run_id):
                return  # whoever took the run over (the sweeper) ended it: its word stands
            with contextlib.suppress(Exception):  # the event must go out even if the store is down
                await in_store_thread(
                    self.store.update_run, run_id, status=event.status, finished=True,
                    error=None if event.status == "completed" else reason,
                    usage=event.usage, cost=event.cost)
        if active is not None and active.lease_lost:
            with contextlib.suppress(RuntimeError):  # the new holder may have ended the stream
                await self.events.append(run_id, event)
            return
        await self.events.append(run_id, event)

    async def _ended(self, run_id: str) -> bool:
        try:
            run = await in_store_thread(self.store.get_run, run_id)
        except Exception:
            return False
        return run.status not in ACTIVE
