"""The Postgres store: the Store contract unchanged, plus accounts, RLS, processes, reconnects.

Each test's store works in a fresh account of this session's own database, so
it starts empty (the account scoping is itself under test here).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from kortix_lab.agentpress.errors import ConfigError, StoreError
from kortix_lab.agentpress.store import AgentConfig, NewMessage, RunStart, Store
from kortix_lab.store import PostgresStore, open_store
from tests.store.contract import StoreContract, user
from tests.support.services import free_port, new_account

ROOT = Path(__file__).resolve().parents[2]


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(self, pg_database: str) -> Iterator[Store]:
        s = PostgresStore(pg_database, account_id=new_account())
        yield s
        s.close()


@pytest.fixture
def store(pg_database: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_database, account_id=new_account())
    yield s
    s.close()


# ---------------------------------------------------------------------- opening


def test_open_store_gives_a_postgres_store_that_connects_on_first_use() -> None:
    port = free_port()  # nothing listens here
    for scheme in ("postgresql", "postgres"):
        url = f"{scheme}://kortix:s3cret-pw@127.0.0.1:{port}/nowhere"
        store = open_store(url, account_id="acct-x")
        assert isinstance(store, PostgresStore) and store.account_id == "acct-x"
        with pytest.raises(StoreError) as err:
            store.list_threads()
        assert f"127.0.0.1:{port}/nowhere" in str(err.value)
        assert "s3cret-pw" not in str(err.value) and "s3cret-pw" not in repr(store)
        store.close()


def test_the_account_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KORTIX_LAB_ACCOUNT_ID", "acct-env")
    assert PostgresStore("postgresql://h/db").account_id == "acct-env"
    monkeypatch.delenv("KORTIX_LAB_ACCOUNT_ID")
    assert PostgresStore("postgresql://h/db").account_id == "local"
    with pytest.raises(ConfigError):
        PostgresStore("postgresql://h/db", max_size=0)


def test_a_closed_store_refuses_work(store: PostgresStore) -> None:
    store.create_thread()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_threads()


def test_importing_kortix_lab_does_not_import_the_shared_drivers() -> None:
    code = ("import sys, kortix_lab, kortix_lab.store, kortix_lab.shared, kortix_lab.runs.lease, "
            "kortix_lab.runs.control, kortix_lab.runs.registry, kortix_lab.store.pg_migrations; "
            "print(sorted(m for m in ('psycopg', 'psycopg_pool', 'redis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


# ---------------------------------------------------------------------- accounts


def test_accounts_never_see_each_other(pg_database: str) -> None:
    a = PostgresStore(pg_database, account_id=new_account())
    b = PostgresStore(pg_database, account_id=new_account())
    try:
        project = a.create_project("p")
        thread = a.create_thread(name="shared-name", project_id=project.project_id)
        message = a.add_messages(thread.thread_id, [user("secret")])[0]
        run = a.create_run(thread.thread_id, model="m")
        agent = a.create_agent(AgentConfig(name="agent"))
        b.create_thread(name="shared-name")

        assert b.list_projects() == [] and b.list_runs() == [] and b.list_agents() == []
        assert [t.name for t in b.list_threads()] == ["shared-name"]
        found = b.find_thread("shared-name")
        assert found is not None and found.thread_id != thread.thread_id
        assert b.find_thread(thread.thread_id) is None and b.find_agent("agent") is None
        for call in (lambda: b.get_thread(thread.thread_id),
                     lambda: b.get_message(message.message_id),
                     lambda: b.get_run(run.run_id),
                     lambda: b.get_agent(agent.agent_id),
                     lambda: b.add_messages(thread.thread_id, [user("intrude")]),
                     lambda: b.update_run(run.run_id, status="failed"),
                     lambda: b.rename_thread(thread.thread_id, "x"),
                     lambda: b.delete_thread(thread.thread_id),
                     lambda: b.delete_agent(agent.agent_id),
                     lambda: b.create_thread(project_id=project.project_id)):
            with pytest.raises(Exception, match="no "):
                call()
        assert len(b.threads_frame()) == 1 and len(b.runs_frame()) == 0
        assert a.get_run(run.run_id).status == "queued"
        assert a.count_messages(thread.thread_id) == 1
    finally:
        a.close()
        b.close()


def _probe_role(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    """A role subject to RLS, made inside the caller's transaction (rolled back after)."""
    role = f"kortix_probe_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} NOLOGIN NOBYPASSRLS")
    conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
    conn.execute(f"SET LOCAL ROLE {role}")
    return role


def _visible_threads(conn: psycopg.Connection[tuple[object, ...]]) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT thread_id FROM threads").fetchall()}


def test_row_level_security_scopes_rows_to_the_session_account(pg_database: str) -> None:
    accounts = new_account(), new_account()
    threads: dict[str, set[str]] = {}
    for account in accounts:
        s = PostgresStore(pg_database, account_id=account)
        t = s.create_thread(name=account)
        s.add_messages(t.thread_id, [user("hi")])
        s.create_run(t.thread_id, model="m")
        threads[account] = {t.thread_id}
        s.close()
    a, b = accounts
    with psycopg.connect(pg_database) as conn:  # one transaction, rolled back at the end
        _probe_role(conn)
        assert _visible_threads(conn) == set(), "no account set: nothing is visible"
        for me, other in ((a, b), (b, a)):
            conn.execute("SELECT set_config('kortix.account_id', %s, true)", [me])
            assert _visible_threads(conn) == threads[me]
            for table in ("messages", "agent_runs"):
                rows = conn.execute(f"SELECT DISTINCT account_id FROM {table}").fetchall()
                assert rows == [(me,)], table
            assert conn.execute("UPDATE threads SET name = 'x' WHERE account_id = %s",
                                [other]).rowcount == 0
        # Writing a row into another account is refused.
        conn.execute("SAVEPOINT before_insert")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("INSERT INTO threads (thread_id, account_id, created_at, updated_at) "
                         "VALUES ('t-x', %s, now(), now())", [a])
        conn.execute("ROLLBACK TO SAVEPOINT before_insert")
        # An insert without account_id lands in the session's account.
        conn.execute("INSERT INTO threads (thread_id, created_at, updated_at) "
                     "VALUES ('t-default', now(), now())")
        assert "t-default" in _visible_threads(conn)
        conn.rollback()


