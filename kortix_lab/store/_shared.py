"""One DuckDB connection that a process holds only while it works, with group commit.

DuckDB lets one process open a file read-write and refuses every other
process, even read-only. ``SharedConnection`` makes processes take turns
without a lock error ever reaching the user:

* ``run(op)`` takes a process-local ``RLock`` (threads of one process share
  the connection one at a time); when not connected it takes the inter-process
  lock on ``<db>.lock`` (``FileLock``: polled, bounded by ``lock_timeout``, a
  timeout names the holder) and opens DuckDB (≈15 ms here).
* After an operation the connection lingers ``linger`` seconds so a burst of
  operations opens the file once; a daemon thread then closes it and releases
  the lock. ``linger=0`` releases at once.
* A holder busy for longer than ``max_hold`` hands over at the next operation
  boundary when another process has announced it is waiting.
* Before ``fork`` every connection is closed: a child that inherits a live
  DuckDB instance could checkpoint over the parent's file. The child starts
  unconnected; a connection that could not be closed in time (or a
  ``:memory:`` database) makes the copy in the child refuse to work.

Group commit
------------
A DuckDB commit costs about as much as the statement it commits (≈0.4 ms
here) plus an fsync of the WAL (milliseconds when the disk is busy), and
operations are serialised on the one connection anyway. So when
threads queue for the connection, their operations share one transaction:
each runs on its own thread, in turn, inside the open transaction, and the
last one in line (no thread waiting behind it, or the group is full or old)
commits for all. An operation returns — or raises a "clean" error, one raised
before it wrote anything (``NotFound``, ``ConfigError``) — only once its group
is committed, so whatever a caller was told is durable and nobody ever sees
another thread's uncommitted work. When an operation fails any other way, the
group is rolled back: the failing operation raises its own error and every
other operation of the group runs again, so errors reach exactly the caller
that caused them. An operation with no one queued behind it runs on its own
in autocommit, which costs nothing extra. Operations keep their order: one
thread's operations run one after another, and a group applies its operations
in the order they took the connection.

Inside a group the owner may defer writes and flush them as one multi-row
statement per kind right before the commit (``before_commit``), since a
statement's fixed cost dwarfs its rows'. A failed flush cannot be pinned on
one member, so the group is rolled back and each member runs again alone, in
a transaction of its own: then the error is its own.

The owner hooks in five times: ``on_connect(con, dirty)`` right after opening
(run migrations; ``dirty`` means the previous holder died with unwritten
state), ``on_release(con)`` right before closing (write state back),
``before_commit(con)`` (flush deferred writes), ``on_commit()`` when an
operation's writes are durable and ``on_abort()`` when they were rolled back
(restore in-memory state, drop deferred writes). All run under the lock.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import duckdb

from kortix_lab.agentpress.errors import ConfigError, NotFound, StoreError

from ._filelock import CLEAN, DIRTY, MAX_POLL_INTERVAL, FileLock

log = logging.getLogger(__name__)

MEMORY = ":memory:"

#: A group commits once it holds this many operations or is this old, whoever waits.
#: About one commit's cost: under steady load someone nearly always waits, and an
#: operation's latency is its group's age plus the commit (a caller making several
#: store calls in a row, as a run's start does, pays it each time).
MAX_GROUP_OPS = 64
MAX_GROUP_SECONDS = 0.002
#: A thread waiting for its group to commit checks this often that the group is not
#: stranded (it never is when every waiter comes back; this is a safety net).
SETTLE_AFTER = 0.05
#: How often one operation may ask to be run again (``Retry``) before it fails.
MAX_RETRIES = 3

#: Errors an operation raises only before it has written anything: the transaction
#: it ran in is still good, and the error is the caller's answer.
CLEAN_ERRORS: tuple[type[BaseException], ...] = (NotFound, ConfigError)

T = TypeVar("T")
Operation = Callable[[duckdb.DuckDBPyConnection], T]
OnConnect = Callable[[duckdb.DuckDBPyConnection, bool], None]
OnRelease = Callable[[duckdb.DuckDBPyConnection], None]
Hook = Callable[[], None]

# Every open connection manager, so fork and interpreter exit can close them.
_LIVE: weakref.WeakSet[SharedConnection] = weakref.WeakSet()
# Connections a forked child inherited but must never close (closing checkpoints
# over the parent's file; so would garbage collection): kept until exit.
_ORPHANS: list[object] = []


class Retry(Exception):  # noqa: N818 - a signal, not an error
    """Raised by an operation that must run again: its transaction is rolled back first
    (say, a stale in-memory counter made an insert collide; the operation has fixed
    its state and will succeed on the next try)."""


class FlushFailed(Exception):  # noqa: N818 - a signal carrying the error as its cause
    """Raised (``from`` the error) by an operation whose flush of deferred writes failed
    before one of its statements: the writes may be another member's."""


