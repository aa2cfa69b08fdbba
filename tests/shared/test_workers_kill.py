"""kill -9 of a worker in the middle of a run, twenty times, with real worker processes.

Three ``kortix-lab worker`` processes share the queue; each is killed (``SIGKILL``
to its master and worker processes at once) while it streams a run, and restarted
at once. Each run that a kill cut off must end (``failed``, with the reason) within
seconds — swept by the surviving worker once its lease lapsed, or failed by the
worker its queue message was redelivered to — never run twice, never stuck; the
runs beside it (on other threads, and a conversation on one thread) go on or end
the same way; no message is stored twice or lost, and every client's stream
ends with one ``run_finished``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from kortix_lab.agentpress import events as ev
from kortix_lab.agentpress.store import AgentRun
from tests.shared.conftest import (
    TERMINAL,
    Deployment,
    Follower,
    Front,
    check_stream,
    check_thread,
)

KILLS = 20
# Two would do; a third keeps a booted worker at hand while a killed one restarts.
WORKERS = 3
# A killed run must end within this after the kill (lease 2 s + sweep 0.3 s, or the
# queue's redelivery after 3 s; the rest is slack for a loaded machine).
END_AFTER_KILL_S = 40.0


async def conversation(front: Front, thread: str, turns: int, done: list[AgentRun],
                       streams: dict[str, Follower]) -> None:
    """Runs on one thread, one after another, while workers die around them."""
    for turn in range(turns):
        run, follower = await front.start(f"turn {turn} of the conversation", thread=thread,
                                          model="scripted/slow")
        streams[run.run_id] = follower
        await follower.finished(120)
        done.append(await front.until_terminal(run.run_id, 60))


@pytest.mark.slow
@pytest.mark.asyncio
async def test_kill9_in_the_middle_of_runs_twenty_times(
        deployments: Callable[..., Deployment], fresh_database: str, redis_url: str,
        redis_prefix: str) -> None:
    deployment = deployments(database_url=fresh_database, redis=redis_url,
                             prefix=redis_prefix)
    deployment.migrate()
    await deployment.start_workers(WORKERS)
    front = deployment.front()
    loop = asyncio.get_running_loop()

    killed: dict[str, float] = {}  # run id -> when its worker was killed
    cut_off: dict[str, Follower] = {}
    bystanders: dict[str, Follower] = {}
    said: list[AgentRun] = []
    talk: dict[str, Follower] = {}
    chat = asyncio.create_task(conversation(front, "conversation", 6, said, talk))
    try:
        for i in range(KILLS):
            if i % 2 == 0:  # a run beside the victims, which the kills may or may not hit
                run, follower = await front.start(f"bystander {i}", model="scripted/slow")
                bystanders[run.run_id] = follower
            run, follower = await front.start(f"victim {i}")
            cut_off[run.run_id] = follower
            # Kill at various points: just started, a few deltas in, well into the reply.
            cut = (2, 5, 12)[i % 3]
            await follower.until(lambda es, cut=cut: len(es) >= cut, 90,
                                 what=f"{cut} events")
            owner = (await front.run(run.run_id)).owner
            victim = deployment.worker_of(owner)
            assert victim is not None, f"no live worker is {owner}:\n{deployment.logs()}"
            victim.kill9()
            killed[run.run_id] = loop.time()
            deployment.start_worker()  # restarted at once; it boots while the other works
        await chat
    finally:
        if not chat.done():
            chat.cancel()

    # Every run cut off ends failed, with the reason, soon after its worker died.
    swept = 0
    for run_id, follower in cut_off.items():
        left = END_AFTER_KILL_S - (loop.time() - killed[run_id])
        events = await follower.finished(max(left, 1.0))
        record = await front.until_terminal(run_id, max(left, 1.0))
        final = check_stream(events)
        assert record.status == "failed" == final.status, (record.status, final.status)
        assert record.error is not None and record.error == final.reason
        # Swept by another worker, or failed by the one its message was redelivered to.
        assert "marked failed by the sweeper" in record.error or \
            "stopped before it finished" in record.error, record.error
        swept += "sweeper" in record.error
        assert record.finished_at is not None
    assert swept, "the surviving workers swept the dead one's runs"
    # Runs beside them end too, whichever way the kills treated them, and agree with
    # their streams.
    others = {**bystanders, **talk}
    for run_id, follower in others.items():
        events = await follower.finished(END_AFTER_KILL_S)
        record = await front.until_terminal(run_id, END_AFTER_KILL_S)
        final = check_stream(events)
        assert record.status == final.status and record.status in TERMINAL
        if record.status == "completed":
            assert any(isinstance(e, ev.AssistantMessage) for e in events)
    assert len(said) == 6, "the conversation went on after each turn ended"

    # Nothing executed twice, nothing lost, nothing left running.
    all_runs = await asyncio.to_thread(front.store.list_runs)
    assert {r.run_id for r in all_runs} == {*cut_off, *others}
    assert not [r.run_id for r in all_runs if r.status not in TERMINAL]
    for thread_id in {r.thread_id for r in all_runs}:
        messages = check_thread(front.store, thread_id,
                                [r.run_id for r in all_runs if r.thread_id == thread_id])
        for run in (r for r in all_runs if r.thread_id == thread_id):
            replies = [m for m in messages if m.run_id == run.run_id and m.type == "assistant"]
            if run.status == "completed":
                assert len(replies) == 1, (run.run_id, len(replies))
            elif run.run_id in cut_off:
                assert not replies, f"run {run.run_id} was cut off but has a stored reply"
            else:  # killed after storing its reply, before storing its status: once
                assert len(replies) <= 1, (run.run_id, len(replies))
    assert sum(w.killed for w in deployment.workers) == KILLS
    assert sum(not w.killed for w in deployment.workers) == WORKERS, "each was restarted"
