"""Stops and approval decisions cross processes: from a front (the test process, as a
server would) to runs executing in real ``kortix-lab worker`` processes.

The tests that need a worker share one (``one_worker``, started once for the
module); each test works in an account of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from kortix_lab.agentpress import events as ev
from kortix_lab.agentpress.errors import NotFound
from tests.shared.conftest import Deployment, Front, check_stream, check_thread
from tests.support.services import create_database, delete_prefix, drop_database, new_prefix

END_S = 60.0  # a generous deadline for anything that should take a second or two


@pytest.fixture(scope="module")
def one_worker_deployment(pg_admin_url: str, redis_url: str,
                          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    database, prefix = create_database(pg_admin_url), new_prefix()
    folder: Path = tmp_path_factory.mktemp("one-worker")
    deployment = Deployment(database_url=database, redis=redis_url, prefix=prefix,
                            folder=folder)
    try:
        deployment.migrate()
        deployment.start_worker().wait_ready()
        yield deployment
    finally:
        for worker in deployment.workers:
            worker.cleanup()
        drop_database(pg_admin_url, database)
        delete_prefix(redis_url, prefix)


@pytest_asyncio.fixture
async def one_worker(one_worker_deployment: Deployment) -> AsyncIterator[Deployment]:
    """The module's deployment with its one worker; this test's fronts are closed after."""
    deployment = one_worker_deployment
    [worker] = deployment.workers
    assert worker.proc.poll() is None, f"the worker died:\n{worker.log()}"
    yield deployment
    fronts, deployment.fronts = deployment.fronts, []
    for front in fronts:
        await front.aclose()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_stop_from_another_process_ends_the_run_on_its_worker(
        one_worker: Deployment) -> None:
    deployment = one_worker
    [worker] = deployment.workers
    starter = deployment.front()
    run, follower = await starter.start("a long task")
    await follower.until_type(ev.TextDelta, END_S)
    assert (await starter.run(run.run_id)).status == "running"

    # Another server of the deployment (same account) stops it.
    other = deployment.front(starter.account)
    assert await other.manager.stop_run(run.run_id, "enough for today")
    final = check_stream(await follower.finished(END_S))
    record = await starter.until_terminal(run.run_id, END_S)
    assert final.status == record.status == "stopped"
    assert final.reason == record.error == "enough for today"
    check_thread(starter.store, run.thread_id, [run.run_id])
    assert worker.proc.poll() is None, "the worker goes on"
    assert not await other.manager.stop_run(run.run_id, "again"), "a finished run is left"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_stop_of_a_queued_run_with_no_worker_ends_it_at_once(
        deployments: Callable[..., Deployment], fresh_database: str, redis_url: str,
        redis_prefix: str) -> None:
    deployment = deployments(database_url=fresh_database, redis=redis_url,
                             prefix=redis_prefix)
    deployment.migrate()
    front = deployment.front()
    run, follower = await front.start("nobody will take this", model="scripted/slow")
    assert front.queue.pending() == 1

    assert await front.manager.stop_run(run.run_id, "changed my mind")
    record = await front.run(run.run_id)  # at once: no worker was involved
    assert record.status == "stopped" and record.error == "changed my mind"
    final = check_stream(await follower.finished(END_S))
    assert final.status == "stopped" and final.reason == "changed my mind"

    # A worker that starts later takes the message and leaves the run alone.
    worker = deployment.start_worker()
    await worker.ready()
    deadline = asyncio.get_running_loop().time() + END_S
    while f"run {run.run_id} (account {front.account}) ended stopped" not in worker.log(10**6):
        assert asyncio.get_running_loop().time() < deadline, worker.log()
        await asyncio.sleep(0.1)
    assert front.queue.pending() == 0
    record = await front.run(run.run_id)
    assert record.status == "stopped" and record.error == "changed my mind"
    assert record.owner is None, "no worker executed it"
    assert await front.events.last_seq(run.run_id) == 2, "nothing after run_finished"
    assert [m.type for m in front.store.get_messages(run.thread_id)] == ["user"]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_stop_recorded_in_postgres_reaches_the_run_when_redis_loses_it(
        one_worker: Deployment) -> None:
    deployment = one_worker
    front = deployment.front()
    run, follower = await front.start("a long task")
    await follower.until_type(ev.TextDelta, END_S)

    # A server whose control messages go nowhere the worker listens (as if Redis lost
    # them): only the stop recorded on the run in Postgres can reach the worker.
    lost = dataclasses.replace(deployment.settings,
                               redis_prefix=f"{deployment.settings.redis_prefix}void:")
    elsewhere = Front(lost, front.account, model="scripted/long")
    deployment.fronts.append(elsewhere)
    assert await elsewhere.manager.stop_run(run.run_id, "stopped through the database")
    assert await front.control.stop_requested(run.run_id) is None, "nothing in Redis"
    assert front.store.recorded_stop(run.run_id) == "stopped through the database"

    final = check_stream(await follower.finished(END_S))
    record = await front.until_terminal(run.run_id, END_S)
    assert final.status == record.status == "stopped"
    assert final.reason == record.error == "stopped through the database"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_an_approval_decision_from_the_front_reaches_the_run_on_a_worker(
        one_worker: Deployment) -> None:
    deployment = one_worker
    front = deployment.front()
    # Denied: the risky command never runs, the model is told why and the run goes on.
    denied, denied_stream = await front.start("please clean the workspace",
                                              model="scripted/approvals",
                                              approval_default="ask")
    # Approved: the terminating `complete` call (every tool asks under "ask") runs.
    approved, approved_stream = await front.start("hello there", model="scripted/hello",
                                                  approval_default="ask")
    other = deployment.front(front.account)  # any server of the deployment may answer
    for run_id, stream, approve, reason in (
            (denied.run_id, denied_stream, False, "not on my watch"),
            (approved.run_id, approved_stream, True, "fine")):
        [asked] = await stream.until_type(ev.ApprovalRequested, END_S)
        assert isinstance(asked, ev.ApprovalRequested)
        await other.manager.send_decision(run_id, asked.call_id, approved=approve,
                                          reason=reason)

    events = await denied_stream.finished(END_S)
    check_stream(events)
    [decided] = [e for e in events if isinstance(e, ev.ApprovalDecided)]
    assert decided.tool == "execute_command" and not decided.approved
    assert decided.reason == "not on my watch"
    [result] = [e for e in events if isinstance(e, ev.ToolFinished)]
    assert not result.success and "denied by the user: not on my watch" in result.output
    record = await front.until_terminal(denied.run_id, END_S)
    assert record.status == "completed"
    messages = check_thread(front.store, denied.thread_id, [denied.run_id])
    assert any(m.type == "tool" and "not on my watch" in str(m.content) for m in messages)
    assert "nothing was deleted" in str(messages[-1].content)

    events = await approved_stream.finished(END_S)
    check_stream(events)
    [decided] = [e for e in events if isinstance(e, ev.ApprovalDecided)]
    assert decided.tool == "complete" and decided.approved
    [result] = [e for e in events if isinstance(e, ev.ToolFinished)]
    assert result.success
    assert (await front.until_terminal(approved.run_id, END_S)).status == "completed"
    with pytest.raises(NotFound, match="has finished"):
        await other.manager.send_decision(approved.run_id, asked.call_id, approved=True)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_queued_run_whose_message_was_lost_is_sent_again_and_runs_once(
        deployments: Callable[..., Deployment], fresh_database: str, redis_url: str,
        redis_prefix: str) -> None:
    """Redis restarted without persistence before any worker took the message: the run
    is in Postgres, its message is not. A worker's sweeper re-sends it
    (``KORTIX_LAB_RESEND_AFTER_S``) and the run executes, once."""
    import redis as redis_client

    deployment = deployments(database_url=fresh_database, redis=redis_url,
                             prefix=redis_prefix, env={"KORTIX_LAB_RESEND_AFTER_S": "1"})
    deployment.migrate()
    front = deployment.front()
    run, follower = await front.start("is anybody there?", model="scripted/slow")
    assert front.queue.pending() == 1
    client = redis_client.Redis.from_url(redis_url)
    try:  # lose the queue (and only the queue) the way a restart would
        queue_keys = list(client.scan_iter(match=f"{redis_prefix.rstrip(':')}:dramatiq*"))
        assert queue_keys and client.delete(*queue_keys)
    finally:
        client.close()
    assert front.queue.pending() == 0
    assert (await front.run(run.run_id)).status == "queued"

    worker = deployment.start_worker()
    await worker.ready()
    record = await front.until_terminal(run.run_id, END_S)
    assert record.status == "completed", worker.log()
    assert worker.executes(record.owner)
    check_stream(await follower.finished(END_S))
    check_thread(front.store, run.thread_id, [run.run_id])
    assert "its message was sent again" in worker.log(10**6)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_run_registry_shows_which_worker_executes_which_run(
        one_worker: Deployment) -> None:
    """Workers keep the shared active-run registry: while a run executes it is listed
    under its worker's instance, and it is gone once it ends. MCP schemas are cached in
    Redis by the same workers (``RedisSchemaCache``)."""
    from kortix_lab.shared.registry import RedisRunRegistry

    deployment = one_worker
    [worker] = deployment.workers
    assert deployment.settings.redis_url is not None
    registry = RedisRunRegistry(deployment.settings.redis_url, "observer",
                                prefix=deployment.settings.redis_prefix)
    try:
        front = deployment.front()
        run, follower = await front.start("a long task")
        await follower.until_type(ev.TextDelta, END_S)
        record = await front.run(run.run_id)
        listed = await registry.active_runs()
        assert listed.get(run.run_id) == record.owner
        assert worker.executes(record.owner)
        assert (await registry.instances()).get(record.owner) is True
        await front.manager.stop_run(run.run_id, "seen enough")
        check_stream(await follower.finished(END_S))
        deadline = asyncio.get_running_loop().time() + END_S
        while run.run_id in await registry.active_runs():
            assert asyncio.get_running_loop().time() < deadline, "still listed"
            await asyncio.sleep(0.05)
    finally:
        await registry.aclose()
