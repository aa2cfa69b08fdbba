"""The local store: threads, messages, runs, projects and versioned agents in one DuckDB file.

Sharing one file between processes
----------------------------------
DuckDB lets one process hold a file read-write and refuses all others, even
read-only; a Jupyter server and its kernels must still share one store file
without a lock error ever reaching the user. So a process holds the file only
while it works (``_shared.SharedConnection``): each operation takes a
process-local lock, then, if not connected, an exclusive ``flock`` on
``<db>.lock`` (polled up to ``lock_timeout``, 30 s; a timeout names the
holder's pid) and opens DuckDB. The connection lingers ``linger`` (0.25 s) so
bursts open the file once, then a background thread closes it and releases
the lock; a process busy past ``max_hold`` (2 s) hands over when someone
waits. Connections are closed before ``fork``.

Appends in one statement
------------------------
A message's ``seq`` is its position in the thread (1, 2, 3…), assigned by the
store. The thread row keeps the highest seq (``message_count``) so that reading
the last N messages filters on ``seq > count - N``, which DuckDB prunes with
zone maps: loading history stays flat as a thread grows. Updating that row on
every append would double an append's cost (each DuckDB statement costs
≈0.5 ms here), so while a process holds the lock it keeps each touched
thread's head (highest seq, last update) in memory — it is authoritative, no
one else can write — and one INSERT (a single statement, hence all or
nothing) stores a whole batch. Heads are written back to the thread rows
before the lock is released; reads in the holding process see them through
the cache. A holder that dies before writing back has left ``dirty`` in the
lock file, so the next holder recomputes the counters from the messages; the
first touch of a thread in a tenure also probes past its counter; and
``UNIQUE (thread_id, seq)`` turns any stale head left into a retried insert,
never a duplicate seq.

Group commit
------------
A DuckDB statement has a large fixed cost (≈0.7 ms for a one-row INSERT here),
a commit costs as much again plus an fsync, and separate statements in one
transaction grow slower than linearly. So operations that queue for the
connection share a transaction (``_shared``: group commit), and inside it the
hot writes — a run's INSERT, its UPDATEs, messages' INSERTs — are deferred and
flushed at the commit as one statement per kind, however many operations
deferred them (an UPDATE of whole rows whose parameters are one list per
column). Every operation still returns only once its writes are committed, so
"stored" means durable, as before; a statement that reads flushes the deferred
writes first. Values the table's CHECK constraints refuse are never deferred:
the caller's own statement fails. Heads changed by a transaction that is rolled
back are restored from an undo journal.

Caches
------
While the process holds the file nobody else can write it, so what it has read
or written stays true until it lets go: thread rows, run rows, every queued or
running run (``list_runs`` for active statuses, asked on every start, scans no
table), and the newest messages of threads created in this tenure (a run's
first prompt needs no query). They are dropped when the lock is released or a
transaction is rolled back, bounded in size, and records are rebuilt from the
cached rows on each read, so callers never share mutable dicts.

Records
-------
Ids are uuid4 strings. JSON fields are stored as JSON text. Timestamps are
stored as naive UTC (a ``TIMESTAMPTZ`` fetch needs pytz) and returned
timezone-aware; within one process they strictly increase, so ordering by
time is ordering by creation.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from kortix_lab.agentpress.errors import ConfigError, NotFound, StoreError
from kortix_lab.agentpress.store import (
    Agent,
    AgentConfig,
    AgentRun,
    Message,
    NewMessage,
    Project,
    RunStart,
    Thread,
)

from . import frames
from ._shared import MEMORY, FlushFailed, Retry, SharedConnection
from .migrations import migrate

if TYPE_CHECKING:
    import pandas as pd

#: From this many rows a batch goes through DuckDB's appender; below it a
#: multi-row ``INSERT … VALUES`` is cheaper. Either way it is one statement.
APPENDER_MIN_ROWS = 5

_PROJECT_COLS = "project_id, name, created_at, sandbox_id, metadata"
_THREAD_COLS = "thread_id, name, project_id, created_at, updated_at, metadata"
_MESSAGE_COLS = ("message_id, thread_id, seq, type, content, is_llm_message, run_id, "
                 "created_at, metadata")
_MESSAGE_COLUMNS = [c.strip() for c in _MESSAGE_COLS.split(",")]
_RUN_COLS = ("run_id, thread_id, status, model, agent_id, created_at, started_at, finished_at, "
             "error, usage, cost, owner, metadata")
_RUN_COLUMNS = [c.strip() for c in _RUN_COLS.split(",")]
_AGENT_COLS = ("a.agent_id, v.version_id, v.version_number, v.name, v.system_prompt, v.model, "
               "v.configured_mcps, v.custom_mcps, v.agentpress_tools, a.created_at, v.created_at, "
               "a.current_version_id")

#: Statuses of a run that is not finished; the store keeps those runs in memory.
ACTIVE = ("queued", "running")
#: What the tables' CHECK constraints allow: other values are not deferred, so the
#: database refuses them in the caller's own statement.
RUN_STATUSES = frozenset((*ACTIVE, "completed", "failed", "stopped"))
MESSAGE_TYPES = frozenset(("user", "assistant", "tool", "status", "summary", "system"))
#: Thread and run records cached per tenure, each.
ROW_CACHE = 4096
#: Newest messages cached per thread created in this tenure, and bytes of JSON for all.
TAIL_ROWS = 64
TAIL_BYTES = 8 * 1024 * 1024

Row = tuple[Any, ...]
T = TypeVar("T")
V = TypeVar("V")


@dataclass(slots=True)
class _Head:
    """What the lock holder knows about a thread's tail, ahead of the thread row."""

    seq: int
    updated_at: datetime  # naive UTC
    dirty: bool = False

    def copy(self) -> _Head:
        return _Head(self.seq, self.updated_at, self.dirty)


@dataclass(slots=True)
class _Tail:
    """The newest rows of a thread this tenure has seen from its start: every message
    with ``seq > start``, in seq order, up to the thread's head."""

    start: int
    rows: list[Row] = field(default_factory=list)
    size: int = 0  # bytes of JSON held, for the cache's budget