class _Solo(Exception):  # noqa: N818
    """Run the operation again alone: its group failed in a way no one member owns."""


def _noop() -> None:
    return None


def _noop_con(con: duckdb.DuckDBPyConnection) -> None:
    return None


class _Group:
    """Operations sharing one transaction; ``done`` is set once it is committed or not."""

    __slots__ = ("done", "state", "error", "ops", "opened")

    OPEN, COMMITTED, RETRY, FAILED, SOLO = range(5)

    def __init__(self) -> None:
        self.done = threading.Event()
        self.state = _Group.OPEN
        self.error: BaseException | None = None
        self.ops = 0
        self.opened = time.monotonic()

    def settle(self, state: int, error: BaseException | None = None) -> None:
        self.state = state
        self.error = error
        self.done.set()


class SharedConnection:
    def __init__(self, path: str, *, lock_timeout: float, linger: float, max_hold: float,
                 on_connect: OnConnect, on_release: OnRelease,
                 before_commit: OnRelease = _noop_con, on_commit: Hook = _noop,
                 on_abort: Hook = _noop) -> None:
        self.path = path
        self.memory = path == MEMORY
        self.lock_timeout = lock_timeout
        self.linger = linger
        self.max_hold = max_hold
        self._on_connect = on_connect
        self._on_release = on_release
        self._before_commit = before_commit
        self._on_commit = on_commit
        self._on_abort = on_abort

        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._flock: FileLock | None = None
        self._depth = 0
        self._acquired_at = 0.0
        self._last_used = 0.0
        self._dirty_marked = False
        self._reaper: threading.Thread | None = None
        self._closed = False
        self._unusable: str | None = None
        self._fork_locked = False
        # Group commit: the open group, and how many threads are queued for the lock
        # inside ``run`` (they will join the open group).
        self._group: _Group | None = None
        self._wanting = 0
        self._wanting_lock = threading.Lock()

        if self.memory:
            self._con = duckdb.connect(MEMORY)
            on_connect(self._con, False)
        else:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the store's folder for {path}: {exc}") from exc
            self._flock = FileLock(Path(path + ".lock"))
        _LIVE.add(self)

    @property
    def holds_lock(self) -> bool:
        return self._flock is not None and self._flock.held

    @property
    def in_group(self) -> bool:
        """Whether the current operation runs inside a transaction that ``before_commit``
        ends (lock held): then it may defer its writes."""
        return self._group is not None

    # -- operations --------------------------------------------------------------------

    def run(self, op: Operation[T], *, write: bool = True, atomic: bool = False) -> T:
        """Run ``op(con)`` as one operation and return what it returns once it is durable.

        ``write`` operations queued behind one another share a transaction (group
        commit); ``atomic`` ones always run in a transaction, even alone (use it for
        several writes that must stand or fall together). A read joins an open group
        (it may see the group's writes, so it answers only once they are committed) and
        otherwise runs alone. DuckDB errors surface as ``StoreError``.
        """
        retries = 0
        solo = False
        while True:
            with self._wanting_lock:
                self._wanting += 1
            try:
                self.lock.acquire()
            finally:
                with self._wanting_lock:
                    self._wanting -= 1
            try:
                group, value, error = self._attempt(op, write, atomic, solo)
            except Retry:
                retries += 1
                if retries > MAX_RETRIES:
                    raise StoreError(f"a store operation on {self.path} had to be retried "
                                     f"{MAX_RETRIES} times; giving up") from None
                continue
            except _Solo:
                solo = True
                continue
            finally:
                self.lock.release()
            if group is not None:
                self._await(group)
                if group.state == _Group.RETRY:
                    continue
                if group.state == _Group.SOLO:
                    solo = True
                    continue
                if group.state == _Group.FAILED:
                    assert group.error is not None
                    raise group.error
            if error is not None:
                raise error
            return value  # type: ignore[return-value]  # set whenever error is None

    def _attempt(self, op: Operation[T], write: bool, atomic: bool, solo: bool
                 ) -> tuple[_Group | None, T | None, BaseException | None]:
        """One try at ``op`` (lock held): (group to wait for or None, value, clean error).

        ``solo``: in a transaction of its own that no one joins."""
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        if self._unusable:
            raise StoreError(self._unusable)
        self._depth += 1
        try:
            if self._depth > 1:  # called from inside another operation: part of it
                assert self._con is not None
                return None, op(self._con), None
            con = self._connection()
            if solo:
                self._settle()
            group = self._group
            if group is None and (solo or atomic or (write and self._wanting > 0)):
                try:
                    con.begin()
                except duckdb.Error as exc:
                    raise self._failure(exc) from exc
                group = self._group = _Group()
            if group is None:  # alone: autocommit
                try:
                    value = op(con)
                except CLEAN_ERRORS as exc:
                    self._on_commit()
                    return None, None, exc
                except Retry:
                    self._on_abort()
                    raise
                except BaseException as exc:
                    self._on_abort()
                    self._raise(exc)
                self._on_commit()
                return None, value, None
            error: BaseException | None = None
            result: T | None = None
            try:
                result = op(con)
            except CLEAN_ERRORS as exc:
                error = exc
            except FlushFailed as exc:
                self._flush_failed(group, exc.__cause__ or exc, own=group.ops == 0)
            except BaseException as exc:
                self._abort(group)
                self._raise(exc)
            group.ops += 1
            if not solo and self._wanting and group.ops < MAX_GROUP_OPS and \
                    time.monotonic() - group.opened < MAX_GROUP_SECONDS:
                return group, result, error  # the next in line joins; the last one commits
            self._commit(group)
            return None, result, error
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._after_operation()

    def _await(self, group: _Group) -> None:
        while not group.done.wait(SETTLE_AFTER):
            # Whoever queued behind us commits the group; should it ever be stranded
            # (a waiter interrupted before it got the lock), commit it ourselves.
            with self.lock:
                if self._group is group:
                    self._settle()

    def _failure(self, exc: BaseException) -> BaseException:
        """The error an operation's caller gets (lock held)."""
        if isinstance(exc, duckdb.Error):
            if isinstance(exc, duckdb.FatalException):
                self._release(write_back=False)
            return StoreError(f"store operation failed: {exc}")
        return exc

    def _raise(self, exc: BaseException) -> NoReturn:
        failure = self._failure(exc)
        if failure is exc:
            raise exc
        raise failure from exc

    def _commit(self, group: _Group) -> None:
        """Flush and commit the open group (lock held). A failed flush sends its members
        to run alone; a failed commit gives every member the error."""
        assert self._con is not None
        try:
            self._before_commit(self._con)
        except BaseException as exc:
            self._flush_failed(group, exc.__cause__ if isinstance(exc, FlushFailed) and
                               exc.__cause__ else exc, own=group.ops <= 1)
        self._group = None
        try:
            self._con.commit()
        except duckdb.Error as exc:
            error = StoreError(f"store operation failed: could not commit: {exc}")
            error.__cause__ = exc
            self._rollback()
            group.settle(_Group.FAILED, error)
            if isinstance(exc, duckdb.FatalException):
                self._release(write_back=False)
            raise error from exc
        self._on_commit()
        group.settle(_Group.COMMITTED)

    def _abort(self, group: _Group) -> None:
        """Roll the open group back (lock held); its other members run again."""
        self._group = None
        self._rollback()
        group.settle(_Group.RETRY)

    def _flush_failed(self, group: _Group, cause: BaseException, *, own: bool) -> NoReturn:
        """Deferred writes failed (lock held): roll back. When they may be another
        member's, every member runs again alone; else the error is the current one's."""
        self._group = None
        self._rollback()
        if not own:
            group.settle(_Group.SOLO)
            raise _Solo from cause
        if isinstance(cause, Retry):
            group.settle(_Group.RETRY)
            raise cause
        error = self._failure(cause)
        group.settle(_Group.FAILED, error)
        if error is cause:
            raise cause
        raise error from cause

    def _rollback(self) -> None:
        try:
            if self._con is not None:
                self._con.rollback()
        except duckdb.Error:
            log.warning("rolling back on %s failed", self.path, exc_info=True)
        finally:
            self._on_abort()

    def _settle(self) -> None:
        """Commit the open group, if any, before the connection is used otherwise."""
        group = self._group
        if group is not None:
            try:
                self._commit(group)
            except Exception:  # its members have the error or run again; the caller goes on
                log.warning("committing a group on %s failed", self.path, exc_info=True)

    def _after_operation(self) -> None:
        if self._con is not None and not self.memory:
            self._last_used = time.monotonic()
            if self.linger <= 0:
                self._release()
            elif self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap, name="kortix-store-linger", daemon=True)
                self._reaper.start()

    def mark_dirty(self) -> None:
        """Tell a successor that state is not written back yet (once per tenure)."""
        if self._flock is not None and not self._dirty_marked:
            self._flock.write_state(DIRTY)
            self._dirty_marked = True

    def mark_clean(self) -> None:
        if self._flock is not None and self._dirty_marked:
            self._flock.write_state(CLEAN)
            self._dirty_marked = False

    def close(self) -> None:
        """Write back, close DuckDB and release the lock file. Idempotent."""
        with self.lock:
            if self._closed:
                return
            if self.memory:
                if self._con is not None and not self._unusable:
                    self._settle()
                    self._con.close()
                self._con = None
            else:
                self._release()
                assert self._flock is not None
                if not self._unusable:
                    self._flock.close()
            self._closed = True
            self._cond.notify_all()
            reaper = self._reaper
        _LIVE.discard(self)
        # Let the linger thread finish: a daemon thread still alive at interpreter
        # exit keeps DuckDB objects alive past finalisation (and nanobind says so).
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(timeout=5.0)

    # -- connecting and releasing ------------------------------------------------------

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is not None:
            if self.memory or time.monotonic() - self._acquired_at <= self.max_hold:
                return self._con
            assert self._flock is not None
            if not self._flock.others_waiting():
                return self._con
            self._release()
            # Waiters poll at least every MAX_POLL_INTERVAL: give one of them the turn.
            time.sleep(2 * MAX_POLL_INTERVAL)
        return self._connect()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        assert self._flock is not None
        deadline = time.monotonic() + self.lock_timeout
        state = self._flock.acquire(self.lock_timeout)
        self._dirty_marked = state == DIRTY
        con: duckdb.DuckDBPyConnection | None = None
        try:
            con = self._open(deadline)
            self._on_connect(con, state == DIRTY)
        except BaseException:
            if con is not None:
                con.close()
            self._flock.release()
            raise
        self._con = con
        self._acquired_at = time.monotonic()
        return con

    def _open(self, deadline: float) -> duckdb.DuckDBPyConnection:
        """Open DuckDB, waiting out a process that holds the file without our lock file."""
        delay = 0.005
        while True:
            try:
                return duckdb.connect(self.path)
            except duckdb.IOException as exc:
                if "could not set lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise StoreError(f"cannot open the store {self.path}: {exc}") from exc
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.1)

    def _release(self, *, write_back: bool = True) -> None:
        """Commit the open group, write back, close DuckDB and let the next process in.
        Caller holds ``lock``."""
        if self._con is None or self.memory:
            return
        if self._group is not None:
            if write_back:
                self._settle()
            else:  # the database is broken: the group cannot be committed
                group, self._group = self._group, None
                self._rollback()
                group.settle(_Group.FAILED, StoreError(
                    f"store operation failed: the store {self.path} had a fatal error"))
        con, self._con = self._con, None
        try:
            if write_back:
                self._on_release(con)
        except Exception:  # the lock file still says dirty: the next holder repairs
            log.warning("could not write state back to %s", self.path, exc_info=True)
        finally:
            try:
                con.close()
            except duckdb.Error:
                log.warning("closing %s failed", self.path, exc_info=True)
            assert self._flock is not None
            self._flock.release()
            self._cond.notify_all()

    def _reap(self) -> None:
        """Linger thread: release once the connection has been idle for ``linger``."""
        with self._cond:
            try:
                while self._con is not None and not self._closed:
                    idle = time.monotonic() - self._last_used
                    if self._depth == 0 and idle >= self.linger:
                        self._release()
                        break
                    self._cond.wait(max(self.linger - idle, 0.001))
            finally:
                if self._reaper is threading.current_thread():
                    self._reaper = None

    # -- fork ------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self._fork_locked = self.lock.acquire(timeout=5.0)
        if self._fork_locked and not self._closed:
            self._release()

    def _after_fork_in_parent(self) -> None:
        if self._fork_locked:
            self._fork_locked = False
            self.lock.release()

    def _after_fork_in_child(self) -> None:
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._fork_locked = False
        self._reaper = None
        self._depth = 0
        self._group = None  # its threads do not exist here
        self._wanting = 0
        self._wanting_lock = threading.Lock()
        if self._closed:
            return
        if self._flock is not None:
            self._flock.forget()
        if self._con is not None:
            _ORPHANS.append(self._con)
            self._con = None
            self._unusable = (f"the store {self.path} was open in the parent when this process "
                              "forked; open a new store in the child")


def _close_all() -> None:
    for shared in list(_LIVE):
        try:
            shared.close()
        except Exception:  # exiting anyway: the next holder repairs what is left
            log.warning("closing %s at exit failed", shared.path, exc_info=True)


def _before_fork() -> None:
    for shared in list(_LIVE):
        shared._before_fork()


def _after_fork_in_parent() -> None:
    for shared in list(_LIVE):
        shared._after_fork_in_parent()


def _after_fork_in_child() -> None:
    for shared in list(_LIVE):
        shared._after_fork_in_child()


atexit.register(_close_all)
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
