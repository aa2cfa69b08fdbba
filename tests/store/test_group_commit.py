"""Group commit and the per-tenure caches of the DuckDB store.

Operations queued for the connection share one transaction, and their hot writes
are deferred to one statement per kind at its commit. What must hold whatever the
timing: every write is kept, one thread's writes keep their order, an error
reaches exactly the caller that caused it (the others' work is run again, never
lost), a caller is answered only once its group is durable, and no reader sees a
write that was rolled back. The caches (thread rows, runs, active runs, message
tails) must answer as the database would.

To make a group form on purpose, a test holds the connection's lock while
threads queue for it (``queued``), then lets them in together.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import kortix_lab.store._shared as shared_module
import kortix_lab.store.duckdb_store as duckdb_store
from kortix_lab.agentpress.errors import NotFound, StoreError
from kortix_lab.agentpress.store import Message, NewMessage
from kortix_lab.store import DuckDBStore
from tests.store.contract import assistant, user

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def untimed_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups end when nobody waits, never because a slow machine let one grow old."""
    monkeypatch.setattr(shared_module, "MAX_GROUP_SECONDS", 3600.0)
    monkeypatch.setattr(shared_module, "SETTLE_AFTER", 10.0)


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DuckDBStore]:
    s = DuckDBStore(tmp_path / "g.duckdb" if request.param == "file" else ":memory:")
    yield s
    s.close()


class Counting:
    """Counts the calls of one of the connection's hooks, then calls the original."""

    def __init__(self, store: DuckDBStore, hook: str) -> None:
        self.calls = 0
        self._shared = store._shared
        self._hook = hook
        self._original = getattr(store._shared, hook)
        setattr(store._shared, hook, self)

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self._original(*args)


def queued(store: DuckDBStore, calls: list[Callable[[], Any]]) -> list[Any]:
    """Run each call on its own thread, all queued behind the connection's lock before
    any may start: their operations meet in one group. Returns results or exceptions."""
    store.count_messages(store.create_thread().thread_id)  # connected: the group is all
    shared = store._shared
    results: list[Any] = [None] * len(calls)

    def work(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # handed to the test
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    with shared.lock:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while shared._wanting < len(calls):
            assert time.monotonic() < deadline, "the threads never queued for the store"
            time.sleep(0.001)
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    return results


# ---------------------------------------------------------------------- grouping


def test_queued_writers_share_one_commit_and_keep_every_write(store: DuckDBStore) -> None:
    threads = [store.create_thread() for _ in range(8)]
    runs = [store.create_run(t.thread_id, model="m") for t in threads]
    flushes = Counting(store, "_before_commit")

    def step(i: int) -> Callable[[], Any]:
        def call() -> Any:
            if i % 2:
                return store.update_run(runs[i].run_id, status="running", owner=f"o{i}",
                                        started=True)
            return store.add_messages(threads[i].thread_id, [user(f"u{i}"), assistant(f"a{i}")])
        return call

    results = queued(store, [step(i) for i in range(8)])
    assert flushes.calls == 1, "one group, one flush"
    for i, result in enumerate(results):
        assert not isinstance(result, BaseException), result
        if i % 2:
            assert store.get_run(runs[i].run_id) == result
            assert (result.status, result.owner) == ("running", f"o{i}")
        else:
            assert store.get_messages(threads[i].thread_id) == result
            assert [m.seq for m in result] == [1, 2]


def test_many_threads_appending_keep_gapless_seqs_and_their_own_order(
        store: DuckDBStore) -> None:
    thread = store.create_thread()
    other = store.create_thread()
    errors: list[BaseException] = []

    def append(worker: int) -> None:
        try:
            for i in range(20):
                target = thread if i % 3 else other
                store.add_messages(target.thread_id, [user(f"{worker}-{i}")])
                if i % 5 == 0:
                    run = store.create_run(target.thread_id, model="m")
                    store.update_run(run.run_id, status="completed", finished=True)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=append, args=(w,)) for w in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    for target in (thread, other):
        stored = store.get_messages(target.thread_id)
        assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
        for worker in range(8):  # each writer's messages in the order it wrote them
            mine = [int(m.content["content"].split("-")[1]) for m in stored
                    if m.content["content"].startswith(f"{worker}-")]
            assert mine == sorted(mine)
    assert len(store.get_messages(thread.thread_id)) + len(
        store.get_messages(other.thread_id)) == 8 * 20
    assert all(r.status == "completed" for r in store.list_runs())
    assert len(store.list_runs()) == 8 * 4


def test_a_caller_is_answered_only_once_its_group_is_committed(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "d.duckdb")
    thread = store.create_thread()
    seen: list[int] = []
    shared = store._shared
    original = shared._on_commit

    def on_commit() -> None:
        # Committed: whatever a caller was answered must be in the table by now.
        seen.append(len(duckdb_rows(shared, thread.thread_id)))
        original()

    shared._on_commit = on_commit
    results = queued(store, [lambda i=i: store.add_messages(thread.thread_id, [user(str(i))])
                             for i in range(6)])
    assert all(isinstance(r, list) for r in results)
    assert seen and seen[-1] == 6
    store.close()


