"""SIGTERM to a ``kortix-lab worker`` during a run: never a crash, never a run left running.

With a grace period the run in hand finishes; with ``--grace 0`` it ends
``stopped`` with the shutdown reason. Either way the worker exits 0, and a run
queued meanwhile is left to the queue for the next worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from kortix_lab.agentpress import events as ev
from kortix_lab.config import Settings, SharedSettings
from kortix_lab.shared.worker import SHUTDOWN_REASON, WorkerHost
from tests.shared.conftest import TERMINAL, Deployment, check_stream, check_thread

END_S = 60.0


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sigterm_during_a_run_finishes_it_or_stops_it_and_exits_0(
        deployments: Callable[..., Deployment], fresh_database: str, redis_url: str,
        redis_prefix: str) -> None:
    # Two queues on one database: a worker with a grace period, and one without.
    patient = deployments(database_url=fresh_database, redis=redis_url,
                          prefix=f"{redis_prefix}patient:")
    hasty = deployments(database_url=fresh_database, redis=redis_url,
                        prefix=f"{redis_prefix}hasty:")
    patient.migrate()
    patient_worker, hasty_worker = await asyncio.gather(
        patient.start_worker(grace_s=30).ready(), hasty.start_worker(grace_s=0).ready())
    account = patient.front().account
    front, hasty_front = patient.fronts[0], hasty.front(account)
    finishing, finishing_stream = await front.start("finish me")
    cut, cut_stream = await hasty_front.start("stop me", model="scripted/long")
    await asyncio.gather(finishing_stream.until_type(ev.TextDelta, END_S),
                         cut_stream.until_type(ev.TextDelta, END_S))

    patient_worker.terminate()
    hasty_worker.terminate()
    # Queued while the patient worker shuts down (Dramatiq's worker process notices
    # SIGTERM within a second): it does not take it, nor lose it.
    deadline = asyncio.get_running_loop().time() + END_S
    while "Shutting down..." not in patient_worker.log(10**7):
        assert asyncio.get_running_loop().time() < deadline, patient_worker.log()
        await asyncio.sleep(0.05)
    later, later_stream = await front.start("queued during the shutdown",
                                            model="scripted/slow")
    successor = patient.start_worker()  # boots while the others shut down
    codes = await asyncio.gather(asyncio.to_thread(patient_worker.wait, END_S),
                                 asyncio.to_thread(hasty_worker.wait, END_S))
    assert codes == [0, 0], patient.logs() + hasty.logs()
    for worker in (patient_worker, hasty_worker):
        assert "Traceback" not in worker.log(10**7), worker.log()

    final = check_stream(await finishing_stream.finished(END_S))
    record = await front.run(finishing.run_id)
    assert final.status == record.status == "completed", record.error
    assert "Shutting down..." in patient_worker.log(10**7).split(
        f"run {finishing.run_id}")[0], "the run was still going when the shutdown began"
    final = check_stream(await cut_stream.finished(END_S))
    record = await front.run(cut.run_id)
    assert final.status == record.status == "stopped"
    assert final.reason == record.error == SHUTDOWN_REASON
    running = [r for r in await asyncio.to_thread(front.store.list_runs, statuses=["running"])
               if r.owner not in successor.owners()]
    assert running == [], "no run is left running by the workers that shut down"

    # The next worker takes the run queued during the shutdown.
    final = check_stream(await later_stream.finished(END_S))
    record = await front.until_terminal(later.run_id, END_S)
    assert final.status == record.status == "completed"
    assert successor.executes(record.owner), "executed by the next worker"
    for run in (finishing, cut, later):
        check_thread(front.store, run.thread_id, [run.run_id])
    assert all(r.status in TERMINAL for r in front.store.list_runs())


@pytest.mark.asyncio
async def test_a_run_handed_to_a_worker_that_is_shutting_down_goes_back_to_the_queue(
        redis_url: str, redis_prefix: str) -> None:
    """Raising instead would dead-letter the message (retries are off): the run would
    stay queued for ever."""
    sent: list[tuple[str, str]] = []

    async def requeue(account_id: str, run_id: str) -> None:
        sent.append((account_id, run_id))

    shared = SharedSettings(database_url="postgresql://nobody@127.0.0.1:1/none",
                            redis_url=redis_url, redis_prefix=redis_prefix)
    host = WorkerHost(Settings(store=":memory:"), shared, sweep=False, requeue=requeue)
    try:
        draining = asyncio.create_task(host.drain())
        await asyncio.wait_for(draining, 10)  # nothing in hand: at once
        await host.execute("acct", "run-1")
        assert sent == [("acct", "run-1")]
        assert host.active_runs() == []
    finally:
        await host.aclose()
