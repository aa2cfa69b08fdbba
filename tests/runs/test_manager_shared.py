"""RunManager's shared-deployment paths, fast, with the in-memory twins.

A *front* manager (what a server holds) dispatches runs instead of executing
them; a *worker* manager executes them with ``execute(run_id)`` under a lease.
They share one store, one ``MemoryEventLog``, a ``MemoryLeaseLock`` and (unless a
test cuts it) a ``MemoryControl``. ``LedgerStore`` adds a ``StopLedger`` to the
in-memory store, as Postgres has one. The same paths run on Redis, Postgres and
real worker processes in ``tests/shared/test_workers*.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from kortix_lab.agentpress import events as ev
from kortix_lab.agentpress.errors import ConfigError, KortixLabError, NotFound
from kortix_lab.agentpress.model import ChatModel, ModelDelta, ModelRequest, TextChunk
from kortix_lab.agentpress.registry import ToolRegistry
from kortix_lab.agentpress.runner import RunConfig
from kortix_lab.agentpress.store import AgentRun, Store
from kortix_lab.agentpress.tool import ToolResult, function
from kortix_lab.runs.control import MemoryControl
from kortix_lab.runs.event_log import MemoryEventLog
from kortix_lab.runs.lease import MemoryLeaseLock
from kortix_lab.runs.manager import RunContext, RunManager, StopLedger, ThreadBusy
from kortix_lab.runs.payload import CONFIG_KEY, config_from_record, config_to_record
from kortix_lab.store import open_store

from ..agentpress.doubles import QueueModel, finish, native_call, text

LEASE_S = 0.3  # the worker's lease: heartbeats every 0.1 s, the ledger is polled as often
WITHIN = 10.0  # a generous deadline for what takes milliseconds


class LedgerStore:
    """A store that keeps stop requests, like ``PostgresStore`` (a ``StopLedger``)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.stops: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def record_stop(self, run_id: str, reason: str) -> None:
        self._store.get_run(run_id)  # NotFound, as Postgres says
        self.stops[run_id] = reason

    def recorded_stop(self, run_id: str) -> str | None:
        return self.stops.get(run_id)