def duckdb_rows(shared: Any, thread_id: str) -> list[Any]:
    con = shared._con
    rows: list[Any] = con.execute("SELECT seq FROM messages WHERE thread_id = ?",
                                  [thread_id]).fetchall()
    return rows


# ---------------------------------------------------------------------- errors


def test_an_error_reaches_only_its_caller_and_the_rest_run_again(store: DuckDBStore) -> None:
    thread = store.create_thread()
    run = store.create_run(thread.thread_id, model="m")
    aborts = Counting(store, "_on_abort")
    calls: list[Callable[[], Any]] = [
        lambda: store.add_messages(thread.thread_id, [user("a")]),
        lambda: store.update_run(run.run_id, status="exploded"),  # the CHECK refuses it
        lambda: store.add_messages(thread.thread_id, [user("b")]),
        lambda: store.update_run(run.run_id, owner="me"),
        lambda: store.create_run(thread.thread_id, model="m2"),
    ]
    results = queued(store, calls)
    assert isinstance(results[1], StoreError) and "status" in str(results[1])
    for i in (0, 2, 3, 4):
        assert not isinstance(results[i], BaseException), results[i]
    assert aborts.calls >= 1
    stored = store.get_messages(thread.thread_id)
    assert sorted(m.content["content"] for m in stored) == ["a", "b"]
    assert [m.seq for m in stored] == [1, 2]
    assert {m.message_id for m in stored} == {results[0][0].message_id,
                                              results[2][0].message_id}
    assert store.get_run(run.run_id).owner == "me"
    assert store.get_run(run.run_id).status == "queued"
    assert store.get_run(results[4].run_id) == results[4]


def test_a_not_found_does_not_roll_the_group_back(store: DuckDBStore) -> None:
    thread = store.create_thread()
    aborts = Counting(store, "_on_abort")
    results = queued(store, [
        lambda: store.add_messages(thread.thread_id, [user("a")]),
        lambda: store.get_thread("nope"),
        lambda: store.update_run("nope", status="running"),
        lambda: store.add_messages(thread.thread_id, [user("b")]),
    ])
    assert isinstance(results[1], NotFound) and isinstance(results[2], NotFound)
    assert aborts.calls == 0
    assert len(store.get_messages(thread.thread_id)) == 2


def test_a_failed_flush_runs_each_member_alone_so_the_error_finds_its_owner(
        store: DuckDBStore, monkeypatch: pytest.MonkeyPatch) -> None:
    thread = store.create_thread()
    real = duckdb_store._insert_runs

    def insert_runs(con: duckdb.DuckDBPyConnection, rows: list[Any]) -> None:
        if any(row[3] == "boom" for row in rows):
            raise duckdb.ConstraintException("simulated: the database refused a run")
        real(con, rows)

    monkeypatch.setattr(duckdb_store, "_insert_runs", insert_runs)
    flushes = Counting(store, "_before_commit")
    results = queued(store, [
        lambda: store.create_run(thread.thread_id, model="ok1"),
        lambda: store.create_run(thread.thread_id, model="boom"),
        lambda: store.add_messages(thread.thread_id, [user("kept")]),
        lambda: store.create_run(thread.thread_id, model="ok2"),
    ])
    assert isinstance(results[1], StoreError) and "simulated" in str(results[1])
    assert flushes.calls > 1, "the group's flush failed, then each member ran alone"
    assert sorted(r.model for r in store.list_runs()) == ["ok1", "ok2"]
    assert [m.content["content"] for m in store.get_messages(thread.thread_id)] == ["kept"]
    assert store.get_run(results[0].run_id) == results[0]


def test_a_stale_head_inside_a_group_is_probed_again_not_duplicated(tmp_path: Path) -> None:
    path = tmp_path / "stale.duckdb"
    store = DuckDBStore(path)
    thread = store.create_thread()
    store.add_messages(thread.thread_id, [user("a"), user("b")])
    store.close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO messages (message_id, thread_id, seq, type, content, "
                "is_llm_message, created_at) VALUES ('x', ?, 3, 'user', '{}', true, now())",
                [thread.thread_id])
    con.close()
    store = DuckDBStore(path)
    # Load the head from the thread row, then make it lag as a lost write-back would.
    assert store.count_messages(thread.thread_id) == 3
    store._heads[thread.thread_id].seq = 2
    results = queued(store, [lambda i=i: store.add_messages(thread.thread_id, [user(f"n{i}")])
                             for i in range(3)])
    assert all(isinstance(r, list) for r in results), results
    assert [m.seq for m in store.get_messages(thread.thread_id)] == [1, 2, 3, 4, 5, 6]
    store.close()


