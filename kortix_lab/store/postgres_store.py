"""The shared store: the ``Store`` Protocol on Postgres (or Supabase), for many servers and workers.

One database serves many processes and many accounts, so the design differs
from the DuckDB store where DuckDB's one-writer rule shaped it:

* **Connections.** A ``psycopg_pool.ConnectionPool`` (psycopg 3), opened on
  first use, so every thread of every process gets its own connection; each
  Protocol call is one transaction. The pool checks a connection before
  lending it out, so a restarted Postgres costs a reconnect, not an error.
  The pool is synchronous because the Protocol is: async callers already hop
  through ``asyncio.to_thread``, one hop per step.
* **Seqs across processes.** ``add_messages`` bumps ``threads.message_count``
  with ``UPDATE … RETURNING`` — the row lock serialises appenders on the same
  thread, whichever server they run on — and inserts the batch in the same
  transaction. Seqs stay gapless: a failed insert rolls the counter back.
* **Accounts.** Every row carries ``account_id``. The store filters every
  statement by its account (so it is scoped even on a superuser or BYPASSRLS
  connection) *and* sets ``kortix.account_id`` on its connections, so the
  row-level security policies of ``sql/0002_row_level_security.sql`` hold for
  roles subject to them. A fresh account sees an empty store.
* **Migrations** (``pg_migrations``) run on first use unless
  ``auto_migrate=False`` (an application role without DDL rights: run
  ``kortix-lab db migrate`` as the owner instead).

Timestamps come from this process's clock, made strictly increasing within
the store like the DuckDB store's, so records created here order by time in
creation order; they are stored as ``timestamptz`` and returned in UTC.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

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
from .pg_migrations import migrate, pending_migrations

if TYPE_CHECKING:
    import pandas as pd

ACCOUNT_ENV_VAR = "KORTIX_LAB_ACCOUNT_ID"
DEFAULT_ACCOUNT = "local"

_PROJECT_COLS = "project_id, name, created_at, sandbox_id, metadata"
_THREAD_COLS = "thread_id, name, project_id, created_at, updated_at, metadata"
_MESSAGE_COLS = ("message_id, thread_id, seq, type, content, is_llm_message, run_id, "
                 "created_at, metadata")
_RUN_COLS = ("run_id, thread_id, status, model, agent_id, created_at, started_at, finished_at, "
             "error, usage, cost, owner, metadata")
_AGENT_COLS = ("a.agent_id, v.version_id, v.version_number, v.name, v.system_prompt, v.model, "
               "v.configured_mcps, v.custom_mcps, v.agentpress_tools, a.created_at, v.created_at, "
               "a.current_version_id")

Row = tuple[Any, ...]
Conn = psycopg.Connection[Row]


def describe_url(url: str) -> str:
    """``user@host:port/dbname`` of a connection URL or DSN, never its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "<unparseable database URL>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