def test_a_supabase_jwt_claim_wins_over_the_session_variable(pg_database: str) -> None:
    a, b = new_account(), new_account()
    for account in (a, b):
        s = PostgresStore(pg_database, account_id=account)
        s.create_thread(name=account)
        s.close()
    with psycopg.connect(pg_database) as conn:
        _probe_role(conn)
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)",
                     [f'{{"sub": "{a}", "role": "authenticated"}}'])
        conn.execute("SELECT set_config('kortix.account_id', %s, true)", [b])
        names = {r[0] for r in conn.execute("SELECT name FROM threads").fetchall()}
        assert names == {a}
        conn.rollback()


# ---------------------------------------------------------------------- processes, reconnects


APPENDER = textwrap.dedent("""
    import sys
    from kortix_lab.agentpress.store import NewMessage
    from kortix_lab.store import open_store

    url, account, thread_id, name = sys.argv[1:]
    store = open_store(url, account_id=account)
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(25):
        store.add_messages(thread_id, [NewMessage("user", {"content": f"{name}{i}"})])
    store.close()
""")


def test_appends_from_two_processes_keep_seqs_gapless(store: PostgresStore) -> None:
    thread = store.create_thread()
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, store.url, store.account_id,
                               thread.thread_id, name], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for name in "ab"]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        assert p.wait(timeout=120) == 0
    messages = store.get_messages(thread.thread_id)
    assert [m.seq for m in messages] == list(range(1, 51))
    for name in "ab":
        texts = [m.content["content"] for m in messages if m.content["content"][0] == name]
        assert texts == [f"{name}{i}" for i in range(25)]


def test_starts_from_two_servers_on_one_thread_create_one_run(pg_database: str) -> None:
    """``begin_run`` checks and creates under the thread's row lock. To make every start
    overlap, another connection holds that lock until all of them wait on it (a check
    done without the lock would pass for all, and each would create a run)."""
    account = new_account()
    servers = [PostgresStore(pg_database, account_id=account, min_size=4, max_size=4)
               for _ in range(2)]
    try:
        thread = servers[0].create_thread()
        results: list[object] = [None] * 8

        def start(i: int) -> None:
            try:
                results[i] = servers[i % 2].begin_run(thread.thread_id, model="m",
                                                      owner=f"host:{i}:1", message=user(str(i)))
            except BaseException as exc:  # surfaced by the assertions below
                results[i] = exc

        workers = [threading.Thread(target=start, args=(i,)) for i in range(8)]
        with psycopg.connect(pg_database) as holder:
            holder.execute("SELECT 1 FROM threads WHERE thread_id = %s FOR UPDATE",
                           [thread.thread_id])
            for w in workers:
                w.start()
            with psycopg.connect(pg_database, autocommit=True) as watch:
                deadline = time.monotonic() + 20
                while True:
                    row = watch.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND wait_event_type = 'Lock'").fetchone()
                    if row is not None and row[0] >= len(workers):
                        break
                    assert time.monotonic() < deadline, "the starts never met the row lock"
                    time.sleep(0.01)
            holder.rollback()
        for w in workers:
            w.join(30)
        starts = [r for r in results if isinstance(r, RunStart)]
        assert len(starts) == 8, results
        made = [r.run for r in starts if r.run is not None]
        assert len(made) == 1
        assert all(r.busy == made for r in starts if r.run is None)
        assert servers[1].list_runs(thread_id=thread.thread_id) == made
        assert [m.run_id for m in servers[1].get_messages(thread.thread_id)] == [made[0].run_id]
    finally:
        for s in servers:
            s.close()


def test_connections_killed_by_the_server_cost_a_reconnect_not_an_error(
        store: PostgresStore, pg_admin_url: str) -> None:
    """What a Postgres restart does to the pool: every connection dies at once."""
    thread = store.create_thread()
    store.add_messages(thread.thread_id, [user("before")])
    dbname = store.url.rsplit("/", 1)[1]
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE datname = %s AND pid <> pg_backend_pid()",
                               [dbname]).fetchone()
    assert killed is not None and killed[0] >= 1
    store.add_messages(thread.thread_id, [user("after")])
    assert [m.content["content"] for m in store.get_messages(thread.thread_id)] == [
        "before", "after"]


def test_a_message_the_database_cannot_hold_is_refused_whole(store: PostgresStore) -> None:
    """jsonb has no NUL character: the batch is refused with a reason, nothing half-stored."""
    thread = store.create_thread()
    with pytest.raises(StoreError, match="none was stored"):
        store.add_messages(thread.thread_id, [user("fine"), NewMessage(
            "tool", {"role": "tool", "content": "binary\x00output"})])
    assert store.count_messages(thread.thread_id) == 0
    assert [m.seq for m in store.add_messages(thread.thread_id, [user("next")])] == [1]