def test_readers_never_see_writes_that_were_rolled_back(store: DuckDBStore) -> None:
    for _ in range(5):
        thread = store.create_thread()
        run = store.create_run(thread.thread_id, model="m")
        results = queued(store, [
            lambda t=thread: store.add_messages(t.thread_id, [user("a")]),
            lambda t=thread: store.get_messages(t.thread_id),
            lambda r=run: store.list_runs(thread_id=r.thread_id, statuses=["running"]),
            lambda r=run: store.update_run(r.run_id, status="running", started=True),
            lambda r=run: store.update_run(r.run_id, status="exploded"),
        ])
        assert isinstance(results[4], StoreError)
        stored = store.get_messages(thread.thread_id)
        # What a reader got is what is stored: same ids and the same timestamps (a
        # write run again gets a new one), never a row that was rolled back.
        read: list[Message] = results[1]
        assert read in ([], stored), (read, stored)
        listed = results[2]
        assert listed in ([], [store.get_run(run.run_id)])
        assert store.get_run(run.run_id) == results[3]


# ---------------------------------------------------------------------- caches


def test_cached_message_tails_answer_as_the_table_does(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "t.duckdb", linger=0.01)
    thread = store.create_thread()  # created here: its messages are cached as they come
    batch = [NewMessage("status", {"text": str(i)}, is_llm_message=False) if i % 4 == 0
             else user(str(i)) for i in range(1, 151)]
    for i in range(0, 150, 7):
        store.add_messages(thread.thread_id, batch[i:i + 7])
    queries = [(last, after, llm) for last in (None, 0, 1, 5, 63, 64, 65, 200)
               for after in (None, 0, 10, 86, 100, 149, 150) for llm in (False, True)]
    cached = {q: store.get_messages(thread.thread_id, last=q[0], after_seq=q[1], llm_only=q[2])
              for q in queries}
    wait_released(store)  # a new tenure: nothing cached, every answer from the table
    for (last, after, llm), messages in cached.items():
        assert store.get_messages(thread.thread_id, last=last, after_seq=after,
                                  llm_only=llm) == messages, (last, after, llm)
    store.close()


def test_runs_and_threads_written_by_another_process_are_seen_after_a_release(
        tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    store = DuckDBStore(path, linger=0.01)
    thread = store.create_thread(name="before")
    run = store.create_run(thread.thread_id, model="m")
    assert store.list_runs(statuses=["queued", "running"]) == [run]  # cached now
    assert store.get_thread(thread.thread_id).name == "before"
    wait_released(store)
    code = ("import sys\n"
            "from kortix_lab.store import DuckDBStore\n"
            "s = DuckDBStore(sys.argv[1], lock_timeout=30)\n"
            "s.update_run(sys.argv[2], status='completed', finished=True)\n"
            "s.rename_thread(sys.argv[3], 'after')\n"
            "s.close()\n")
    result = subprocess.run([sys.executable, "-c", code, str(path), run.run_id,
                             thread.thread_id], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert store.list_runs(statuses=["queued", "running"]) == []
    assert store.get_run(run.run_id).status == "completed"
    assert store.get_thread(thread.thread_id).name == "after"
    store.close()


def test_the_active_runs_index_follows_every_change(store: DuckDBStore) -> None:
    a, b = store.create_thread(), store.create_thread()
    r1 = store.create_run(a.thread_id, model="m")
    assert store.list_runs(statuses=["queued"]) == [r1]  # loads the index
    r2 = store.create_run(b.thread_id, model="m", status="running")
    r3 = store.create_run(a.thread_id, model="m", status="completed")
    r1 = store.update_run(r1.run_id, status="running", started=True)
    assert store.list_runs(statuses=["queued", "running"]) == [r1, r2]
    assert store.list_runs(thread_id=a.thread_id, statuses=["running"]) == [r1]
    assert store.list_runs(statuses=["completed"]) == [r3]
    store.update_run(r2.run_id, status="stopped", finished=True)
    assert store.list_runs(statuses=["queued", "running"]) == [r1]
    store.delete_thread(a.thread_id)
    assert store.list_runs(statuses=["queued", "running"]) == []
    with pytest.raises(NotFound):
        store.get_run(r1.run_id)


def wait_released(store: DuckDBStore) -> None:
    deadline = time.monotonic() + 10
    while store.holds_lock:
        assert time.monotonic() < deadline, "the store never released its lock"
        time.sleep(0.01)


# ---------------------------------------------------------------------- begin_run


# The contract (tests/store/contract.py) covers begin_run on every store; here, what
# group commit adds: starts queued together share a group and still create one run.


def test_concurrent_begin_runs_on_one_thread_create_exactly_one_run(
        store: DuckDBStore) -> None:
    thread = store.create_thread()
    results = queued(store, [lambda i=i: store.begin_run(thread.thread_id, model="m",
                                                        message=user(str(i)))
                             for i in range(6)])
    started = [r for r in results if r.run is not None]
    assert len(started) == 1
    assert all(r.busy == [started[0].run] for r in results if r.run is None)
    assert store.list_runs() == [started[0].run]
    assert [m.message_id for m in store.get_messages(thread.thread_id)] == [
        started[0].message.message_id]