class PostgresStore:
    """``Store`` on Postgres/Supabase, scoped to one account, safe to share between processes."""

    def __init__(self, url: str, *, account_id: str | None = None, min_size: int = 1,
                 max_size: int = 8, connect_timeout: float = 30.0,
                 auto_migrate: bool = True) -> None:
        if not url:
            raise ConfigError("empty Postgres URL")
        if min_size < 0 or max_size < max(1, min_size) or connect_timeout <= 0:
            raise ConfigError("need 0 <= min_size <= max_size, max_size >= 1, "
                              "connect_timeout > 0")
        self.url = url
        self.account_id = account_id or os.environ.get(ACCOUNT_ENV_VAR) or DEFAULT_ACCOUNT
        self.where = describe_url(url)
        self._min_size, self._max_size = min_size, max_size
        self._timeout = connect_timeout
        self._auto_migrate = auto_migrate
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Conn] | None = None
        self._closed = False
        self._last_ts: datetime | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r}, account_id={self.account_id!r})"

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pool's connections. Idempotent; a closed store refuses work."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # ------------------------------------------------------------------ connections

    def _get_pool(self) -> ConnectionPool[Conn]:
        with self._lock:
            if self._closed:
                raise StoreError(f"the store {self.where} is closed")
            if self._pool is None:
                self._prepare_schema()
                self._pool = ConnectionPool(
                    self.url, min_size=self._min_size, max_size=self._max_size,
                    timeout=self._timeout, configure=self._configure,
                    check=ConnectionPool.check_connection, open=True,
                    name=f"kortix-store-{self.account_id}")
            return self._pool

    def _prepare_schema(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True,
                                 connect_timeout=max(1, int(self._timeout))) as conn:
                if self._auto_migrate:
                    migrate(conn)
                elif missing := pending_migrations(conn):
                    raise StoreError(
                        f"the database {self.where} lacks migrations {', '.join(missing)}: "
                        "run `kortix-lab db migrate` with the owner's URL")
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the store {self.where}: {exc}") from exc

    def _configure(self, conn: Conn) -> None:
        """Every pooled connection speaks UTC and carries the account for RLS."""
        conn.execute("SELECT set_config('TimeZone', 'UTC', false), "
                     "set_config('kortix.account_id', %s, false)", [self.account_id])
        conn.commit()

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        """One connection, one transaction: committed on success, rolled back on any error."""
        pool = self._get_pool()
        try:
            with pool.connection() as conn:
                yield conn
        except psycopg.errors.CheckViolation as exc:
            raise StoreError(f"refused by the database: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"store operation on {self.where} failed: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from exc

    def _now(self) -> datetime:
        with self._lock:
            now = datetime.now(UTC)
            if self._last_ts is not None and now <= self._last_ts:
                now = self._last_ts + timedelta(microseconds=1)
            self._last_ts = now
            return now

    def _require_thread(self, conn: Conn, thread_id: str, *, lock: bool = False) -> int:
        """The thread's message count; ``NotFound`` when it is not this account's."""
        row = conn.execute("SELECT message_count FROM threads WHERE thread_id = %s "
                           f"AND account_id = %s{' FOR UPDATE' if lock else ''}",
                           [thread_id, self.account_id]).fetchone()
        if row is None:
            raise NotFound(f"no thread with id {thread_id!r}")
        return int(row[0])

    # ------------------------------------------------------------------ projects

    def create_project(self, name: str, *, metadata: dict[str, Any] | None = None) -> Project:
        meta = metadata or {}
        meta_json = _dumps(meta, "project metadata")
        project_id, now = _new_id(), self._now()
        with self._tx() as conn:
            conn.execute(f"INSERT INTO projects (account_id, {_PROJECT_COLS}) "
                         "VALUES (%s, %s, %s, %s, NULL, %s::jsonb)",
                         [self.account_id, project_id, name, now, meta_json])
        return Project(project_id=project_id, name=name, created_at=now, metadata=meta)

    def get_project(self, project_id: str) -> Project:
        with self._tx() as conn:
            row = conn.execute(f"SELECT {_PROJECT_COLS} FROM projects "
                               "WHERE project_id = %s AND account_id = %s",
                               [project_id, self.account_id]).fetchone()
        if row is None:
            raise NotFound(f"no project with id {project_id!r}")
        return _project(row)

    def set_project_sandbox(self, project_id: str, sandbox_id: str | None) -> None:
        with self._tx() as conn:
            row = conn.execute("UPDATE projects SET sandbox_id = %s "
                               "WHERE project_id = %s AND account_id = %s RETURNING project_id",
                               [sandbox_id, project_id, self.account_id]).fetchone()
        if row is None:
            raise NotFound(f"no project with id {project_id!r}")

    def list_projects(self) -> list[Project]:
        with self._tx() as conn:
            rows = conn.execute(f"SELECT {_PROJECT_COLS} FROM projects WHERE account_id = %s "
                                "ORDER BY created_at, project_id", [self.account_id]).fetchall()
        return [_project(r) for r in rows]

    # ------------------------------------------------------------------ threads

    def create_thread(self, *, name: str | None = None, project_id: str | None = None,
                      metadata: dict[str, Any] | None = None) -> Thread:
        meta = metadata or {}
        meta_json = _dumps(meta, "thread metadata")
        thread_id = _new_id()
        with self._tx() as conn:
            if project_id is not None and conn.execute(
                    "SELECT 1 FROM projects WHERE project_id = %s AND account_id = %s",
                    [project_id, self.account_id]).fetchone() is None:
                raise NotFound(f"no project with id {project_id!r}")
            now = self._now()
            conn.execute(f"INSERT INTO threads (account_id, {_THREAD_COLS}, message_count) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, 0)",
                         [self.account_id, thread_id, name, project_id, now, now, meta_json])
        return Thread(thread_id=thread_id, name=name, project_id=project_id, created_at=now,
                      updated_at=now, metadata=meta)

    def get_thread(self, thread_id: str) -> Thread:
        with self._tx() as conn:
            row = conn.execute(f"SELECT {_THREAD_COLS} FROM threads "
                               "WHERE thread_id = %s AND account_id = %s",
                               [thread_id, self.account_id]).fetchone()
        if row is None:
            raise NotFound(f"no thread with id {thread_id!r}")
        return _thread(row)

    def find_thread(self, name_or_id: str) -> Thread | None:
        """The thread with this id, else the most recently updated thread with this name."""
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT {_THREAD_COLS} FROM threads "
                "WHERE account_id = %s AND (thread_id = %s OR name = %s) "
                "ORDER BY (thread_id = %s) DESC, updated_at DESC, thread_id DESC LIMIT 1",
                [self.account_id, name_or_id, name_or_id, name_or_id]).fetchone()
        return _thread(row) if row is not None else None

    def list_threads(self, *, project_id: str | None = None) -> list[Thread]:
        """Threads, most recently updated first."""
        where, params = "account_id = %s", [self.account_id]
        if project_id is not None:
            where += " AND project_id = %s"
            params.append(project_id)
        with self._tx() as conn:
            rows = conn.execute(f"SELECT {_THREAD_COLS} FROM threads WHERE {where} "
                                "ORDER BY updated_at DESC, thread_id DESC", params).fetchall()
        return [_thread(r) for r in rows]

    def rename_thread(self, thread_id: str, name: str) -> Thread:
        now = self._now()
        with self._tx() as conn:
            row = conn.execute("UPDATE threads SET name = %s, "
                               "updated_at = greatest(updated_at, %s) "
                               "WHERE thread_id = %s AND account_id = %s "
                               f"RETURNING {_THREAD_COLS}",
                               [name, now, thread_id, self.account_id]).fetchone()
        if row is None:
            raise NotFound(f"no thread with id {thread_id!r}")
        return _thread(row)

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread; its messages and runs go with it (foreign keys cascade)."""
        with self._tx() as conn:
            row = conn.execute("DELETE FROM threads WHERE thread_id = %s AND account_id = %s "
                               "RETURNING thread_id", [thread_id, self.account_id]).fetchone()
        if row is None:
            raise NotFound(f"no thread with id {thread_id!r}")

    # ------------------------------------------------------------------ messages

    def add_messages(self, thread_id: str, messages: Sequence[NewMessage]) -> list[Message]:
        """Store a batch in one transaction: every message or, on any error, none of them."""
        encoded = [(m, _dumps(m.content, f"content of message {i}"),
                    _dumps(m.metadata, f"metadata of message {i}"))
                   for i, m in enumerate(messages)]
        with self._tx() as conn:
            if not encoded:
                self._require_thread(conn, thread_id)
                return []
            now = self._now()
            # The row lock taken here serialises appenders on this thread across processes.
            row = conn.execute(
                "UPDATE threads SET message_count = message_count + %s, "
                "updated_at = greatest(updated_at, %s) "
                "WHERE thread_id = %s AND account_id = %s RETURNING message_count",
                [len(encoded), now, thread_id, self.account_id]).fetchone()
            if row is None:
                raise NotFound(f"no thread with id {thread_id!r}")
            first = int(row[0]) - len(encoded) + 1
            rows = [(_new_id(), thread_id, first + i, m.type, content, m.is_llm_message,
                     m.run_id, now, meta)
                    for i, (m, content, meta) in enumerate(encoded)]
            try:
                with conn.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO messages (account_id, {_MESSAGE_COLS}) VALUES "
                        "(%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s::jsonb)",
                        [(self.account_id, *r) for r in rows])
            except psycopg.Error as exc:
                raise StoreError(f"could not add {len(rows)} message(s) to thread {thread_id}; "
                                 f"none was stored: {_first_line(exc)}") from exc
        return [Message(message_id=r[0], thread_id=thread_id, seq=r[2], type=m.type,
                        content=m.content, is_llm_message=m.is_llm_message, run_id=m.run_id,
                        created_at=now, metadata=m.metadata)
                for r, (m, _, _) in zip(rows, encoded, strict=True)]

    def get_messages(self, thread_id: str, *, last: int | None = None,
                     after_seq: int | None = None, llm_only: bool = False) -> list[Message]:
        """Messages in ascending seq: those after ``after_seq``, filtered, then the ``last`` N."""
        if last is not None and last < 0:
            raise ConfigError(f"last must be >= 0, got {last}")
        where = "thread_id = %s AND seq > %s" + (" AND is_llm_message" if llm_only else "")
        params: list[Any] = [thread_id, after_seq or 0]
        with self._tx() as conn:
            self._require_thread(conn, thread_id)
            if last is None:
                rows = conn.execute(f"SELECT {_MESSAGE_COLS} FROM messages WHERE {where} "
                                    "ORDER BY seq", params).fetchall()
                return [_message(r) for r in rows]
            if last == 0:
                return []
            # (thread_id, seq) is unique, hence indexed: a backward scan reads only N rows.
            rows = conn.execute(f"SELECT {_MESSAGE_COLS} FROM messages WHERE {where} "
                                "ORDER BY seq DESC LIMIT %s", [*params, last]).fetchall()
        return [_message(r) for r in reversed(rows)]

    def get_message(self, message_id: str) -> Message:
        with self._tx() as conn:
            row = conn.execute(f"SELECT {_MESSAGE_COLS} FROM messages "
                               "WHERE message_id = %s AND account_id = %s",
                               [message_id, self.account_id]).fetchone()
        if row is None:
            raise NotFound(f"no message with id {message_id!r}")
        return _message(row)

    def count_messages(self, thread_id: str) -> int:
        with self._tx() as conn:
            return self._require_thread(conn, thread_id)

    # ------------------------------------------------------------------ runs

    def create_run(self, thread_id: str, *, model: str, agent_id: str | None = None,
                   status: str = "queued", metadata: dict[str, Any] | None = None) -> AgentRun:
        meta = metadata or {}
        meta_json = _dumps(meta, "run metadata")
        run_id = _new_id()
        with self._tx() as conn:
            self._require_thread(conn, thread_id)
            now = self._now()
            conn.execute(f"INSERT INTO agent_runs (account_id, {_RUN_COLS}) VALUES "
                         "(%s, %s, %s, %s, %s, %s, %s, NULL, NULL, NULL, '{}', 0, NULL, %s::jsonb)",
                         [self.account_id, run_id, thread_id, status, model, agent_id, now,
                          meta_json])
        return AgentRun(run_id=run_id, thread_id=thread_id, status=status, model=model,
                        agent_id=agent_id, created_at=now, metadata=meta)

    def begin_run(self, thread_id: str, *, model: str, agent_id: str | None = None,
                  metadata: dict[str, Any] | None = None, owner: str | None = None,
                  message: NewMessage | None = None, ignore: Sequence[str] = (),
                  ) -> RunStart:
        """Start a run on a thread in one transaction (see ``Store.begin_run``).

        The thread row is locked first (``FOR UPDATE``), so two starts on one thread,
        from any processes, take turns: the second reads the active runs only once the
        first has committed (READ COMMITTED: each statement sees what was committed
        before it began), finds its run, and creates nothing."""
        meta = metadata or {}
        meta_json = _dumps(meta, "run metadata")
        encoded = None if message is None else (
            _dumps(message.content, "content of the message"),
            _dumps(message.metadata, "metadata of the message"))
        run_id = _new_id()
        with self._tx() as conn:
            row = conn.execute(f"SELECT {_THREAD_COLS} FROM threads WHERE thread_id = %s "
                               "AND account_id = %s FOR UPDATE",
                               [thread_id, self.account_id]).fetchone()
            if row is None:
                raise NotFound(f"no thread with id {thread_id!r}")
            busy = [_run(r) for r in conn.execute(
                f"SELECT {_RUN_COLS} FROM agent_runs WHERE thread_id = %s AND account_id = %s "
                "AND status IN ('queued', 'running') AND NOT (run_id = ANY(%s::text[])) "
                "ORDER BY created_at, run_id",
                [thread_id, self.account_id, list(ignore)]).fetchall()]
            if busy:
                return RunStart(thread=_thread(row), busy=busy, run=None, message=None)
            now = self._now()
            conn.execute(f"INSERT INTO agent_runs (account_id, {_RUN_COLS}) VALUES "
                         "(%s, %s, %s, 'queued', %s, %s, %s, NULL, NULL, NULL, '{}', 0, %s, "
                         "%s::jsonb)",
                         [self.account_id, run_id, thread_id, model, agent_id, now, owner,
                          meta_json])
            stored = None
            if message is not None and encoded is not None:
                head = conn.execute(
                    "UPDATE threads SET message_count = message_count + 1, "
                    "updated_at = greatest(updated_at, %s) "
                    "WHERE thread_id = %s AND account_id = %s "
                    f"RETURNING message_count, {_THREAD_COLS}",
                    [now, thread_id, self.account_id]).fetchone()
                assert head is not None  # the row is locked above
                seq, row = int(head[0]), head[1:]
                message_id, run_of = _new_id(), message.run_id or run_id
                conn.execute(f"INSERT INTO messages (account_id, {_MESSAGE_COLS}) VALUES "
                             "(%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s::jsonb)",
                             [self.account_id, message_id, thread_id, seq, message.type,
                              encoded[0], message.is_llm_message, run_of, now, encoded[1]])
                stored = Message(message_id=message_id, thread_id=thread_id, seq=seq,
                                 type=message.type, content=message.content,
                                 is_llm_message=message.is_llm_message, run_id=run_of,
                                 created_at=now, metadata=message.metadata)
        run = AgentRun(run_id=run_id, thread_id=thread_id, status="queued", model=model,
                       agent_id=agent_id, created_at=now, owner=owner, metadata=meta)
        return RunStart(thread=_thread(row), busy=[], run=run, message=stored)

    def update_run(self, run_id: str, *, status: str | None = None, error: str | None = None,
                   usage: dict[str, int] | None = None, cost: float | None = None,
                   owner: str | None = None, started: bool = False,
                   finished: bool = False) -> AgentRun:
        """Change the given fields (None leaves a field as it is); ``usage`` replaces the old."""
        sets: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("error", error), ("cost", cost),
                              ("owner", owner)):
            if value is not None:
                sets.append(f"{column} = %s")
                params.append(value)
        if usage is not None:
            sets.append("usage = %s::jsonb")
            params.append(_dumps(usage, "run usage"))
        if started or finished:
            now = self._now()
            if started:
                sets.append("started_at = %s")
                params.append(now)
            if finished:
                sets.append("finished_at = %s")
                params.append(now)
        with self._tx() as conn:
            if sets:
                row = conn.execute(f"UPDATE agent_runs SET {', '.join(sets)} "
                                   "WHERE run_id = %s AND account_id = %s "
                                   f"RETURNING {_RUN_COLS}",
                                   [*params, run_id, self.account_id]).fetchone()
            else:
                row = conn.execute(f"SELECT {_RUN_COLS} FROM agent_runs "
                                   "WHERE run_id = %s AND account_id = %s",
                                   [run_id, self.account_id]).fetchone()
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")
        return _run(row)

    def get_run(self, run_id: str) -> AgentRun:
        with self._tx() as conn:
            row = conn.execute(f"SELECT {_RUN_COLS} FROM agent_runs "
                               "WHERE run_id = %s AND account_id = %s",
                               [run_id, self.account_id]).fetchone()
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")
        return _run(row)

    # -- stops that outlive Redis (runs.manager.StopLedger)
    def record_stop(self, run_id: str, reason: str) -> None:
        """Keep a stop request with the run: the control channel may lose it (a flush)."""
        with self._tx() as conn:
            row = conn.execute(
                "UPDATE agent_runs SET metadata = metadata || jsonb_build_object("
                "'stop_requested', %s::text) WHERE run_id = %s AND account_id = %s "
                "RETURNING run_id", [reason, run_id, self.account_id]).fetchone()
        if row is None:
            raise NotFound(f"no run with id {run_id!r}")

    def recorded_stop(self, run_id: str) -> str | None:
        with self._tx() as conn:
            row = conn.execute("SELECT metadata->>'stop_requested' FROM agent_runs "
                               "WHERE run_id = %s AND account_id = %s",
                               [run_id, self.account_id]).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def count_active_runs(self) -> int:
        """Queued and running runs of this account, wherever they execute."""
        with self._tx() as conn:
            row = conn.execute("SELECT count(*) FROM agent_runs WHERE account_id = %s "
                               "AND status IN ('queued', 'running')",
                               [self.account_id]).fetchone()
        return int(row[0]) if row else 0

    def list_runs(self, *, thread_id: str | None = None,
                  statuses: Sequence[str] | None = None) -> list[AgentRun]:
        """Runs, oldest first."""
        conditions: list[str] = ["account_id = %s"]
        params: list[Any] = [self.account_id]
        if thread_id is not None:
            conditions.append("thread_id = %s")
            params.append(thread_id)
        if statuses is not None:
            if not statuses:
                return []
            conditions.append("status = ANY(%s)")
            params.append(list(statuses))
        with self._tx() as conn:
            rows = conn.execute(f"SELECT {_RUN_COLS} FROM agent_runs "
                                f"WHERE {' AND '.join(conditions)} "
                                "ORDER BY created_at, run_id", params).fetchall()
        return [_run(r) for r in rows]

    # ------------------------------------------------------------------ agents

    def create_agent(self, config: AgentConfig) -> Agent:
        agent_id = _new_id()
        now = self._now()
        with self._tx() as conn:
            conn.execute("INSERT INTO agents (agent_id, account_id, current_version_id, "
                         "created_at, updated_at) VALUES (%s, %s, '', %s, %s)",
                         [agent_id, self.account_id, now, now])
            version_id = self._insert_version(conn, agent_id, 1, config, now)
            conn.execute("UPDATE agents SET current_version_id = %s WHERE agent_id = %s",
                         [version_id, agent_id])
        return Agent(agent_id=agent_id, current_version_id=version_id, version_id=version_id,
                     version_number=1, config=config, created_at=now, updated_at=now)

    def update_agent(self, agent_id: str, config: AgentConfig) -> Agent:
        """Make ``config`` the agent's new current version; older versions stay readable."""
        with self._tx() as conn:
            # FOR UPDATE: two servers editing one agent get consecutive version numbers.
            row = conn.execute("SELECT created_at FROM agents WHERE agent_id = %s "
                               "AND account_id = %s FOR UPDATE",
                               [agent_id, self.account_id]).fetchone()
            if row is None:
                raise NotFound(f"no agent with id {agent_id!r}")
            created_at = _utc(row[0])
            top = conn.execute("SELECT max(version_number) FROM agent_versions "
                               "WHERE agent_id = %s", [agent_id]).fetchone()
            number = int(top[0] if top and top[0] is not None else 0) + 1
            now = self._now()
            version_id = self._insert_version(conn, agent_id, number, config, now)
            conn.execute("UPDATE agents SET current_version_id = %s, updated_at = %s "
                         "WHERE agent_id = %s", [version_id, now, agent_id])
        return Agent(agent_id=agent_id, current_version_id=version_id, version_id=version_id,
                     version_number=number, config=config, created_at=created_at,
                     updated_at=now)

    def get_agent(self, agent_id: str, *, version_id: str | None = None) -> Agent:
        """The current version, or the given one."""
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT {_AGENT_COLS} FROM agents a JOIN agent_versions v "
                "ON v.agent_id = a.agent_id "
                "AND v.version_id = coalesce(%s::text, a.current_version_id) "
                "WHERE a.agent_id = %s AND a.account_id = %s",
                [version_id, agent_id, self.account_id]).fetchone()
        if row is None:
            if version_id is None:
                raise NotFound(f"no agent with id {agent_id!r}")
            raise NotFound(f"no version {version_id!r} of agent {agent_id!r}")
        return _agent(row)

    def find_agent(self, name_or_id: str) -> Agent | None:
        """The agent with this id, else the most recently updated agent with this name."""
        with self._tx() as conn:
            row = conn.execute(
                f"SELECT {_AGENT_COLS} FROM agents a JOIN agent_versions v "
                "ON v.version_id = a.current_version_id "
                "WHERE a.account_id = %s AND (a.agent_id = %s OR v.name = %s) "
                "ORDER BY (a.agent_id = %s) DESC, a.updated_at DESC, a.agent_id LIMIT 1",
                [self.account_id, name_or_id, name_or_id, name_or_id]).fetchone()
        return _agent(row) if row is not None else None

    def list_agents(self) -> list[Agent]:
        """Current versions of all agents, oldest agent first."""
        with self._tx() as conn:
            rows = conn.execute(f"SELECT {_AGENT_COLS} FROM agents a JOIN agent_versions v "
                                "ON v.version_id = a.current_version_id "
                                "WHERE a.account_id = %s ORDER BY a.created_at, a.agent_id",
                                [self.account_id]).fetchall()
        return [_agent(r) for r in rows]

    def list_agent_versions(self, agent_id: str) -> list[Agent]:
        """Every version of an agent, version 1 first."""
        with self._tx() as conn:
            rows = conn.execute(f"SELECT {_AGENT_COLS} FROM agents a JOIN agent_versions v "
                                "ON v.agent_id = a.agent_id "
                                "WHERE a.agent_id = %s AND a.account_id = %s "
                                "ORDER BY v.version_number", [agent_id, self.account_id]
                                ).fetchall()
        if not rows:
            raise NotFound(f"no agent with id {agent_id!r}")
        return [_agent(r) for r in rows]

    def delete_agent(self, agent_id: str) -> None:
        """Delete an agent; its versions go with it (the foreign key cascades)."""
        with self._tx() as conn:
            row = conn.execute("DELETE FROM agents WHERE agent_id = %s AND account_id = %s "
                               "RETURNING agent_id", [agent_id, self.account_id]).fetchone()
        if row is None:
            raise NotFound(f"no agent with id {agent_id!r}")

    def _insert_version(self, conn: Conn, agent_id: str, number: int, config: AgentConfig,
                        now: datetime) -> str:
        version_id = _new_id()
        conn.execute(
            "INSERT INTO agent_versions (version_id, account_id, agent_id, version_number, "
            "name, system_prompt, model, configured_mcps, custom_mcps, agentpress_tools, "
            "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s)",
            [version_id, self.account_id, agent_id, number, config.name, config.system_prompt,
             config.model, _dumps(config.configured_mcps, "configured_mcps"),
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
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT t.thread_id, t.name, t.project_id, t.created_at, t.updated_at, "
                "t.message_count, count(r.run_id), coalesce(sum(r.cost), 0) FROM threads t "
                "LEFT JOIN agent_runs r ON r.thread_id = t.thread_id "
                "WHERE t.account_id = %s GROUP BY t.thread_id "
                "ORDER BY t.updated_at DESC, t.thread_id DESC", [self.account_id]).fetchall()
        return frames.threads_frame([
            frames.ThreadSummary(thread_id=r[0], name=r[1], project_id=r[2],
                                 created_at=_utc(r[3]), updated_at=_utc(r[4]),
                                 messages=int(r[5]), runs=int(r[6]), cost=float(r[7]))
            for r in rows])


# ---------------------------------------------------------------------- maintenance


def active_runs_all_accounts(url: str, *, connect_timeout: float = 10.0
                             ) -> list[tuple[str, AgentRun]]:
    """``(account_id, run)`` of every queued or running run, oldest first, across accounts.

    For the sweeper, which serves the whole deployment: it must connect as a role
    that row-level security does not filter (the owner, or Supabase's service role).
    """
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(connect_timeout))) as conn:
            rows = conn.execute(f"SELECT account_id, {_RUN_COLS} FROM agent_runs "
                                "WHERE status IN ('queued', 'running') "
                                "ORDER BY created_at, run_id").fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot list active runs in {describe_url(url)}: "
                         f"{_first_line(exc)}") from exc
    return [(str(r[0]), _run(r[1:])) for r in rows]


