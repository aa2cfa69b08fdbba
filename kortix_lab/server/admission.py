"""Admission control: the checks Kortix makes before it enqueues a run.

The RunManager queues whatever it is given; a shared server must say no
instead, early and with a reason, when too many runs are active or a budget is
spent (HTTP 429). Two concurrent requests must never both take the last slot.

In the embedded deployment (runs execute here, no gate) the count is this
manager's runs plus the starts admitted but not yet returned from the manager.
Checking and reserving is one step (no ``await`` between them), so starts do not
queue behind each other's store writes: many can be storing their runs at once.
A run is counted twice only between its registration in the manager and the end
of its admission, and no ``await`` separates the two, so no other start sees it
counted twice (were there one, it could only refuse early, never admit one too
many).

In the shared deployment the count is the account's queued and running runs
in Postgres (``RunManager.count_active``: every server's and worker's), the
limit is the account's (``max_runs_per_account``), and "one at a time" spans
the servers: a ``gate`` (a short Redis lease per account) is held around the
check and the registration, inside this process's own lock. Starts are admitted
one at a time there: the count is read from the store, so it cannot see a start
still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

from ..agentpress.store import Store
from ..runs.manager import RunManager
from .errors import RunLimited


class Admission:
    def __init__(self, manager: RunManager, store: Store, *, max_parallel: int,
                 max_queued: int = 0, daily_cost_budget: float | None = None,
                 account_id: str | None = None,
                 gate: Callable[[], AbstractAsyncContextManager[None]] | None = None) -> None:
        """``account_id`` set means the shared deployment: ``max_parallel`` is then the
        account's limit across all servers and ``gate`` serialises starts across them."""
        self._manager = manager
        self._store = store
        self.max_parallel = max_parallel
        self.max_queued = max_queued
        self.daily_cost_budget = daily_cost_budget
        self.account_id = account_id
        self._gate = gate
        self._one_at_a_time = asyncio.Lock()
        self._starting = 0  # embedded: admitted starts not yet returned from the manager

    @property
    def limit(self) -> int:
        return self.max_parallel + self.max_queued

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold the admission while the run is being started; raise ``RunLimited`` when
        refused."""
        if self._gate is None and not self._manager.dispatching:
            # Embedded: check and reserve in one step, then start without a lock.
            active = len(self._manager.active_runs()) + self._starting
            if active >= self.limit:
                raise RunLimited(self._over_limit(active), limit="parallel_runs")
            self._starting += 1
            try:
                await self._check_budget()
                yield
            finally:
                self._starting -= 1
            return
        async with self._one_at_a_time, \
                (self._gate() if self._gate is not None else contextlib.nullcontext()):
            active = await self._manager.count_active()
            if active >= self.limit:
                raise RunLimited(self._over_limit(active), limit="parallel_runs")
            await self._check_budget()
            yield

    def _over_limit(self, active: int) -> str:
        if self.account_id is not None:
            return (f"{active} runs of account {self.account_id!r} are queued or running "
                    f"across all servers; the account may have {self.limit} at once "
                    "(KortixLabApp.max_runs_per_account, $KORTIX_LAB_MAX_RUNS_PER_ACCOUNT). "
                    "Wait for one to finish or stop one.")
        queued = f" and {self.max_queued} queued" if self.max_queued else ""
        return (f"{active} runs are active; this server allows {self.max_parallel} at "
                f"once{queued} (KortixLabApp.max_parallel_runs). Wait for one to finish "
                "or stop one.")

    async def _check_budget(self) -> None:
        if self.daily_cost_budget is None:
            return
        spent = await asyncio.to_thread(self.spent_last_day)
        if spent >= self.daily_cost_budget:
            whose = f" of account {self.account_id!r}" if self.account_id is not None else ""
            raise RunLimited(
                f"the daily cost budget{whose} of ${self.daily_cost_budget:.2f} is spent "
                f"(${spent:.2f} in the last 24 hours; KortixLabApp.daily_cost_budget)",
                limit="daily_cost_budget")

    def spent_last_day(self) -> float:
        """What the store's runs (the account's, in the shared deployment) of the last 24
        hours cost."""
        since = datetime.now(UTC) - timedelta(days=1)
        return sum(run.cost for run in self._store.list_runs()
                   if _aware(run.created_at) >= since)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)

