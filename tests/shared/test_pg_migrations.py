"""Postgres migrations: apply on an empty database, idempotent, RLS in place, `db migrate`."""

from __future__ import annotations

import io

import psycopg
import pytest

from kortix_lab.agentpress.errors import StoreError
from kortix_lab.store import PostgresStore
from kortix_lab.store.pg_migrations import (
    MIGRATIONS_TABLE,
    applied_migrations,
    db_migrate,
    migrate,
    migration_files,
)
from tests.support.services import free_port, with_user

TABLES = {"projects", "threads", "messages", "agent_runs", "agents", "agent_versions"}


def test_migrations_apply_on_an_empty_database_then_are_a_no_op(fresh_database: str) -> None:
    names = [name for name, _ in migration_files()]
    assert names == sorted(names) and names[:2] == ["0001_initial", "0002_row_level_security"]
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        assert migrate(conn) == names
        assert migrate(conn) == []
        assert applied_migrations(conn) == names
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}
        assert tables == TABLES | {MIGRATIONS_TABLE}


def test_every_sql_file_is_idempotent_by_itself(fresh_database: str) -> None:
    """Supabase users may paste a file into the SQL editor twice: no error, same schema."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        migrate(conn)
        before = _schema(conn)
        for _, sql in migration_files():
            conn.execute(sql.encode())
            conn.execute(sql.encode())
        assert _schema(conn) == before


def _schema(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[object, ...]]:
    columns = conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' "
        "ORDER BY table_name, ordinal_position").fetchall()
    policies = conn.execute("SELECT tablename, policyname, qual, with_check FROM pg_policies "
                            "ORDER BY tablename, policyname").fetchall()
    indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes "
                           "WHERE schemaname = 'public' ORDER BY indexname").fetchall()
    return [*columns, *policies, *indexes]


def test_every_table_has_row_level_security_and_an_account_policy(fresh_database: str) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        migrate(conn)
        rls = dict(conn.execute(
            "SELECT relname, relrowsecurity FROM pg_class WHERE relname = ANY(%s)",
            [sorted(TABLES)]).fetchall())
        assert rls == dict.fromkeys(TABLES, True)
        policies = conn.execute("SELECT tablename, qual, with_check FROM pg_policies "
                                "WHERE policyname = 'kortix_account_isolation'").fetchall()
        assert {p[0] for p in policies} == TABLES
        for _, qual, check in policies:
            assert "kortix_current_account()" in str(qual)
            assert "kortix_current_account()" in str(check)


def test_a_database_from_a_newer_version_is_refused(fresh_database: str) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        migrate(conn)
        conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES ('9999_future', now())")
        with pytest.raises(StoreError, match="newer kortix_lab"):
            migrate(conn)


def test_the_store_migrates_on_first_use_unless_told_not_to(fresh_database: str) -> None:
    strict = PostgresStore(fresh_database, auto_migrate=False)
    with pytest.raises(StoreError, match="kortix-lab db migrate"):
        strict.list_threads()
    strict.close()
    store = PostgresStore(fresh_database)
    assert store.list_threads() == []
    store.close()
    strict = PostgresStore(fresh_database, auto_migrate=False)
    assert strict.list_threads() == []
    strict.close()


def test_a_store_refuses_the_migration_without_ddl_rights_with_a_clear_error(
        fresh_database: str) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    role = "kortix_noddl_" + fresh_database.rsplit("_", 1)[1]
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        store = PostgresStore(with_user(fresh_database, role))
        with pytest.raises(StoreError, match="cannot open the store"):
            store.list_threads()
        store.close()
    finally:
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_db_migrate_reports_and_exits_zero_then_finds_nothing_to_do(fresh_database: str) -> None:
    out = io.StringIO()
    assert db_migrate(fresh_database, out=out) == 0
    assert "applied 0001_initial" in out.getvalue()
    assert "2 migration(s) applied" in out.getvalue()
    again = io.StringIO()
    assert db_migrate(fresh_database, out=again) == 0
    assert "applied 0001" not in again.getvalue()
    assert "0 migration(s) applied" in again.getvalue()


def test_db_migrate_fails_cleanly_and_never_prints_the_password() -> None:
    out = io.StringIO()
    url = f"postgresql://u:hunter2-secret@127.0.0.1:{free_port()}/db"
    assert db_migrate(url, out=out) == 1
    assert "failed" in out.getvalue() and "hunter2-secret" not in out.getvalue()


def test_the_db_migrate_command_takes_the_url_from_the_option_or_the_environment(
        fresh_database: str) -> None:
    """``kortix-lab db migrate`` as a user types it: the command, not the function."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "KORTIX_LAB_DATABASE_URL"}
    command = [sys.executable, "-m", "kortix_lab.cli", "db", "migrate"]
    missing = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "KORTIX_LAB_DATABASE_URL" in missing.stderr
    first = subprocess.run([*command, "--database-url", fresh_database], env=env,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and "applied 0001_initial" in first.stdout
    again = subprocess.run(command, env={**env, "KORTIX_LAB_DATABASE_URL": fresh_database},
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 migration(s) applied" in again.stdout


def test_the_worker_command_explains_what_it_needs() -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("KORTIX_LAB_DATABASE_URL", "KORTIX_LAB_REDIS_URL")}
    command = [sys.executable, "-m", "kortix_lab.cli", "worker"]
    bad = subprocess.run([*command, "--processes", "0"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "must be at least 1" in bad.stderr
    unset = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert unset.returncode == 1
    assert "KORTIX_LAB_DATABASE_URL and KORTIX_LAB_REDIS_URL" in unset.stderr