# ---------------------------------------------------------------------- module helpers


def _new_id() -> str:
    return str(uuid.uuid4())


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def _utc_or_none(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.astimezone(UTC)


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} cannot be stored as JSON: {exc}") from exc


def _json(value: Any) -> Any:
    """jsonb arrives parsed; an empty or NULL document is an empty dict, as in DuckDB."""
    return value if value else {}


def _project(row: Row) -> Project:
    return Project(project_id=row[0], name=row[1], created_at=_utc(row[2]), sandbox_id=row[3],
                   metadata=_json(row[4]))


def _thread(row: Row) -> Thread:
    return Thread(thread_id=row[0], name=row[1], project_id=row[2], created_at=_utc(row[3]),
                  updated_at=_utc(row[4]), metadata=_json(row[5]))


def _message(row: Row) -> Message:
    return Message(message_id=row[0], thread_id=row[1], seq=int(row[2]), type=row[3],
                   content=_json(row[4]), is_llm_message=bool(row[5]), run_id=row[6],
                   created_at=_utc(row[7]), metadata=_json(row[8]))


def _run(row: Row) -> AgentRun:
    return AgentRun(run_id=row[0], thread_id=row[1], status=row[2], model=row[3],
                    agent_id=row[4], created_at=_utc(row[5]), started_at=_utc_or_none(row[6]),
                    finished_at=_utc_or_none(row[7]), error=row[8], usage=_json(row[9]),
                    cost=float(row[10]), owner=row[11], metadata=_json(row[12]))


def _agent(row: Row) -> Agent:
    config = AgentConfig(name=row[3], system_prompt=row[4], model=row[5],
                         configured_mcps=row[6] or [], custom_mcps=row[7] or [],
                         agentpress_tools=_json(row[8]))
    return Agent(agent_id=row[0], current_version_id=row[11], version_number=int(row[2]),
                 config=config, created_at=_utc(row[9]), updated_at=_utc(row[10]),
                 version_id=row[1])
