"""The sweeper: a run whose executor died is marked failed, with the reason — never stuck.

In the shared deployment every process that executes a run holds its lease
(``runs.lease``) for as long as it runs, and takes the lease *before* it marks
the run ``running``. So a run that Postgres says is ``running`` while nobody
holds its lease has lost its executor (killed, frozen past its lease, its host
gone). The sweeper, on any number of hosts, every ``interval_s``:

1. lists queued and running runs across all accounts (``active_runs_all_accounts``);
2. skips runs that are queued (the queue owns them), started less than
   ``grace_s`` ago, or whose lease is held — or was free for less than
   ``free_s``: after a Redis flush or restart *every* lease is gone for a moment,
   and a live holder takes its own back at its next heartbeat (``lease_s / 3``),
   so only a lease that stays free for a whole lease period means a dead holder;
3. *acquires* the lease itself — of two sweepers, or a sweeper and a worker
   re-taking its lapsed lease, exactly one wins, so nothing is swept twice
   and a live worker is never swept;
4. re-reads the run, and if it is still ``running`` marks it ``failed`` with
   the reason, then appends ``run_finished`` to the run's event log so every
   client's stream ends; releases the lease.

A queued run is the queue's, with one exception: its message can be lost (Redis
restarted without persistence before a worker took it, or a message
dead-lettered by an infrastructure error). Given ``resend``, the sweeper sends
the message again for every queued run older than ``resend_after_s`` that
nobody holds, and again each ``resend_after_s`` while it stays queued. A
duplicate message is harmless: whoever takes a run takes its lease first and
re-reads its status, so it executes once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kortix_lab.agentpress import events as ev
from kortix_lab.agentpress.errors import NotFound
from kortix_lab.agentpress.store import AgentRun
from kortix_lab.runs.event_log import EventLog
from kortix_lab.runs.lease import LeaseLock
from kortix_lab.store.postgres_store import PostgresStore, active_runs_all_accounts

log = logging.getLogger(__name__)

REASON = ("the process running it ({owner}) stopped renewing its lease (it died or hung); "
          "marked failed by the sweeper")


# Send a queued run's message again: (account_id, run_id).
Resend = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Swept:
    account_id: str
    run_id: str
    thread_id: str
    reason: str


class Sweeper:
    def __init__(self, database_url: str, *, lock: LeaseLock, log: EventLog,
                 owner: str | None = None, grace_s: float = 30.0, hold_s: float = 60.0,
                 free_s: float = 0.0, resend: Resend | None = None,
                 resend_after_s: float = 120.0) -> None:
        self.database_url = database_url
        self.lock = lock
        self.log = log
        self.owner = owner or f"sweeper:{socket.gethostname()}:{os.getpid()}"
        self.grace_s = grace_s
        self.hold_s = hold_s
        self.free_s = free_s
        self._stores: dict[str, PostgresStore] = {}
        self._free_since: dict[str, float] = {}  # run id -> when its lease was seen free
        self.resend = resend
        self.resend_after_s = resend_after_s
        self._resent: dict[str, float] = {}  # run id -> when this sweeper last re-sent it
        self.resent_total = 0

    def _store(self, account_id: str) -> PostgresStore:
        store = self._stores.get(account_id)
        if store is None:
            store = self._stores[account_id] = PostgresStore(
                self.database_url, account_id=account_id, min_size=0, max_size=2)
        return store

    async def sweep_once(self) -> list[Swept]:
        """One pass; returns the runs this sweeper marked failed."""
        active = await asyncio.to_thread(active_runs_all_accounts, self.database_url)
        cutoff = datetime.now(UTC) - timedelta(seconds=self.grace_s)
        now = time.monotonic()
        swept: list[Swept] = []
        free_since, self._free_since = self._free_since, {}
        await self._resend_stale(active, now)
        for account_id, run in active:
            if run.status != "running" or (run.started_at or run.created_at) > cutoff:
                continue
            if await self.lock.holder(run.run_id) is not None:
                continue
            seen = self._free_since[run.run_id] = free_since.get(run.run_id, now)
            if now - seen < self.free_s:
                continue  # its holder may be about to take it back
            if not await self.lock.acquire(run.run_id, self.owner, self.hold_s):
                continue  # a worker re-took it, or another sweeper is on it
            try:
                done = await self._fail(account_id, run.run_id)
            finally:
                await self.lock.release(run.run_id, self.owner)
            if done is not None:
                swept.append(done)
        return swept

    async def _resend_stale(self, active: list[tuple[str, AgentRun]], now: float) -> None:
        """Send the message of every queued run that waited ``resend_after_s`` again."""
        queued = {run.run_id for _, run in active if run.status == "queued"}
        self._resent = {rid: at for rid, at in self._resent.items() if rid in queued}
        if self.resend is None:
            return
        cutoff = datetime.now(UTC) - timedelta(seconds=self.resend_after_s)
        for account_id, run in active:
            if run.status != "queued" or run.created_at > cutoff:
                continue
            last = self._resent.get(run.run_id)
            if last is not None and now - last < self.resend_after_s:
                continue
            if await self.lock.holder(run.run_id) is not None:
                continue  # a worker is taking it right now
            await self.resend(account_id, run.run_id)
            self._resent[run.run_id] = now
            self.resent_total += 1
            log.warning("run %s (account %s) queued since %s: its message was sent again",
                        run.run_id, account_id, run.created_at.isoformat())

    async def _fail(self, account_id: str, run_id: str) -> Swept | None:
        store = self._store(account_id)
        try:
            run = await asyncio.to_thread(store.get_run, run_id)
        except NotFound:
            return None  # deleted with its thread meanwhile
        if run.status != "running":
            return None  # it finished between the listing and the lease
        reason = REASON.format(owner=run.owner or "unknown")
        await asyncio.to_thread(store.update_run, run_id, status="failed", error=reason,
                                finished=True)
        with contextlib.suppress(RuntimeError):  # its log already ended: nothing to add
            await self.log.append(run_id, ev.RunFinished(status="failed",
                                                         thread_id=run.thread_id,
                                                         reason=reason))
        log.warning("run %s (account %s) swept: %s", run_id, account_id, reason)
        return Swept(account_id, run_id, run.thread_id, reason)

    async def run(self, stop: asyncio.Event, *, interval_s: float = 10.0) -> None:
        """Sweep every ``interval_s`` until ``stop`` is set; errors are logged, not fatal."""
        while not stop.is_set():
            try:
                await self.sweep_once()
            except Exception:
                log.exception("sweep failed; trying again in %.0f s", interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
