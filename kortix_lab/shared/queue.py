"""The run queue: Dramatiq on Redis. Servers send ``(account_id, run_id)``; workers execute.

A message holds two ids and nothing else: the run's configuration is in its
Postgres record (``runs.payload``), so a message redelivered after a worker
died finds the same run, and the lease (``runs.lease``) decides whether it may
still execute — a run never executes twice.

Dramatiq's Redis broker keeps a message unacknowledged while its actor runs;
if the worker dies, the message is redelivered after ``queue_heartbeat_s``.
Retries are off (a failed run is a final answer for its user, with the
reason), and so is the time limit (runs end by their own budgets and limits).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..config import SharedSettings

if TYPE_CHECKING:
    from dramatiq import Actor
    from dramatiq.brokers.redis import RedisBroker

    from ..agentpress.store import AgentRun

QUEUE_NAME = "kortix-lab-runs"
ACTOR_NAME = "kortix_lab_execute_run"
# Dramatiq's TimeLimit middleware would interrupt a run after 10 minutes by default.
NO_TIME_LIMIT_MS = 7 * 24 * 3600 * 1000
# Out of dramatiq.brokers.redis.MAINTENANCE_SCALE (1 000 000) commands.
MAINTENANCE_CHANCE = 200_000

ExecuteFn = Callable[[str, str], Awaitable[None]]


def namespace(settings: SharedSettings) -> str:
    """The broker's key namespace: derived from the prefix, so deployments sharing one
    Redis (or tests) never see each other's queues."""
    return f"{settings.redis_prefix.rstrip(':')}:dramatiq"


def make_broker(settings: SharedSettings, *, for_worker: bool) -> RedisBroker:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import AsyncIO

    settings.check()
    broker = RedisBroker(url=settings.redis_url, namespace=namespace(settings),  # type: ignore[no-untyped-call]
                         heartbeat_timeout=int(settings.queue_heartbeat_s * 1000),
                         # Dramatiq counts this chance per million commands (default 1000: one
                         # fetch in a thousand looks for dead workers' messages). One in five
                         # (the check is a cheap ZRANGEBYSCORE while nobody died), so a dead
                         # worker's runs are redelivered soon after its heartbeat, not by luck.
                         maintenance_chance=MAINTENANCE_CHANCE)
    if for_worker:
        broker.add_middleware(AsyncIO())
    dramatiq.set_broker(broker)
    return broker


def declare_actor(broker: RedisBroker, execute: ExecuteFn) -> Actor[Any, Any]:
    import dramatiq

    async def kortix_lab_execute_run(account_id: str, run_id: str) -> None:
        await execute(account_id, run_id)

    decorate = dramatiq.actor(broker=broker, actor_name=ACTOR_NAME, queue_name=QUEUE_NAME,
                              max_retries=0, time_limit=NO_TIME_LIMIT_MS)
    return decorate(kortix_lab_execute_run)


async def _not_here(account_id: str, run_id: str) -> None:
    raise RuntimeError("this process only sends runs; `kortix-lab worker` executes them")


class RunQueue:
    """The sending side, for servers: ``dispatch`` is a ``runs.manager.Dispatch``."""

    def __init__(self, settings: SharedSettings) -> None:
        self.settings = settings
        self.broker = make_broker(settings, for_worker=False)
        self.actor = declare_actor(self.broker, _not_here)

    def dispatcher(self, account_id: str) -> Callable[[AgentRun], Awaitable[None]]:
        import asyncio

        async def dispatch(run: AgentRun) -> None:
            await asyncio.to_thread(self.actor.send, account_id, run.run_id)

        return dispatch

    async def resend(self, account_id: str, run_id: str) -> None:
        """Send a queued run's message again (``shared.sweeper``'s ``resend``)."""
        import asyncio

        await asyncio.to_thread(self.actor.send, account_id, run_id)

    def pending(self) -> int:
        """Messages waiting in the queue (not yet taken by a worker)."""
        client = self.broker.client
        return int(client.llen(f"{namespace(self.settings)}:{QUEUE_NAME}"))

    def close(self) -> None:
        self.broker.close()
