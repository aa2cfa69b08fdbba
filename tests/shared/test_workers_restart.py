"""Redis, then Postgres, restarted under runs executing on real worker processes.

Redis is flushed, then restarts empty (no persistence): the streams lose their
earlier events, the leases and the queue's bookkeeping vanish. The runs in hand still end, their
writers carry on after their last seq, and every client following a run sees
its ``run_finished`` with no seq twice. Postgres restarts with its data: the
pools reconnect and the runs end as if nothing happened. Afterwards the
deployment takes new runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis

from kortix_lab.agentpress import events as ev
from tests.shared.conftest import (
    TERMINAL,
    Deployment,
    Follower,
    Front,
    check_stream,
    check_thread,
)
from tests.support.services import PrivatePostgres, PrivateRedis

END_S = 60.0
RUNS = 4


async def runs_in_flight(front: Front, count: int) -> dict[str, Follower]:
    """``count`` long runs, each streaming on a worker."""
    started = [await front.start(f"run {i} through the restart") for i in range(count)]
    await asyncio.gather(*(stream.until_type(ev.TextDelta, END_S, count=3)
                           for _, stream in started))
    for run, _ in started:
        assert (await front.run(run.run_id)).status == "running"
    return {run.run_id: stream for run, stream in started}


async def then_a_new_run_completes(front: Front) -> None:
    run, stream = await front.start("after the restart", model="scripted/slow")
    final = check_stream(await stream.finished(END_S))
    assert final.status == (await front.until_terminal(run.run_id, END_S)).status \
        == "completed"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_runs_end_and_streams_finish_through_a_redis_flush_and_restart(
        deployments: Callable[..., Deployment], fresh_database: str,
        private_redis: PrivateRedis) -> None:
    deployment = deployments(database_url=fresh_database, redis=private_redis.url,
                             prefix="kortix-test:restart:")
    deployment.migrate()
    workers = await deployment.start_workers(2)
    front = deployment.front()
    streams = await runs_in_flight(front, RUNS)

    restarted = datetime.now(UTC)
    # Flushed first, with Redis up: every lease is gone at once while the sweepers look
    # (each live holder must take its own back before a sweeper judges it dead) …
    client = redis.Redis.from_url(private_redis.url)
    try:
        client.flushall()
    finally:
        client.close()
    await asyncio.sleep(1.0)
    # … then restarted empty, down for a moment (less than a lease).
    await asyncio.to_thread(private_redis.stop)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(private_redis.start)

    for run_id, stream in streams.items():
        events = await stream.finished(END_S)
        final = check_stream(events, complete=False)  # earlier events may be gone
        record = await front.until_terminal(run_id, END_S)
        assert record.finished_at is not None and record.finished_at > restarted, \
            "the run was still going when Redis went down"
        assert record.status == final.status, (record.status, final.status, record.error)
        # Nobody else held the leases, so each holder took its own back and went on.
        assert record.status == "completed", record.error
        check_thread(front.store, record.thread_id, [run_id])
    await then_a_new_run_completes(front)
    assert all(w.proc.poll() is None for w in workers), deployment.logs()
    assert all(r.status in TERMINAL for r in front.store.list_runs())


@pytest.mark.slow
@pytest.mark.asyncio
async def test_runs_end_and_streams_finish_through_a_postgres_restart(
        deployments: Callable[..., Deployment], private_postgres: PrivatePostgres,
        redis_url: str, redis_prefix: str) -> None:
    deployment = deployments(database_url=private_postgres.url, redis=redis_url,
                             prefix=redis_prefix)
    deployment.migrate()
    workers = await deployment.start_workers(1)
    front = deployment.front()
    streams = await runs_in_flight(front, RUNS)

    restarted = datetime.now(UTC)
    await asyncio.to_thread(private_postgres.restart)

    for run_id, stream in streams.items():
        events = await stream.finished(END_S)
        final = check_stream(events)  # Redis kept every event
        record = await front.until_terminal(run_id, END_S)
        assert record.finished_at is not None and record.finished_at > restarted, \
            "the run was still going when Postgres went down"
        assert record.status == final.status, (record.status, final.status, record.error)
        assert record.status == "completed", record.error
        check_thread(front.store, record.thread_id, [run_id])
    await then_a_new_run_completes(front)
    assert all(w.proc.poll() is None for w in workers), deployment.logs()
    assert all(r.status in TERMINAL for r in front.store.list_runs())
