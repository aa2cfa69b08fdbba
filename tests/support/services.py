"""Real Redis and Postgres for tests, from ``scripts/services.sh``; never skipped.

``KORTIX_LAB_TEST_REDIS_URL`` and ``KORTIX_LAB_TEST_DATABASE_URL`` name the
servers (``make test`` exports them). A missing or unreachable service fails
the test with the command to run: a skipped test would hide a broken
deployment.

Isolation, so parallel runs and the machine's other users never collide:

* Postgres: each test session creates its own database (``kortix_test_…``)
  and drops it afterwards; each store test then works in a fresh account, so
  it starts from an empty store. Databases left by a crashed session are
  dropped by a later one after six hours.
* Redis: each test gets a unique key prefix; its keys are deleted afterwards.
  Tests that flush or restart Redis get a private ``redis-server`` of their own.
* Tests that restart Postgres get a private server of their own too
  (``private_postgres``: ``initdb`` + ``pg_ctl`` on a free port, as
  ``scripts/services.sh`` starts its throwaway server).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REDIS_ENV = "KORTIX_LAB_TEST_REDIS_URL"
DATABASE_ENV = "KORTIX_LAB_TEST_DATABASE_URL"
HINT = ('start the services first: eval "$(bash scripts/services.sh start)" '
        "(make test does this)")
STALE_DATABASE_S = 6 * 3600


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: {HINT}", pytrace=False)
    return value


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def with_user(url: str, user: str) -> str:
    """``url`` connecting as another role (no password: the test server trusts loopback)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


# ---------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = _required_env(REDIS_ENV)
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {url} does not answer ({exc}): {HINT}", pytrace=False)
    finally:
        client.close()
    return url


def new_prefix() -> str:
    return f"kortix-test:{uuid.uuid4().hex[:12]}:"


def delete_prefix(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix``."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test (or user) has; its keys are deleted afterwards."""
    prefix = new_prefix()
    yield prefix
    delete_prefix(redis_url, prefix)


@dataclass
class PrivateRedis:
    """A redis-server of this test's own, which it may flush, stop and restart."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(f"redis-server is not installed: run bash scripts/ensure-services.sh; "
                        f"{HINT}", pytrace=False)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(port=free_port(), folder=tmp_path)
    server.start()
    yield server
    server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"redis-server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"redis-server did not listen on port {port} within 30 s")


# ---------------------------------------------------------------------- Postgres


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """A role on the test server that may create databases and roles."""
    import psycopg

    url = _required_env(DATABASE_ENV)
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT rolsuper OR (rolcreatedb AND rolcreaterole) "
                               "FROM pg_roles WHERE rolname = current_user").fetchone()
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL at {url} does not answer ({exc}): {HINT}", pytrace=False)
    if not row or not row[0]:
        pytest.fail(f"the role in {DATABASE_ENV} may not create databases and roles: {HINT}",
                    pytrace=False)
    return url


def create_database(admin_url: str) -> str:
    """A new, empty database; returns its URL."""
    import psycopg

    name = f"kortix_test_{int(time.time())}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _drop_stale_databases(admin_url: str) -> None:
    import psycopg

    cutoff = time.time() - STALE_DATABASE_S
    with psycopg.connect(admin_url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'kortix\\_test\\_%'").fetchall()]
        for name in names:
            try:
                created = int(name.split("_")[2])
            except (IndexError, ValueError):
                continue
            if created < cutoff:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database(pg_admin_url: str) -> Iterator[str]:
    """This test session's own database, migrated by the first store that opens it."""
    _drop_stale_databases(pg_admin_url)
    url = create_database(pg_admin_url)
    yield url
    drop_database(pg_admin_url, url)


@pytest.fixture
def fresh_database(pg_admin_url: str) -> Iterator[str]:
    """A database of this test's own, empty (not even migrated)."""
    url = create_database(pg_admin_url)
    yield url
    drop_database(pg_admin_url, url)


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


def pg_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are (as ``scripts/services.sh`` looks for them)."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                               check=False).stdout.strip()
        if found:
            candidates.append(Path(found))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    candidates.append(Path("/usr/local/bin"))
    if (initdb := shutil.which("initdb")) is not None:
        candidates.append(Path(initdb).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    pytest.fail(f"no Postgres server binaries (initdb, pg_ctl) found: run "
                f"bash scripts/ensure-services.sh; {HINT}", pytrace=False)


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of this test's own (``initdb`` in a temporary folder, trust
    auth on loopback), which it may stop and restart; its data survive a restart.

    As root, the server runs as the ``postgres`` user (``initdb`` refuses root), so
    the folder lives outside pytest's private ``tmp_path``."""

    port: int
    folder: Path
    bindir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.folder / "pg" / "data"

    @property
    def log(self) -> Path:
        return self.folder / "pg" / "server.log"

    def _as_owner(self, *argv: str | Path, timeout: float = 120) -> None:
        cmd = [str(a) for a in argv]
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.fail("running as root without runuser: cannot start Postgres as "
                            "the postgres user", pytrace=False)
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if done.returncode != 0:
            server_log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() \
                else ""
            pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}"
                        f"\n{server_log}", pytrace=False)

    def init(self) -> None:
        (self.folder / "pg").mkdir(parents=True)
        if os.geteuid() == 0:
            import pwd

            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("no 'postgres' user to run initdb as (install the postgresql "
                            f"package); {HINT}", pytrace=False)
            self.folder.chmod(0o755)
            os.chown(self.folder / "pg", entry.pw_uid, entry.pw_gid)
        self._as_owner(self.bindir / "initdb", "-D", self.data, "-U", "postgres", "-A",
                       "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder / 'pg'} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c full_page_writes=off -c synchronous_commit=off")
        self._as_owner(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-w",
                       "-t", "60", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions are cut, as in a restart)."""
        self._as_owner(self.bindir / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60",
                       "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A Postgres server of this test's own; removed afterwards."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="kortix-test-pg-"))
    server = PrivatePostgres(port=free_port(), folder=folder, bindir=pg_bindir())
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running():
            with contextlib.suppress(BaseException):
                server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
