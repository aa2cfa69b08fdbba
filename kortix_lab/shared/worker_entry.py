"""What each Dramatiq worker process imports: the broker, the run actor and the host.

Dramatiq (``kortix-lab worker``) imports this module in every worker process;
the settings come from the environment (``KORTIX_LAB_DATABASE_URL``,
``KORTIX_LAB_REDIS_URL`` …, see ``config.SharedSettings``). The host is made
on the worker's event-loop thread at boot, and on SIGTERM drains before the
loop stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import AsyncIO, Middleware

from ..config import Settings, SharedSettings
from .queue import declare_actor, make_broker
from .worker import WorkerHost

log = logging.getLogger("kortix_lab.worker")

_shared = SharedSettings()
broker = make_broker(_shared, for_worker=True)
_host: WorkerHost | None = None


def _run(coro: Any) -> Any:
    loop_thread = get_event_loop_thread()
    if loop_thread is None:
        raise RuntimeError("the worker's event loop is not running")
    return asyncio.run_coroutine_threadsafe(coro, loop_thread.loop).result()


async def _requeue(account_id: str, run_id: str) -> None:
    await asyncio.to_thread(execute_run.send, account_id, run_id)


async def _make_host() -> WorkerHost:
    grace = float(os.environ.get("KORTIX_LAB_WORKER_GRACE_S", "30"))
    return WorkerHost(Settings(), _shared, grace_s=grace, requeue=_requeue)


class HostLifecycle(Middleware):
    """Boots the host on the loop thread, drains it on SIGTERM, closes it before the
    loop stops. It is added *after* ``AsyncIO``: Dramatiq calls ``before_*`` hooks in
    order and ``after_*`` hooks in reverse, so ``AsyncIO`` starts the loop before the
    host boots and stops it only after the host is closed. The host boots before the
    worker's consumers start taking messages."""

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        # Before the consumers start: a message taken while the host was still booting
        # would fail, and Dramatiq (retries off) would dead-letter it — the run would
        # stay queued for ever.
        global _host
        _host = _run(_make_host())
        _run(_host.boot())

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        if _host is not None:
            log.info("kortix-lab worker %s ready", _host.owner)

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        if _host is not None:
            loop_thread = get_event_loop_thread()
            if loop_thread is not None:  # drain while the worker threads are joined
                asyncio.run_coroutine_threadsafe(_host.drain(), loop_thread.loop)

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        if _host is not None:
            _run(_host.aclose())


async def _execute(account_id: str, run_id: str) -> None:
    if _host is None:
        raise RuntimeError("the worker host is not booted")
    await _host.execute(account_id, run_id)


broker.add_middleware(HostLifecycle(), after=AsyncIO)
execute_run = declare_actor(broker, _execute)