class Gate:
    """A model that says something, then waits at a gate before finishing."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.calls = 0
        self.waiting = asyncio.Event()

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        self.calls += 1
        return self._stream()

    async def _stream(self) -> AsyncIterator[ModelDelta]:
        yield TextChunk("working… ")
        self.waiting.set()
        await self.open.wait()
        for delta in text("done") + finish():
            yield delta


@function(requires_approval=True)
async def wipe(target: str) -> ToolResult:
    """Delete everything under target (risky)."""
    return ToolResult.ok(f"wiped {target}")


async def tools(_: RunContext, __: Any) -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(wipe)
    return registry


class Deployment:
    """A front and a worker manager over one store, log, lock and control channel."""

    def __init__(self, store: Any, model: Callable[[RunConfig], ChatModel], *,
                 front_control: MemoryControl | None = None, auto: bool = True) -> None:
        self.store = store
        self.events = MemoryEventLog()
        self.lock = MemoryLeaseLock()
        self.control = MemoryControl()
        self.queue: list[AgentRun] = []
        self.auto = auto
        self.tasks: list[asyncio.Task[AgentRun]] = []
        self.front = RunManager(store, model_factory=self._no_model, tools_factory=tools,
                                event_log=self.events, leases=self.lock,
                                control=front_control or self.control, lease_s=LEASE_S,
                                dispatch=self._dispatch, owner="front")
        self.worker = RunManager(store, model_factory=model, tools_factory=tools,
                                 event_log=self.events, leases=self.lock, control=self.control,
                                 lease_s=LEASE_S, owner="worker-1")

    @staticmethod
    def _no_model(config: RunConfig) -> ChatModel:
        raise AssertionError("a dispatching manager never executes a run")

    async def _dispatch(self, run: AgentRun) -> None:
        self.queue.append(run)
        if self.auto:  # the queue hands it to the worker at once
            self.tasks.append(asyncio.create_task(self.worker.execute(run.run_id)))

    async def start(self, prompt: str = "go", config: RunConfig | None = None) -> AgentRun:
        thread = self.store.create_thread()
        return await self.front.start_run(thread.thread_id, prompt,
                                          config or RunConfig(model="m"))

    async def events_of(self, run_id: str) -> list[ev.Event]:
        return await asyncio.wait_for(_drain(self.front.subscribe(run_id)), WITHIN)

    async def settle(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self.tasks), WITHIN)


async def _drain(stream: AsyncIterator[ev.Event]) -> list[ev.Event]:
    return [e async for e in stream]


def final(events: list[ev.Event]) -> ev.RunFinished:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    last = events[-1]
    assert isinstance(last, ev.RunFinished), [e.type for e in events]
    assert sum(isinstance(e, ev.RunFinished) for e in events) == 1
    return last


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store(":memory:")
    yield s
    s.close()


# ---------------------------------------------------------------- dispatch and execute


@pytest.mark.asyncio
async def test_a_dispatched_run_is_stored_with_its_config_and_executed_by_the_worker(
        store: Store) -> None:
    d = Deployment(store, lambda c: QueueModel(text("hello from the worker") + finish()))
    config = RunConfig(model="m", max_iterations=7, model_params={"api_key": "sk-secret",
                                                                  "top_p": 0.5})
    run = await d.start("hi", config)
    assert run.status == "queued" and run.owner is None
    assert [r.run_id for r in d.queue] == [run.run_id]
    stored = config_from_record(store.get_run(run.run_id).metadata[CONFIG_KEY])
    assert stored == dataclasses.replace(config, model_params={"top_p": 0.5}), \
        "the config travels in the record, provider keys dropped"
    assert "sk-secret" not in str(store.get_run(run.run_id).metadata)

    events = await d.events_of(run.run_id)
    assert final(events).status == "completed"
    assert "".join(e.text for e in events if isinstance(e, ev.TextDelta)) == \
        "hello from the worker"
    record = await d.front.wait(run.run_id)
    assert record.status == "completed" and record.owner == "worker-1"
    assert [m.type for m in store.get_messages(run.thread_id)] == ["user", "assistant"]
    assert await d.lock.holder(run.run_id) is None, "the worker let its lease go"
    assert d.front.active_runs() == [] and d.worker.active_runs() == []


@pytest.mark.asyncio
async def test_a_dispatching_front_judges_activity_by_the_store(store: Store) -> None:
    gate = Gate()
    d = Deployment(store, lambda c: gate)
    run = await d.start()
    await asyncio.wait_for(gate.waiting.wait(), WITHIN)
    assert d.front.is_active(store.get_run(run.run_id))
    assert await d.front.count_active() == 1
    with pytest.raises(ThreadBusy):  # the run executes elsewhere: the store knows
        await d.front.start_run(run.thread_id, "again", RunConfig(model="m"))
    assert d.front.recover_orphans() == [], "shared runs are the sweeper's to judge"
    gate.open.set()
    await d.settle()
    assert not d.front.is_active(store.get_run(run.run_id))
    assert await d.front.count_active() == 0


@pytest.mark.asyncio
async def test_a_run_that_cannot_be_queued_fails_with_the_reason(store: Store) -> None:
    async def broken(run: AgentRun) -> None:
        raise ConnectionError("the queue is down")

    events = MemoryEventLog()
    front = RunManager(store, model_factory=Deployment._no_model, tools_factory=tools,
                       event_log=events, dispatch=broken)
    thread = store.create_thread()
    with pytest.raises(KortixLabError, match="could not queue"):
        await front.start_run(thread.thread_id, "hi", RunConfig(model="m"))
    [run] = store.list_runs(thread_id=thread.thread_id)
    assert run.status == "failed" and "the queue is down" in (run.error or "")
    assert final(await _drain(events.read(run.run_id))).status == "failed"


@pytest.mark.asyncio
async def test_a_run_whose_event_log_cannot_be_opened_fails_rather_than_stays_queued(
        store: Store) -> None:
    """Redis down between storing the run and opening its stream: the run is failed
    with the reason, so the thread is not left busy with a run nobody will execute."""
    class DownLog(MemoryEventLog):
        def open(self, run_id: str) -> None:
            raise ConnectionError("Redis is down")

    sent: list[str] = []

    async def dispatch(run: AgentRun) -> None:
        sent.append(run.run_id)

    front = RunManager(store, model_factory=Deployment._no_model, tools_factory=tools,
                       event_log=DownLog(), dispatch=dispatch)
    thread = store.create_thread()
    with pytest.raises(KortixLabError, match="Redis is down"):
        await front.start_run(thread.thread_id, "hi", RunConfig(model="m"))
    [run] = store.list_runs(thread_id=thread.thread_id)
    assert run.status == "failed" and "Redis is down" in (run.error or "")
    assert sent == [], "nothing was queued"
    with pytest.raises(KortixLabError, match="Redis is down"):  # not ThreadBusy
        await front.start_run(thread.thread_id, "hi again", RunConfig(model="m"))


def test_a_record_without_a_config_is_refused() -> None:
    with pytest.raises(ConfigError, match="no configuration"):
        config_from_record(None)
    newer = {**config_to_record(RunConfig(model="m")), "from_the_future": 1}
    assert config_from_record(newer).model == "m", "unknown fields are ignored"


@pytest.mark.asyncio
async def test_execute_leaves_finished_runs_and_runs_held_elsewhere_alone(
        store: Store) -> None:
    model = QueueModel(text("never") + finish())
    d = Deployment(store, lambda c: model, auto=False)
    done, held = await d.start("one"), await d.start("two")
    store.update_run(done.run_id, status="completed", finished=True)
    assert await d.lock.acquire(held.run_id, "worker-2", 60)

    assert (await d.worker.execute(done.run_id)).status == "completed"
    assert (await d.worker.execute(held.run_id)).status == "queued"
    assert model.requests == [], "nothing executed"
    assert await d.lock.holder(held.run_id) == "worker-2"
    for run in (done, held):
        assert [e async for e in d.events.read(run.run_id, follow=False)] == []


@pytest.mark.asyncio
async def test_a_running_run_whose_executor_died_is_failed_never_run_twice(
        store: Store) -> None:
    model = QueueModel(text("a second time") + finish())
    d = Deployment(store, lambda c: model, auto=False)
    run = await d.start()
    store.update_run(run.run_id, status="running", owner="worker-0", started=True)

    record = await asyncio.wait_for(d.worker.execute(run.run_id), WITHIN)
    assert record.status == "failed" and "worker-0" in (record.error or "")
    assert "not started again" in (record.error or "")
    assert model.requests == [], "never executed again"
    assert final(await d.events_of(run.run_id)).reason == record.error
    assert await d.lock.holder(run.run_id) is None


@pytest.mark.asyncio
async def test_a_running_run_whose_holder_takes_its_lease_back_is_left_alone(
        store: Store) -> None:
    """After a Redis flush every lease is gone for a moment; a live executor takes its
    own back at its next heartbeat. A redelivered message must not fail its run."""
    model = QueueModel(text("a second time") + finish())
    d = Deployment(store, lambda c: model, auto=False)
    run = await d.start()
    store.update_run(run.run_id, status="running", owner="worker-0", started=True)

    async def heartbeat() -> None:
        await asyncio.sleep(LEASE_S / 3)
        assert await d.lock.renew(run.run_id, "worker-0", LEASE_S)

    beat = asyncio.create_task(heartbeat())
    record = await asyncio.wait_for(d.worker.execute(run.run_id), WITHIN)
    await beat
    assert record.status == "running" and model.requests == []
    assert await d.lock.holder(run.run_id) == "worker-0"
    assert [e async for e in d.events.read(run.run_id, follow=False)] == []


@pytest.mark.asyncio
async def test_a_run_whose_config_cannot_be_read_fails_with_the_reason(store: Store) -> None:
    d = Deployment(store, lambda c: QueueModel(), auto=False)
    thread = store.create_thread()
    run = store.create_run(thread.thread_id, model="m")  # queued by a server of old
    record = await d.worker.execute(run.run_id)
    assert record.status == "failed" and "cannot be executed" in (record.error or "")
    assert final(await d.events_of(run.run_id)).status == "failed"


# ---------------------------------------------------------------- stops


@pytest.mark.asyncio
async def test_a_stop_from_the_front_reaches_the_run_on_the_worker(store: Store) -> None:
    gate = Gate()
    d = Deployment(store, lambda c: gate)
    run = await d.start()
    await asyncio.wait_for(gate.waiting.wait(), WITHIN)
    assert await d.front.stop_run(run.run_id, "enough")
    events = await d.events_of(run.run_id)
    assert final(events).status == "stopped" and final(events).reason == "enough"
    await d.settle()
    record = store.get_run(run.run_id)
    assert record.status == "stopped" and record.error == "enough"
    assert await d.control.stop_requested(run.run_id) is None, "the worker cleared it"
    assert not await d.front.stop_run(run.run_id, "again"), "a finished run is left"


@pytest.mark.asyncio
async def test_a_stop_of_a_queued_run_ends_it_at_once_and_no_worker_runs_it(
        store: Store) -> None:
    model = QueueModel(text("never") + finish())
    d = Deployment(LedgerStore(store), lambda c: model, auto=False)
    run = await d.start()
    assert await d.front.stop_run(run.run_id, "changed my mind")
    record = store.get_run(run.run_id)  # at once: nobody had to take part
    assert record.status == "stopped" and record.error == "changed my mind"
    events = await d.events_of(run.run_id)
    assert [e.type for e in events] == ["run_started", "run_finished"]
    assert final(events).reason == "changed my mind"
    assert await d.lock.holder(run.run_id) is None

    assert (await d.worker.execute(run.run_id)).status == "stopped"  # the message comes
    assert model.requests == []
    assert len(await d.events_of(run.run_id)) == 2


@pytest.mark.asyncio
async def test_a_stop_of_a_queued_run_a_worker_holds_is_left_to_that_worker(
        store: Store) -> None:
    model = QueueModel(text("never") + finish())
    d = Deployment(store, lambda c: model, auto=False)
    run = await d.start()
    assert await d.lock.acquire(run.run_id, "worker-1", 60)  # taking it right now
    assert await d.front.stop_run(run.run_id, "not now")
    assert store.get_run(run.run_id).status == "queued", "the front did not race it"
    assert await d.control.stop_requested(run.run_id) == "not now"
    await d.lock.release(run.run_id, "worker-1")

    record = await d.worker.execute(run.run_id)
    assert record.status == "stopped" and record.error == "not now"
    assert model.requests == [], "stopped before it started"
    assert final(await d.events_of(run.run_id)).reason == "not now"


@pytest.mark.asyncio
async def test_a_stop_kept_by_the_store_reaches_the_run_when_the_message_is_lost(
        store: Store) -> None:
    gate = Gate()
    ledger = LedgerStore(store)
    assert isinstance(ledger, StopLedger) and not isinstance(store, StopLedger)
    d = Deployment(ledger, lambda c: gate, front_control=MemoryControl())  # goes nowhere
    run = await d.start()
    await asyncio.wait_for(gate.waiting.wait(), WITHIN)
    assert await d.front.stop_run(run.run_id, "through the store")
    assert await d.control.stop_requested(run.run_id) is None, "the worker's channel is mute"
    events = await d.events_of(run.run_id)
    assert final(events).status == "stopped" and final(events).reason == "through the store"
    assert store.get_run(run.run_id).error == "through the store"


@pytest.mark.asyncio
async def test_a_stop_recorded_before_the_worker_starts_ends_the_run_unstarted(
        store: Store) -> None:
    model = QueueModel(text("never") + finish())
    ledger = LedgerStore(store)
    d = Deployment(ledger, lambda c: model, auto=False)
    run = await d.start()
    ledger.record_stop(run.run_id, "before it began")  # and the control message was lost
    record = await d.worker.execute(run.run_id)
    assert record.status == "stopped" and record.error == "before it began"
    assert model.requests == []
    assert [e.type for e in await d.events_of(run.run_id)] == ["run_started", "run_finished"]


@pytest.mark.asyncio
async def test_losing_the_lease_stops_the_run_so_it_cannot_run_twice(store: Store) -> None:
    gate = Gate()
    d = Deployment(store, lambda c: gate)
    run = await d.start()
    await asyncio.wait_for(gate.waiting.wait(), WITHIN)
    # Someone else takes the run over (its lease lapsed while the worker hung).
    assert await d.lock.release(run.run_id, "worker-1")
    assert await d.lock.acquire(run.run_id, "sweeper", 60)
    events = await d.events_of(run.run_id)
    assert final(events).status == "stopped" and "lease" in final(events).reason
    await d.settle()
    assert await d.lock.holder(run.run_id) == "sweeper", "the new holder keeps it"


@pytest.mark.asyncio
async def test_a_run_taken_over_keeps_the_final_word_of_whoever_took_it(store: Store) -> None:
    """The worker hung past its lease; the sweeper took the run over and failed it.
    When the worker notices, it stops quietly: it neither overwrites the final status
    nor adds to the ended stream."""
    gate = Gate()
    d = Deployment(store, lambda c: gate)
    run = await d.start()
    await asyncio.wait_for(gate.waiting.wait(), WITHIN)
    assert await d.lock.release(run.run_id, "worker-1")
    assert await d.lock.acquire(run.run_id, "sweeper", 60)
    store.update_run(run.run_id, status="failed", error="swept", finished=True)
    await d.events.append(run.run_id, ev.RunFinished(status="failed", thread_id=run.thread_id,
                                                      reason="swept"))
    await d.settle()  # the worker's execute returns, raising nothing
    record = store.get_run(run.run_id)
    assert record.status == "failed" and record.error == "swept"
    assert final(await d.events_of(run.run_id)).reason == "swept"


@pytest.mark.asyncio
async def test_shutting_a_worker_manager_down_stops_its_runs_with_the_reason(
        store: Store) -> None:
    gate = Gate()
    d = Deployment(store, lambda c: gate)
    run = await d.start()
    await asyncio.wait_for(gate.waiting.wait(), WITHIN)
    await asyncio.wait_for(d.worker.shutdown("the worker is going away"), WITHIN)
    record = store.get_run(run.run_id)
    assert record.status == "stopped" and record.error == "the worker is going away"
    assert final(await d.events_of(run.run_id)).reason == "the worker is going away"


# ---------------------------------------------------------------- approvals


@pytest.mark.asyncio
@pytest.mark.parametrize("approved", [True, False])
async def test_a_decision_sent_from_the_front_reaches_the_run_on_the_worker(
        store: Store, approved: bool) -> None:
    d = Deployment(store, lambda c: QueueModel(
        native_call(0, "wipe", {"target": "/tmp/x"}) + finish("tool_calls"),
        text("done") + finish()))
    run = await d.start()
    events: list[ev.Event] = []
    async for event in d.front.subscribe(run.run_id):
        events.append(event)
        if isinstance(event, ev.ApprovalRequested):
            with pytest.raises(NotFound):  # nothing waits in the front's own process
                d.front.decide(run.run_id, event.call_id, approved=True)
            assert d.worker.pending_approvals(run.run_id) == [event.call_id]
            await d.front.send_decision(run.run_id, event.call_id, approved=approved,
                                        reason="my call")
    assert final(events).status == "completed"
    [decided] = [e for e in events if isinstance(e, ev.ApprovalDecided)]
    assert decided.approved is approved and decided.reason == "my call"
    [result] = [e for e in events if isinstance(e, ev.ToolFinished)]
    if approved:
        assert result.success and result.output == "wiped /tmp/x"
    else:
        assert not result.success and "denied by the user: my call" in result.output
    await d.settle()
    with pytest.raises(NotFound, match="has finished"):
        await d.front.send_decision(run.run_id, decided.call_id, approved=True)