class DuckDBStore:
    """``Store`` on a DuckDB file (or ``:memory:``), safe to share between processes."""

    def __init__(self, path: str | os.PathLike[str] = MEMORY, *, lock_timeout: float = 30.0,
                 linger: float = 0.25, max_hold: float = 2.0) -> None:
        if lock_timeout < 0 or linger < 0 or max_hold < 0:
            raise ConfigError("lock_timeout, linger and max_hold must not be negative")
        self.memory = str(path) == MEMORY
        self.path = MEMORY if self.memory else str(Path(path).expanduser().resolve())

        # All guarded by the connection's lock and valid for one tenure (see "Caches").
        self._heads: dict[str, _Head] = {}
        self._undo: dict[str, _Head | None] = {}  # heads as they were before the open group
        self._stale: set[str] = set()  # heads found behind the table: probe again
        self._thread_rows: OrderedDict[str, Row] = OrderedDict()
        self._run_rows: OrderedDict[str, Row] = OrderedDict()
        self._active: dict[str, Row] | None = None  # every queued or running run, once loaded
        self._tails: OrderedDict[str, _Tail] = OrderedDict()
        self._tail_bytes = 0
        # Writes deferred to the end of the open group (see "Group commit").
        self._new_runs: dict[str, Row] = {}
        self._changed_runs: dict[str, Row] = {}  # whole rows of runs already in the table
        self._new_messages: list[Row] = []
        self._migrated = False
        self._last_ts: datetime | None = None
        self._shared = SharedConnection(self.path, lock_timeout=lock_timeout, linger=linger,
                                        max_hold=max_hold, on_connect=self._on_connect,
                                        on_release=self._on_release, before_commit=self._flush,
                                        on_commit=self._on_commit, on_abort=self._on_abort)

    def __repr__(self) -> str:
        return f"DuckDBStore({self.path!r})"

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def holds_lock(self) -> bool:
        """Whether this store holds the file right now (always False for ``:memory:``)."""
        return self._shared.holds_lock

    def close(self) -> None:
        """Write everything back, close DuckDB and release the lock file. Idempotent."""
        self._shared.close()

    # ------------------------------------------------------------------ operations

    def _read(self, op: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        return self._shared.run(op, write=False)

    def _write(self, op: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Checks, then one write statement: shares a transaction when others queue."""
        return self._shared.run(op, write=True)

    def _atomic(self, op: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Several writes that stand or fall together: always in a transaction."""
        return self._shared.run(op, write=True, atomic=True)

    def _on_connect(self, con: duckdb.DuckDBPyConnection, dirty: bool) -> None:
        self._heads.clear()
        self._undo.clear()
        self._forget()
        if not self._migrated:
            migrate(con)
            self._migrated = True
        if dirty:
            _repair_thread_counters(con)
            self._shared.mark_clean()

    def _on_release(self, con: duckdb.DuckDBPyConnection) -> None:
        try:
            self._flush_heads(con)
        finally:
            self._heads.clear()
            self._undo.clear()
            self._forget()

    def _on_commit(self) -> None:
        if self._undo:
            self._undo.clear()

    def _on_abort(self) -> None:
        """The open transaction was rolled back: put the heads back, drop the caches."""
        for thread_id, head in self._undo.items():
            if head is None:
                self._heads.pop(thread_id, None)
            else:
                self._heads[thread_id] = head
        self._undo.clear()
        for thread_id in self._stale:
            self._heads.pop(thread_id, None)
        self._stale.clear()
        self._forget()

    def _forget(self) -> None:
        """Drop the caches of records (never the heads: they hold unwritten counters) and
        the deferred writes (only ever called when they were rolled back or flushed)."""
        self._new_runs.clear()
        self._changed_runs.clear()
        self._new_messages.clear()
        self._thread_rows.clear()
        self._run_rows.clear()
        self._active = None
        self._tails.clear()
        self._tail_bytes = 0

    def _sql(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """The connection for a statement, once the deferred writes are in (it sees them)."""
        if self._new_runs or self._changed_runs or self._new_messages:
            try:
                self._flush(con)
            except BaseException as exc:
                raise FlushFailed from exc
        return con

    def _q(self, con: duckdb.DuckDBPyConnection, sql: str,
           params: Sequence[Any] | None = None) -> duckdb.DuckDBPyConnection:
        """Run one statement, after the deferred writes (so it sees them)."""
        return self._sql(con).execute(sql, params)

    def _flush(self, con: duckdb.DuckDBPyConnection) -> None:
        """Write what the group deferred: one statement per kind, whoever deferred it."""
        runs, changed, messages = self._new_runs, self._changed_runs, self._new_messages
        self._new_runs, self._changed_runs, self._new_messages = {}, {}, []
        if runs:
            _insert_runs(con, list(runs.values()))
        if messages:
            try:
                _insert_messages(con, messages)
            except duckdb.ConstraintException as exc:
                if "duplicate key" in str(exc).lower():
                    self._stale.update(row[1] for row in messages)  # see add_messages
                    raise Retry from exc
                raise
        if changed:
            _update_runs(con, list(changed.values()))

    # ------------------------------------------------------------------ helpers

    def _now(self) -> datetime:
        now = datetime.now(UTC).replace(tzinfo=None)
        if self._last_ts is not None and now <= self._last_ts:
            now = self._last_ts + timedelta(microseconds=1)
        self._last_ts = now
        return now

    def _touch(self, thread_id: str) -> None:
        """Remember a head as it was before the open transaction changes it."""
        if thread_id not in self._undo:
            head = self._heads.get(thread_id)
            self._undo[thread_id] = None if head is None else head.copy()

    def _head(self, con: duckdb.DuckDBPyConnection, thread_id: str) -> _Head:
        head = self._heads.get(thread_id)
        if head is None:
            rows = self._q(con, "SELECT message_count, updated_at FROM threads WHERE thread_id = ?",
                                [thread_id]).fetchall()
            if not rows:
                raise NotFound(f"no thread with id {thread_id!r}")
            head = _Head(int(rows[0][0]), rows[0][1])
            # The row lags only if a holder lost its write-back (the dirty marker
            # repairs a crash, not a power cut). One probe per tenure makes the head
            # exact, so reads may bound seq from above as well as below.
            probe = self._q(con, "SELECT max(seq), max(created_at) FROM messages "
                                 "WHERE thread_id = ? AND seq > ?",
                            [thread_id, head.seq]).fetchall()
            self._touch(thread_id)
            if probe[0][0] is not None:
                head.seq, head.updated_at = int(probe[0][0]), max(head.updated_at, probe[0][1])
                self._mark_dirty(head)
            self._heads[thread_id] = head
        return head

    def _mark_dirty(self, head: _Head) -> None:
        head.dirty = True
        self._shared.mark_dirty()

    def _flush_heads(self, con: duckdb.DuckDBPyConnection) -> None:
        dirty = [(tid, h) for tid, h in self._heads.items() if h.dirty]
        if dirty:
            con.begin()
            try:
                for tid, head in dirty:
                    con.execute(
                        "UPDATE threads SET message_count = greatest(message_count, ?), "
                        "updated_at = greatest(updated_at, ?) WHERE thread_id = ?",
                        [head.seq, head.updated_at, tid])
                con.commit()
            except BaseException:
                con.rollback()
                raise
            for _, head in dirty:
                head.dirty = False
        self._shared.mark_clean()

    def _thread(self, row: Row) -> Thread:
        """A thread record, with the in-memory head's newer ``updated_at`` when there is one."""
        updated_at = row[4]
        head = self._heads.get(row[0])
        if head is not None and head.updated_at > updated_at:
            updated_at = head.updated_at
        return Thread(thread_id=row[0], name=row[1], project_id=row[2],
                      created_at=_aware(row[3]), updated_at=_aware(updated_at),
                      metadata=_loads(row[5]))

    def _keep_run(self, row: Row) -> None:
        """Cache a run's row as the database now holds it (this connection wrote or read it)."""
        _put(self._run_rows, row[0], row)
        if self._active is not None:
            if row[2] in ACTIVE:
                self._active[row[0]] = row
            else:
                self._active.pop(row[0], None)

    def _active_runs(self, con: duckdb.DuckDBPyConnection) -> dict[str, Row]:
        if self._active is None:
            rows = self._q(con, f"SELECT {_RUN_COLS} FROM agent_runs WHERE status IN "
                                f"({', '.join(repr(s) for s in ACTIVE)})").fetchall()
            self._active = {row[0]: row for row in rows}
        return self._active

    def _new_tail(self, thread_id: str) -> None:
        """Cache the messages of a thread created in this tenure: all of them are seen."""
        self._tails[thread_id] = _Tail(0)
        while len(self._tails) > ROW_CACHE:
            _, evicted = self._tails.popitem(last=False)
            self._tail_bytes -= evicted.size

    def _extend_tail(self, thread_id: str, rows: list[Row]) -> None:
        tail = self._tails.get(thread_id)
        if tail is None:
            return
        self._tails.move_to_end(thread_id)
        for row in rows:
            size = _row_size(row)
            tail.rows.append(row)
            tail.size += size
            self._tail_bytes += size
        extra = len(tail.rows) - TAIL_ROWS
        if extra > 0:
            dropped = tail.rows[:extra]
            del tail.rows[:extra]
            tail.start = int(dropped[-1][2])
            freed = sum(_row_size(r) for r in dropped)
            tail.size -= freed
            self._tail_bytes -= freed
        while self._tail_bytes > TAIL_BYTES and self._tails:
            _, evicted = self._tails.popitem(last=False)
            self._tail_bytes -= evicted.size

    def _drop_tail(self, thread_id: str) -> None:
        tail = self._tails.pop(thread_id, None)
        if tail is not None:
            self._tail_bytes -= tail.size

    # ------------------------------------------------------------------ projects

    def create_project(self, name: str, *, metadata: dict[str, Any] | None = None) -> Project:
        meta = metadata or {}
        meta_json = _dumps(meta, "project metadata")
        project_id = _new_id()

        def op(con: duckdb.DuckDBPyConnection) -> datetime:
            now = self._now()
            self._q(con, f"INSERT INTO projects ({_PROJECT_COLS}) VALUES (?, ?, ?, NULL, ?)",
                         [project_id, name, now, meta_json])
            return now

        now = self._write(op)
        return Project(project_id=project_id, name=name, created_at=_aware(now), metadata=meta)

    def get_project(self, project_id: str) -> Project:
        def op(con: duckdb.DuckDBPyConnection) -> list[Row]:
            return self._q(con, f"SELECT {_PROJECT_COLS} FROM projects WHERE project_id = ?",
                                [project_id]).fetchall()

        rows = self._read(op)
        if not rows:
            raise NotFound(f"no project with id {project_id!r}")
        return _project(rows[0])

    def set_project_sandbox(self, project_id: str, sandbox_id: str | None) -> None:
        def op(con: duckdb.DuckDBPyConnection) -> None:
            if not self._q(con, "UPDATE projects SET sandbox_id = ? WHERE project_id = ? "
                                "RETURNING project_id", [sandbox_id, project_id]).fetchall():
                raise NotFound(f"no project with id {project_id!r}")

        self._write(op)

    def list_projects(self) -> list[Project]:
        def op(con: duckdb.DuckDBPyConnection) -> list[Row]:
            return self._q(con, f"SELECT {_PROJECT_COLS} FROM projects "
                                "ORDER BY created_at, project_id").fetchall()

        return [_project(r) for r in self._read(op)]

    # ------------------------------------------------------------------ threads

    def create_thread(self, *, name: str | None = None, project_id: str | None = None,
                      metadata: dict[str, Any] | None = None) -> Thread:
        meta = metadata or {}
        meta_json = _dumps(meta, "thread metadata")
        thread_id = _new_id()

        def op(con: duckdb.DuckDBPyConnection) -> datetime:
            if project_id is not None and not self._q(con,
                    "SELECT 1 FROM projects WHERE project_id = ?", [project_id]).fetchall():
                raise NotFound(f"no project with id {project_id!r}")
            now = self._now()
            self._q(con, f"INSERT INTO threads ({_THREAD_COLS}, message_count) "
                         "VALUES (?, ?, ?, ?, ?, ?, 0)",
                         [thread_id, name, project_id, now, now, meta_json])
            self._touch(thread_id)
            self._heads[thread_id] = _Head(0, now)
            _put(self._thread_rows, thread_id, (thread_id, name, project_id, now, now, meta_json))
            self._new_tail(thread_id)
            return now

        now = self._write(op)
        return Thread(thread_id=thread_id, name=name, project_id=project_id,
                      created_at=_aware(now), updated_at=_aware(now), metadata=meta)

    def get_thread(self, thread_id: str) -> Thread:
        def op(con: duckdb.DuckDBPyConnection) -> Thread:
            row = self._thread_rows.get(thread_id)
            if row is None:
                rows = self._q(con, f"SELECT {_THREAD_COLS} FROM threads WHERE thread_id = ?",
                                    [thread_id]).fetchall()
                if not rows:
                    raise NotFound(f"no thread with id {thread_id!r}")
                row = rows[0]
                _put(self._thread_rows, thread_id, row)
            return self._thread(row)

        return self._read(op)

    def find_thread(self, name_or_id: str) -> Thread | None:
        """The thread with this id, else the most recently updated thread with this name."""
        def op(con: duckdb.DuckDBPyConnection) -> list[Thread]:
            rows = self._q(con, f"SELECT {_THREAD_COLS} FROM threads "
                                "WHERE thread_id = ? OR name = ?",
                                [name_or_id, name_or_id]).fetchall()
            return [self._thread(r) for r in rows]

        threads = self._read(op)
        for thread in threads:
            if thread.thread_id == name_or_id:
                return thread
        return max(threads, key=lambda t: (t.updated_at, t.thread_id), default=None)

    def list_threads(self, *, project_id: str | None = None) -> list[Thread]:
        """Threads, most recently updated first."""
        sql = f"SELECT {_THREAD_COLS} FROM threads"
        params: list[Any] = []
        if project_id is not None:
            sql += " WHERE project_id = ?"
            params.append(project_id)

        def op(con: duckdb.DuckDBPyConnection) -> list[Thread]:
            return [self._thread(r) for r in self._q(con, sql, params).fetchall()]

        threads = self._read(op)
        threads.sort(key=lambda t: (t.updated_at, t.thread_id), reverse=True)
        return threads

    def rename_thread(self, thread_id: str, name: str) -> Thread:
        def op(con: duckdb.DuckDBPyConnection) -> Thread:
            rows = self._q(con, "UPDATE threads SET name = ?, updated_at = greatest(updated_at, "
                                f"?) WHERE thread_id = ? RETURNING {_THREAD_COLS}",
                           [name, self._now(), thread_id]).fetchall()
            if not rows:
                raise NotFound(f"no thread with id {thread_id!r}")
            head = self._heads.get(thread_id)
            if head is not None:
                self._touch(thread_id)
                head.updated_at = max(head.updated_at, rows[0][4])
            _put(self._thread_rows, thread_id, rows[0])
            return self._thread(rows[0])

        return self._write(op)

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread with its messages and runs, in one transaction."""
        def op(con: duckdb.DuckDBPyConnection) -> None:
            rows = self._q(con, "DELETE FROM threads WHERE thread_id = ? RETURNING thread_id",
                                [thread_id]).fetchall()
            if not rows:
                raise NotFound(f"no thread with id {thread_id!r}")
            self._q(con, "DELETE FROM messages WHERE thread_id = ?", [thread_id])
            self._q(con, "DELETE FROM agent_runs WHERE thread_id = ?", [thread_id])
            self._touch(thread_id)
            self._heads.pop(thread_id, None)
            self._thread_rows.pop(thread_id, None)
            self._drop_tail(thread_id)
            for cache in (self._run_rows, self._active or {}):
                for run_id in [r for r, row in cache.items() if row[1] == thread_id]:
                    del cache[run_id]

        self._atomic(op)

    # ------------------------------------------------------------------ messages

    def add_messages(self, thread_id: str, messages: Sequence[NewMessage]) -> list[Message]:
        """Store a batch in one statement: every message or, on any error, none of them."""
        encoded = [(m, _dumps(m.content, f"content of message {i}"),
                    _dumps(m.metadata, f"metadata of message {i}"))
                   for i, m in enumerate(messages)]
        ids = [_new_id() for _ in encoded]

        def op(con: duckdb.DuckDBPyConnection) -> list[Row]:
            head = self._head(con, thread_id)
            if not encoded:
                return []
            now = self._now()
            self._touch(thread_id)
            self._mark_dirty(head)  # before the insert: a crash after it must be repaired
            rows = [(ids[i], thread_id, head.seq + i + 1, m.type, content, m.is_llm_message,
                     m.run_id, now, meta) for i, (m, content, meta) in enumerate(encoded)]
            if self._shared.in_group and all(m.type in MESSAGE_TYPES for m, _, _ in encoded):
                self._new_messages.extend(rows)
            else:
                self._insert_now(con, thread_id, rows)
            head.seq += len(rows)
            head.updated_at = now
            self._extend_tail(thread_id, rows)
            return rows

        rows = self._write(op)
        return [Message(message_id=r[0], thread_id=thread_id, seq=r[2], type=m.type,
                        content=m.content, is_llm_message=m.is_llm_message, run_id=m.run_id,
                        created_at=_aware(r[7]), metadata=m.metadata)
                for r, (m, _, _) in zip(rows, encoded, strict=True)]

    def _insert_now(self, con: duckdb.DuckDBPyConnection, thread_id: str,
                    rows: list[Row]) -> None:
        try:
            _insert_messages(self._sql(con), rows)
        except duckdb.ConstraintException as exc:
            if "duplicate key" in str(exc).lower():
                # The head was behind the table (a lost write-back): the rollback
                # forgets it, and the next try probes the table for the real one.
                self._stale.add(thread_id)
                raise Retry from exc
            raise StoreError(
                f"could not add {len(rows)} message(s) to thread {thread_id}; "
                f"none was stored: {exc}") from exc

    def get_messages(self, thread_id: str, *, last: int | None = None,
                     after_seq: int | None = None, llm_only: bool = False) -> list[Message]:
        """Messages in ascending seq: those after ``after_seq``, filtered, then the ``last`` N.

        With ``last`` the scan is bounded below by ``seq > count - window`` so the
        cost does not grow with the thread.
        """
        if last is not None and last < 0:
            raise ConfigError(f"last must be >= 0, got {last}")
        floor = after_seq or 0
        # Both bounds on seq: other threads' rows fail the cheap integer test
        # before the thread id is compared, whatever the table's size.
        where = ("thread_id = ? AND seq > ? AND seq <= ?"
                 + (" AND is_llm_message" if llm_only else ""))

        def op(con: duckdb.DuckDBPyConnection) -> list[Row]:
            head = self._head(con, thread_id)
            cached = self._from_tail(thread_id, floor, last, llm_only)
            if cached is not None:
                return cached
            if last is None:
                return self._q(con, f"SELECT {_MESSAGE_COLS} FROM messages WHERE {where} "
                                    "ORDER BY seq", [thread_id, floor, head.seq]).fetchall()
            if last == 0:
                return []
            # Non-LLM messages are few; widen the window only if they crowd it.
            window = last if not llm_only else 2 * last
            while True:
                lower = max(floor, head.seq - window)
                rows = self._q(con, f"SELECT {_MESSAGE_COLS} FROM messages WHERE {where} "
                                    "ORDER BY seq DESC LIMIT ?",
                                    [thread_id, lower, head.seq, last]).fetchall()
                if len(rows) >= last or lower <= floor:
                    break
                window *= 4
            rows.reverse()
            return rows

        return [_message(r) for r in self._read(op)]

    def _from_tail(self, thread_id: str, floor: int, last: int | None,
                   llm_only: bool) -> list[Row] | None:
        """The answer from the cached tail, or None when it may lie further back."""
        tail = self._tails.get(thread_id)
        if tail is None:
            return None
        rows = [r for r in tail.rows if r[2] > floor and (r[5] or not llm_only)]
        if last is None:
            return rows if floor >= tail.start else None
        if floor >= tail.start or len(rows) >= last:  # all candidates, or the newest ``last``
            return rows[max(0, len(rows) - last):] if last else []
        return None

    def get_message(self, message_id: str) -> Message:
        def op(con: duckdb.DuckDBPyConnection) -> list[Row]:
            return self._q(con, f"SELECT {_MESSAGE_COLS} FROM messages WHERE message_id = ?",
                                [message_id]).fetchall()

        rows = self._read(op)
        if not rows:
            raise NotFound(f"no message with id {message_id!r}")
        return _message(rows[0])

    def count_messages(self, thread_id: str) -> int:
        return self._read(lambda con: self._head(con, thread_id).seq)

    # ------------------------------------------------------------------ runs

    def create_run(self, thread_id: str, *, model: str, agent_id: str | None = None,
                   status: str = "queued", metadata: dict[str, Any] | None = None) -> AgentRun:
        meta = metadata or {}
        meta_json = _dumps(meta, "run metadata")
        run_id = _new_id()

        def op(con: duckdb.DuckDBPyConnection) -> datetime:
            self._head(con, thread_id)  # NotFound for an unknown thread
            now = self._now()
            row = (run_id, thread_id, status, model, agent_id, now, None, None, None, "{}", 0.0,
                   None, meta_json)
            if self._shared.in_group and status in RUN_STATUSES:
                self._new_runs[run_id] = row
            else:
                _insert_runs(self._sql(con), [row])
            self._keep_run(row)
            return now

        now = self._write(op)
        return AgentRun(run_id=run_id, thread_id=thread_id, status=status, model=model,
                        agent_id=agent_id, created_at=_aware(now), metadata=meta)

    def begin_run(self, thread_id: str, *, model: str, agent_id: str | None = None,
                  metadata: dict[str, Any] | None = None, owner: str | None = None,
                  message: NewMessage | None = None, ignore: Sequence[str] = (),
                  ) -> RunStart:
        """Start a run on a thread in one operation: read the thread, and unless it has
        an active run (other than those in ``ignore``) create the run (queued, with its
        ``owner``) and store ``message`` (its ``run_id`` defaults to the new run's), all
        in one transaction. A thread with active runs is left untouched: they are
        returned in ``busy`` and ``run`` is None.

        It spares ``RunManager.start_run`` four thread hops and four commits (thread,
        busy check, run, owner, message used to be five store calls)."""
        meta = metadata or {}
        meta_json = _dumps(meta, "run metadata")
        encoded = None if message is None else (
            _dumps(message.content, "content of the message"),
            _dumps(message.metadata, "metadata of the message"))
        run_id, message_id = _new_id(), _new_id()
        skip = set(ignore)

        def op(con: duckdb.DuckDBPyConnection) -> tuple[Thread, list[Row], Row | None,
                                                        Row | None]:
            row = self._thread_rows.get(thread_id)
            if row is None:
                rows = self._q(con, f"SELECT {_THREAD_COLS} FROM threads WHERE thread_id = ?",
                                    [thread_id]).fetchall()
                if not rows:
                    raise NotFound(f"no thread with id {thread_id!r}")
                row = rows[0]
                _put(self._thread_rows, thread_id, row)
            busy = sorted((r for r in self._active_runs(con).values()
                           if r[1] == thread_id and r[0] not in skip), key=lambda r: (r[5], r[0]))
            if busy:
                return self._thread(row), busy, None, None
            head = self._head(con, thread_id)
            now = self._now()
            run_row = (run_id, thread_id, "queued", model, agent_id, now, None, None, None, "{}",
                       0.0, owner, meta_json)
            self._new_runs[run_id] = run_row  # atomic: always in a transaction of its own
            self._keep_run(run_row)
            message_row = None
            if message is not None and encoded is not None:
                message_row = (message_id, thread_id, head.seq + 1, message.type, encoded[0],
                               message.is_llm_message, message.run_id or run_id, now,
                               encoded[1])
                self._touch(thread_id)
                self._mark_dirty(head)
                if message.type in MESSAGE_TYPES:
                    self._new_messages.append(message_row)
                else:
                    self._insert_now(con, thread_id, [message_row])
                head.seq += 1
                head.updated_at = now
                self._extend_tail(thread_id, [message_row])
            return self._thread(row), [], run_row, message_row

        thread, busy, run_row, message_row = self._atomic(op)
        return RunStart(thread=thread, busy=[_run(r) for r in busy],
                        run=None if run_row is None else _run(run_row),
                        message=None if message_row is None else _message(message_row))

    def update_run(self, run_id: str, *, status: str | None = None, error: str | None = None,
                   usage: dict[str, int] | None = None, cost: float | None = None,
                   owner: str | None = None, started: bool = False,
                   finished: bool = False) -> AgentRun:
        """Change the given fields (None leaves a field as it is); ``usage`` replaces the old."""
        # Column positions in _RUN_COLS, so a cached row can be changed as the UPDATE does.
        changes: dict[int, Any] = {}
        if status is not None:
            changes[2] = status
        if error is not None:
            changes[8] = error
        if usage is not None:
            changes[9] = _dumps(usage, "run usage")
        if cost is not None:
            changes[10] = float(cost)
        if owner is not None:
            changes[11] = owner

        def op(con: duckdb.DuckDBPyConnection) -> Row:
            if started or finished:
                now = self._now()
                if started:
                    changes[6] = now
                if finished:
                    changes[7] = now
            cached = self._run_rows.get(run_id) or (self._active or {}).get(run_id)
            if not changes:
                row = cached or _first(self._q(con,
                    f"SELECT {_RUN_COLS} FROM agent_runs WHERE run_id = ?", [run_id]).fetchall())
            else:
                sets = ", ".join(f"{_RUN_COLUMNS[i]} = ?" for i in changes)
                params = [*changes.values(), run_id]
                if cached is not None and self._shared.in_group and \
                        changes.get(2, "queued") in RUN_STATUSES:
                    row = _changed(cached, changes)  # whole rows: later changes replace it
                    pending = self._new_runs if run_id in self._new_runs else self._changed_runs
                    pending[run_id] = row
                elif cached is not None:  # the new row is known: no need to read it back
                    updated = self._q(con,
                        f"UPDATE agent_runs SET {sets} WHERE run_id = ?", params).fetchall()
                    row = _changed(cached, changes) if updated[0][0] else None
                    if row is None:  # cannot happen while we hold the file; do not trust it
                        self._run_rows.pop(run_id, None)
                        (self._active or {}).pop(run_id, None)
                else:
                    row = _first(self._q(con, f"UPDATE agent_runs SET {sets} WHERE run_id = ? "
                                              f"RETURNING {_RUN_COLS}", params).fetchall())
            if row is None:
                raise NotFound(f"no run with id {run_id!r}")
            self._keep_run(row)
            return row

        return _run(self._write(op))

    def get_run(self, run_id: str) -> AgentRun:
        def op(con: duckdb.DuckDBPyConnection) -> Row:
            row = self._run_rows.get(run_id) or (self._active or {}).get(run_id)
            if row is None:
                row = _first(self._q(con, f"SELECT {_RUN_COLS} FROM agent_runs WHERE run_id = ?",
                                          [run_id]).fetchall())
                if row is None:
                    raise NotFound(f"no run with id {run_id!r}")
                self._keep_run(row)
            return row

        return _run(self._read(op))

    def list_runs(self, *, thread_id: str | None = None,
                  statuses: Sequence[str] | None = None) -> list[AgentRun]:
        """Runs, oldest first."""
        if statuses is not None and not statuses:
            return []
        if statuses is not None and set(statuses) <= set(ACTIVE):
            # Active runs are few and asked for on every start: kept in memory.
            wanted = set(statuses)

            def active(con: duckdb.DuckDBPyConnection) -> list[Row]:
                return [row for row in self._active_runs(con).values()
                        if row[2] in wanted and (thread_id is None or row[1] == thread_id)]

            rows = sorted(self._read(active), key=lambda r: (r[5], r[0]))
            return [_run(r) for r in rows]
        conditions: list[str] = []
        params: list[Any] = []
        if thread_id is not None:
            conditions.append("thread_id = ?")
            params.append(thread_id)
        if statuses is not None:
            conditions.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(statuses)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""

        def op(con: duckdb.DuckDBPyConnection) -> list[Row]:
            return self._q(con, f"SELECT {_RUN_COLS} FROM agent_runs{where} "
                                "ORDER BY created_at, run_id", params).fetchall()

        return [_run(r) for r in self._read(op)]

    # ------------------------------------------------------------------ agents

    def create_agent(self, config: AgentConfig) -> Agent:
        agent_id = _new_id()

        def op(con: duckdb.DuckDBPyConnection) -> tuple[str, datetime]:
            now = self._now()
            version_id = self._insert_version(con, agent_id, 1, config, now)
            self._q(con, "INSERT INTO agents (agent_id, current_version_id, created_at, "
                         "updated_at) VALUES (?, ?, ?, ?)", [agent_id, version_id, now, now])
            return version_id, now

        version_id, now = self._atomic(op)
        return Agent(agent_id=agent_id, current_version_id=version_id, version_id=version_id,
                     version_number=1,
                     config=config, created_at=_aware(now), updated_at=_aware(now))

    def update_agent(self, agent_id: str, config: AgentConfig) -> Agent:
        """Make ``config`` the agent's new current version; older versions stay readable."""
        def op(con: duckdb.DuckDBPyConnection) -> Agent:
            rows = self._q(con,
                "SELECT a.created_at, max(v.version_number) FROM agents a "
                "JOIN agent_versions v ON v.agent_id = a.agent_id "
                "WHERE a.agent_id = ? GROUP BY a.created_at", [agent_id]).fetchall()
            if not rows:
                raise NotFound(f"no agent with id {agent_id!r}")
            created_at, number = rows[0][0], int(rows[0][1]) + 1
            now = self._now()
            version_id = self._insert_version(con, agent_id, number, config, now)
            self._q(con, "UPDATE agents SET current_version_id = ?, updated_at = ? "
                         "WHERE agent_id = ?", [version_id, now, agent_id])
            return Agent(agent_id=agent_id, current_version_id=version_id,
                         version_id=version_id, version_number=number, config=config,
                         created_at=_aware(created_at), updated_at=_aware(now))

        return self._atomic(op)

    def get_agent(self, agent_id: str, *, version_id: str | None = None) -> Agent:
        """The current version, or the given one."""
        def op(con: duckdb.DuckDBPyConnection) -> list[Row]:
            return self._q(con,
                f"SELECT {_AGENT_COLS} FROM agents a JOIN agent_versions v "
                "ON v.agent_id = a.agent_id AND v.version_id = coalesce(?, a.current_version_id) "
                "WHERE a.agent_id = ?", [version_id, agent_id]).fetchall()

        rows = self._read(op)
        if not rows:
            if version_id is None:
                raise NotFound(f"no agent with id {agent_id!r}")
            raise NotFound(f"no version {version_id!r} of agent {agent_id!r}")
        return _agent(rows[0])

    def find_agent(self, name_or_id: str) -> Agent | None:
        """The agent with this id, else the most recently updated agent with this name."""
        def op(con: duckdb.DuckDBPyConnection) -> list[Row]:
            return self._q(con,
                f"SELECT {_AGENT_COLS} FROM agents a JOIN agent_versions v "
                "ON v.version_id = a.current_version_id WHERE a.agent_id = ? OR v.name = ? "
                "ORDER BY (a.agent_id = ?) DESC, a.updated_at DESC, a.agent_id LIMIT 1",
                [name_or_id, name_or_id, name_or_id]).fetchall()

        rows = self._read(op)
        return _agent(rows[0]) if rows else None

    def list_agents(self) -> list[Agent]:
        """Current versions of all agents, oldest agent first."""
        def op(con: duckdb.DuckDBPyConnection) -> list[Row]:
            return self._q(con, f"SELECT {_AGENT_COLS} FROM agents a JOIN agent_versions v "
                                "ON v.version_id = a.current_version_id "
                                "ORDER BY a.created_at, a.agent_id").fetchall()

        return [_agent(r) for r in self._read(op)]

    def list_agent_versions(self, agent_id: str) -> list[Agent]:
        """Every version of an agent, version 1 first."""
        def op(con: duckdb.DuckDBPyConnection) -> list[Row]:
            return self._q(con, f"SELECT {_AGENT_COLS} FROM agents a JOIN agent_versions v "
                                "ON v.agent_id = a.agent_id WHERE a.agent_id = ? "
                                "ORDER BY v.version_number", [agent_id]).fetchall()

        rows = self._read(op)
        if not rows:
            raise NotFound(f"no agent with id {agent_id!r}")
        return [_agent(r) for r in rows]

    def delete_agent(self, agent_id: str) -> None:
        def op(con: duckdb.DuckDBPyConnection) -> None:
            if not self._q(con, "DELETE FROM agents WHERE agent_id = ? RETURNING agent_id",
                                [agent_id]).fetchall():
                raise NotFound(f"no agent with id {agent_id!r}")
            self._q(con, "DELETE FROM agent_versions WHERE agent_id = ?", [agent_id])

        self._atomic(op)

    def _insert_version(self, con: duckdb.DuckDBPyConnection, agent_id: str, number: int,
                        config: AgentConfig, now: datetime) -> str:
        version_id = _new_id()
        self._q(con,
            "INSERT INTO agent_versions (version_id, agent_id, version_number, name, "
            "system_prompt, model, configured_mcps, custom_mcps, agentpress_tools, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [version_id, agent_id, number, config.name, config.system_prompt, config.model,
             _dumps(config.configured_mcps, "configured_mcps"),
             _dumps(config.custom_mcps, "custom_mcps"),
             _dumps(config.agentpress_tools, "agentpress_tools"), now])
        return version_id

    # ------------------------------------------------------------------ data frames

    def thread_frame(self, thread_id: str) -> pd.DataFrame:
        """One row per message: seq, type, role, text, created_at, run_id, message_id."""
        return frames.thread_frame(self.get_messages(thread_id))

    def runs_frame(self) -> pd.DataFrame:
        """One row per run with its timing, tokens and cost, oldest first."""
        return frames.runs_frame(self.list_runs())

    def threads_frame(self) -> pd.DataFrame:
        """One row per thread with its message and run counts and total cost, newest first."""
        def op(con: duckdb.DuckDBPyConnection) -> list[frames.ThreadSummary]:
            rows = self._q(con,
                "SELECT t.thread_id, t.name, t.project_id, t.created_at, t.updated_at, "
                "t.message_count, coalesce(r.runs, 0), coalesce(r.cost, 0.0) FROM threads t "
                "LEFT JOIN (SELECT thread_id, count(*) AS runs, sum(cost) AS cost "
                "FROM agent_runs GROUP BY thread_id) r ON r.thread_id = t.thread_id").fetchall()
            summaries = []
            for row in rows:
                updated, count = row[4], row[5]
                head = self._heads.get(row[0])
                if head is not None:
                    updated, count = max(updated, head.updated_at), max(count, head.seq)
                summaries.append(frames.ThreadSummary(
                    thread_id=row[0], name=row[1], project_id=row[2], created_at=_aware(row[3]),
                    updated_at=_aware(updated), messages=int(count), runs=int(row[6]),
                    cost=float(row[7])))
            return summaries

        summaries = self._read(op)
        summaries.sort(key=lambda t: (t.updated_at, t.thread_id), reverse=True)
        return frames.threads_frame(summaries)


# ---------------------------------------------------------------------- module helpers


def _put(cache: OrderedDict[str, V], key: str, value: V, limit: int = ROW_CACHE) -> None:
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > limit:
        cache.popitem(last=False)


def _insert_runs(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> None:
    if len(rows) < APPENDER_MIN_ROWS:
        one = f"({', '.join('?' for _ in _RUN_COLUMNS)})"
        con.execute(f"INSERT INTO agent_runs ({_RUN_COLS}) VALUES {', '.join([one] * len(rows))}",
                    [value for row in rows for value in row])
        return
    _append(con, "agent_runs", _RUN_COLUMNS, rows)


# What update_run may change: (position in _RUN_COLS, SQL type).
_RUN_MUTABLE = ((2, "VARCHAR"), (6, "TIMESTAMP"), (7, "TIMESTAMP"), (8, "VARCHAR"),
                (9, "VARCHAR"), (10, "DOUBLE"), (11, "VARCHAR"))
_RUN_MUTABLE_NAMES = [_RUN_COLUMNS[i] for i, _ in _RUN_MUTABLE]
_UPDATE_RUN = (f"UPDATE agent_runs SET {', '.join(f'{n} = ?' for n in _RUN_MUTABLE_NAMES)} "
               "WHERE run_id = ?")
# Several rows in one statement whose parameters are one list per column: its cost
# stays flat with the rows (a statement per row inside one transaction grows faster
# than linearly in DuckDB, and so does a VALUES list of parameters).
_UPDATE_RUNS = (
    f"UPDATE agent_runs SET {', '.join(f'{n} = v.{n}' for n in _RUN_MUTABLE_NAMES)} "
    "FROM (SELECT unnest(?::VARCHAR[]) AS run_id, "
    + ", ".join(f"unnest(?::{kind}[]) AS {_RUN_COLUMNS[i]}" for i, kind in _RUN_MUTABLE)
    + ") AS v WHERE agent_runs.run_id = v.run_id")


def _update_runs(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> None:
    """Set the mutable columns of existing runs to the given whole rows, in one statement."""
    if len(rows) == 1:
        con.execute(_UPDATE_RUN, [*(rows[0][i] for i, _ in _RUN_MUTABLE), rows[0][0]])
        return
    con.execute(_UPDATE_RUNS, [[row[0] for row in rows],
                               *([row[i] for row in rows] for i, _ in _RUN_MUTABLE)])


def _append(con: duckdb.DuckDBPyConnection, table: str, columns: list[str],
            rows: list[Row]) -> None:
    appender = con.appender(table, columns=columns)
    try:
        appender.append_rows(rows)
        appender.flush()
    except BaseException:
        appender.clear()
        raise


def _first(rows: list[Row]) -> Row | None:
    return rows[0] if rows else None


def _changed(row: Row, changes: dict[int, Any]) -> Row:
    """``row`` with the columns at the given positions replaced."""
    values = list(row)
    for i, value in changes.items():
        values[i] = value
    return tuple(values)


def _row_size(row: Row) -> int:
    return len(row[4]) + len(row[8]) + 200


def _new_id() -> str:
    return str(uuid.uuid4())


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC)


def _aware_or_none(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.replace(tzinfo=UTC)


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} cannot be stored as JSON: {exc}") from exc


def _loads(text: str | None) -> Any:
    # Most metadata is empty: skipping the parser for it is a third of a history load.
    return json.loads(text) if text and text != "{}" else {}


def _insert_messages(con: duckdb.DuckDBPyConnection, rows: list[Row]) -> None:
    if len(rows) < APPENDER_MIN_ROWS:
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
        con.execute(f"INSERT INTO messages ({_MESSAGE_COLS}) VALUES {values}",
                    [v for row in rows for v in row])
        return
    _append(con, "messages", _MESSAGE_COLUMNS, rows)


def _max_seq(con: duckdb.DuckDBPyConnection, thread_id: str) -> int:
    rows = con.execute("SELECT coalesce(max(seq), 0) FROM messages WHERE thread_id = ?",
                       [thread_id]).fetchall()
    return int(rows[0][0])


def _repair_thread_counters(con: duckdb.DuckDBPyConnection) -> None:
    """Bring thread rows up to their messages after a holder died before writing back."""
    con.execute(
        "UPDATE threads SET message_count = h.max_seq, "
        "updated_at = greatest(threads.updated_at, h.last_at) "
        "FROM (SELECT thread_id, max(seq) AS max_seq, max(created_at) AS last_at "
        "      FROM messages GROUP BY thread_id) AS h "
        "WHERE threads.thread_id = h.thread_id AND h.max_seq > threads.message_count")


def _project(row: Row) -> Project:
    return Project(project_id=row[0], name=row[1], created_at=_aware(row[2]), sandbox_id=row[3],
                   metadata=_loads(row[4]))


def _message(row: Row) -> Message:
    return Message(message_id=row[0], thread_id=row[1], seq=int(row[2]), type=row[3],
                   content=_loads(row[4]), is_llm_message=bool(row[5]), run_id=row[6],
                   created_at=_aware(row[7]), metadata=_loads(row[8]))


def _run(row: Row) -> AgentRun:
    return AgentRun(run_id=row[0], thread_id=row[1], status=row[2], model=row[3],
                    agent_id=row[4], created_at=_aware(row[5]),
                    started_at=_aware_or_none(row[6]), finished_at=_aware_or_none(row[7]),
                    error=row[8], usage=_loads(row[9]), cost=float(row[10]), owner=row[11],
                    metadata=_loads(row[12]))


def _agent(row: Row) -> Agent:
    config = AgentConfig(name=row[3], system_prompt=row[4], model=row[5],
                         configured_mcps=_loads(row[6]) or [], custom_mcps=_loads(row[7]) or [],
                         agentpress_tools=_loads(row[8]))
    return Agent(agent_id=row[0], current_version_id=row[11], version_number=int(row[2]),
                 config=config, created_at=_aware(row[9]), updated_at=_aware(row[10]),
                 version_id=row[1])
