"""Per-run event logs: append stamps ``seq``; readers resume from any ``seq``.

The in-process log keeps events in memory (deltas never touch the store). The
shared deployment replaces it with Redis Streams behind the same Protocol.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Protocol

from ..agentpress.events import Event, RunFinished, utc_now_iso


class EventLog(Protocol):
    def open(self, run_id: str) -> None: ...
    async def append(self, run_id: str, event: Event) -> Event: ...
    def read(self, run_id: str, after_seq: int = 0, *,
             follow: bool = True) -> AsyncIterator[Event]: ...
    def has_run(self, run_id: str) -> bool: ...


class _RunLog:
    __slots__ = ("events", "changed", "finished")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()
        self.finished = False


class MemoryEventLog:
    """Events of recent runs in memory; the oldest finished runs are evicted first."""

    def __init__(self, *, keep_finished: int = 500) -> None:
        self._runs: OrderedDict[str, _RunLog] = OrderedDict()
        self._keep = keep_finished

    def open(self, run_id: str) -> None:
        """Make ``run_id`` readable before its first event (a client may subscribe early)."""
        self._runs.setdefault(run_id, _RunLog())

    def has_run(self, run_id: str) -> bool:
        return run_id in self._runs

    async def append(self, run_id: str, event: Event) -> Event:
        log = self._runs.get(run_id)
        if log is None:
            log = self._runs[run_id] = _RunLog()
        if log.finished:
            raise RuntimeError(f"run {run_id} already finished; cannot append {event.type}")
        stamped = event.stamped(run_id, len(log.events) + 1, utc_now_iso())
        log.events.append(stamped)
        if isinstance(event, RunFinished):
            log.finished = True
            self._evict()
        log.changed.set()
        log.changed = asyncio.Event()
        return stamped

    async def read(self, run_id: str, after_seq: int = 0, *,
                   follow: bool = True) -> AsyncIterator[Event]:
        """Yield events with ``seq > after_seq``; with ``follow`` wait until run_finished."""
        log = self._runs.get(run_id)
        if log is None:
            raise KeyError(run_id)
        position = max(0, after_seq)
        while True:
            while position < len(log.events):
                event = log.events[position]
                position += 1
                yield event
            if log.finished or not follow:
                return
            await log.changed.wait()

    def _evict(self) -> None:
        finished = [rid for rid, log in self._runs.items() if log.finished]
        for rid in finished[: max(0, len(finished) - self._keep)]:
            del self._runs[rid]
