"""The sweeper: runs whose executor died end as failed, with the reason; live runs are left."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from kortix_lab.agentpress import events as ev
from kortix_lab.shared.locks import RedisLeaseLock
from kortix_lab.shared.redis_event_log import RedisEventLog
from kortix_lab.shared.sweeper import Sweeper
from kortix_lab.store import PostgresStore
from tests.runs.event_log_contract import collect
from tests.runs.lease_contract import LONG, until_free
from tests.support.services import create_database, drop_database, new_account

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def database(pg_admin_url: str) -> Iterator[str]:
    """A database of this test's own: the sweeper looks at every account in it."""
    url = create_database(pg_admin_url)
    yield url
    drop_database(pg_admin_url, url)


@pytest_asyncio.fixture
async def parts(redis_url: str, redis_prefix: str
                ) -> AsyncIterator[tuple[RedisLeaseLock, RedisEventLog]]:
    lock = RedisLeaseLock(redis_url, prefix=redis_prefix)
    log = RedisEventLog(redis_url, prefix=redis_prefix)
    yield lock, log
    await lock.aclose()
    await log.aclose()


def running_run(store: PostgresStore, owner: str = "host:1:1") -> str:
    thread = store.create_thread()
    run = store.create_run(thread.thread_id, model="m")
    store.update_run(run.run_id, status="running", owner=owner, started=True)
    return run.run_id


@pytest.mark.asyncio
async def test_only_running_runs_without_a_lease_are_swept(
        database: str, parts: tuple[RedisLeaseLock, RedisEventLog]) -> None:
    lock, log = parts
    a = PostgresStore(database, account_id=new_account())
    b = PostgresStore(database, account_id=new_account())
    try:
        orphan_a, orphan_b = running_run(a, "host-x:42:7"), running_run(b)
        live = running_run(a)
        await lock.acquire(live, "worker-1", LONG)
        queued = a.create_run(a.create_thread().thread_id, model="m").run_id
        done = running_run(a)
        a.update_run(done, status="completed", finished=True)
        log.open(orphan_a)
        await log.append(orphan_a, ev.TextDelta(text="half a reply"))
        follower = asyncio.create_task(collect(log, orphan_a))

        patient = Sweeper(database, lock=lock, log=log, grace_s=3600)
        assert await patient.sweep_once() == [], "runs started within the grace are left"
        patient.close()
        sweeper = Sweeper(database, lock=lock, log=log, grace_s=0)
        swept = await sweeper.sweep_once()
        assert {s.run_id for s in swept} == {orphan_a, orphan_b}

        failed = a.get_run(orphan_a)
        assert failed.status == "failed" and failed.finished_at is not None
        assert failed.error is not None and "host-x:42:7" in failed.error
        assert "lease" in failed.error
        assert b.get_run(orphan_b).status == "failed"
        assert a.get_run(live).status == "running"
        assert a.get_run(queued).status == "queued"
        assert a.get_run(done).status == "completed"
        # The client following the orphan's stream is told, and its stream ends.
        events = await asyncio.wait_for(follower, 30)
        assert isinstance(events[-1], ev.RunFinished) and events[-1].status == "failed"
        assert await lock.holder(orphan_a) is None, "the sweeper lets go"
        assert await sweeper.sweep_once() == []
        sweeper.close()
    finally:
        a.close()
        b.close()


@pytest.mark.asyncio
async def test_two_sweepers_sweep_each_run_once(
        database: str, parts: tuple[RedisLeaseLock, RedisEventLog]) -> None:
    lock, log = parts
    store = PostgresStore(database, account_id=new_account())
    orphans = {running_run(store) for _ in range(8)}
    sweepers = [Sweeper(database, lock=lock, log=log, owner=f"sweeper-{i}", grace_s=0)
                for i in range(2)]
    results = await asyncio.gather(*(s.sweep_once() for s in sweepers))
    ids = [s.run_id for result in results for s in result]
    assert sorted(ids) == sorted(orphans), "every orphan swept, none twice"
    for run_id in orphans:
        finished = [e for e in await collect(log, run_id) if isinstance(e, ev.RunFinished)]
        assert len(finished) == 1
    for s in sweepers:
        s.close()
    store.close()


WORKER = textwrap.dedent("""
    import asyncio, sys
    from kortix_lab.runs.lease import Lease
    from kortix_lab.shared.locks import RedisLeaseLock
    from kortix_lab.store import open_store

    async def main(redis_url, prefix, database_url, account, run_id):
        lock = RedisLeaseLock(redis_url, prefix=prefix)
        async with Lease(lock, run_id, "worker-7", 1.0):
            store = open_store(database_url, account_id=account)
            store.update_run(run_id, status="running", owner="worker-7", started=True)
            print("running", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main(*sys.argv[1:]))
""")


def start_worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WORKER, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.asyncio
async def test_a_run_whose_worker_is_killed_ends_failed_within_the_lease(
        database: str, parts: tuple[RedisLeaseLock, RedisEventLog], redis_url: str,
        redis_prefix: str) -> None:
    lock, log = parts
    store = PostgresStore(database, account_id=new_account())
    thread = store.create_thread()
    run_id = store.create_run(thread.thread_id, model="m").run_id
    worker = start_worker(redis_url, redis_prefix, database, store.account_id, run_id)
    sweeper = Sweeper(database, lock=lock, log=log, grace_s=0)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "running"
        assert await sweeper.sweep_once() == [], "a live worker is never swept"
        worker.send_signal(signal.SIGKILL)
        await asyncio.to_thread(worker.wait, 30)
        await until_free(lock, run_id)
        assert [s.run_id for s in await sweeper.sweep_once()] == [run_id]
        run = store.get_run(run_id)
        assert run.status == "failed" and run.error is not None and "worker-7" in run.error
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        sweeper.close()
        store.close()


@pytest.mark.asyncio
async def test_queued_runs_whose_message_may_be_lost_are_sent_again_once_per_period(
        database: str, parts: tuple[RedisLeaseLock, RedisEventLog]) -> None:
    """A Redis restart can lose a queued run's message; the sweeper sends it again —
    not a fresh run, not a running or held one, and not again within the period."""
    lock, log = parts
    store = PostgresStore(database, account_id=new_account())
    sent: list[tuple[str, str]] = []

    async def resend(account_id: str, run_id: str) -> None:
        sent.append((account_id, run_id))

    sweeper = Sweeper(database, lock=lock, log=log, grace_s=3600, resend=resend,
                      resend_after_s=0.5)
    try:
        stale = store.create_run(store.create_thread().thread_id, model="m").run_id
        held = store.create_run(store.create_thread().thread_id, model="m").run_id
        running = running_run(store)
        await lock.acquire(held, "worker-1", 60)
        await asyncio.sleep(0.6)  # both queued runs are now older than resend_after_s
        fresh = store.create_run(store.create_thread().thread_id, model="m").run_id
        await sweeper.sweep_once()
        assert sent == [(store.account_id, stale)]
        await sweeper.sweep_once()  # within the period: not again
        assert sent == [(store.account_id, stale)]
        await asyncio.sleep(0.6)
        await sweeper.sweep_once()
        assert sorted(sent) == sorted([(store.account_id, stale)] * 2
                                      + [(store.account_id, fresh)])
        assert store.get_run(running).status == "running"  # grace 1 h: not swept either
        assert held not in {run_id for _, run_id in sent}
    finally:
        sweeper.close()
        store.close()
