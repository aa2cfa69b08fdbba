"""``kortix-lab worker`` and ``kortix-lab db migrate``: the shared deployment's commands.

Both read the deployment from the environment (``KORTIX_LAB_DATABASE_URL``,
``KORTIX_LAB_REDIS_URL``, see ``config.SharedSettings``); ``db migrate`` also
takes the URL as an option. Nothing here imports Redis, Dramatiq or psycopg
until the command runs.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..argtypes import non_negative_seconds, positive_int


def add_shared_parsers(sub: Any) -> None:
    worker = sub.add_parser(
        "worker", help="execute queued runs (shared deployment: Dramatiq on Redis)",
        description="Start Dramatiq worker processes that execute the runs servers queue. "
                    "Needs KORTIX_LAB_DATABASE_URL and KORTIX_LAB_REDIS_URL. SIGTERM lets runs "
                    "in hand finish for --grace seconds, then stops the rest with a reason.")
    worker.add_argument("--processes", type=positive_int, default=os.cpu_count() or 1,
                        metavar="N", help="worker processes (default: one per CPU)")
    worker.add_argument("--threads", type=positive_int, default=8, metavar="M",
                        help="runs each process executes at once (default: 8)")
    worker.add_argument("--grace", type=non_negative_seconds, default=30.0, metavar="SECONDS",
                        help="on SIGTERM, how long runs in hand may go on (default: 30)")
    db = sub.add_parser("db", help="the shared deployment's database")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    migrate = db_sub.add_parser(
        "migrate", help="create or update the schema (idempotent; Supabase too)")
    migrate.add_argument("--database-url", metavar="URL",
                         help="postgresql:// URL (default: $KORTIX_LAB_DATABASE_URL)")


def shared_command(args: argparse.Namespace) -> int:
    from ..agentpress.errors import ConfigError

    if args.command == "worker":
        from .worker import run_worker

        return run_worker(processes=args.processes, threads=args.threads, grace_s=args.grace)
    url = args.database_url or os.environ.get("KORTIX_LAB_DATABASE_URL")
    if not url:
        raise ConfigError("kortix-lab db migrate needs --database-url or "
                          "$KORTIX_LAB_DATABASE_URL (a postgresql:// URL)")
    from ..store.pg_migrations import db_migrate

    return db_migrate(url)
