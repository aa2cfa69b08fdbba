"""`make shared-demo` end to end: real Redis, Postgres, two `kortix-lab worker` commands and a
Jupyter server in shared mode, twelve runs through the REST API; then nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_shared_demo_runs_everything_on_both_workers_and_cleans_up(
        tmp_path: Path, redis_url: str, pg_admin_url: str) -> None:
    import psycopg
    import redis

    summary_path = tmp_path / "summary.json"
    env = {**os.environ, "KORTIX_LAB_TEST_REDIS_URL": redis_url,
           "KORTIX_LAB_TEST_DATABASE_URL": pg_admin_url}
    result = subprocess.run(
        [sys.executable, "-m", "kortix_lab.shared.demo", "--json", str(summary_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=140, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out

    # What it printed: every run completed, and both workers executed some.
    assert "runs       12 completed (of 12)" in out, out
    assert "OK: all runs completed, on both workers" in out, out
    summary = json.loads(summary_path.read_text())
    assert summary["front"] == "server"
    assert summary["statuses"] == {"completed": 12}
    assert set(summary["workers"]) == {"worker-1", "worker-2"}, summary["workers"]
    assert all(n >= 1 for n in summary["workers"].values())
    assert sum(summary["workers"].values()) == 12
    # run_started, the deltas of the slow scenario, assistant_message, run_finished.
    assert all(r["events"] >= 4 for r in summary["runs_detail"])
    assert summary["events"] == sum(r["events"] for r in summary["runs_detail"])

    # Nothing left: processes stopped, database dropped, keys deleted.
    assert not [pid for pid in summary["pids"] if _alive(pid)]
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            [summary["database"]]).fetchone() is None
    client = redis.Redis.from_url(redis_url)
    try:
        assert not list(client.scan_iter(match=f"{summary['prefix']}*", count=1000))
    finally:
        client.close()
    assert "database " + summary["database"] + " dropped" in out
