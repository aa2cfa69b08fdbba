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


async def _make_host() -> WorkerHost:
    grace = float(os.environ.get("KORTIX_LAB_WORKER_GRACE_S", "30"))
    return WorkerHost(Settings(), _shared, grace_s=grace)


class HostLifecycle(Middleware):
    """Boots the host on the loop thread, drains it on SIGTERM, closes it before the
    loop stops (it is added before ``AsyncIO``, whose shutdown stops the loop)."""

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        global _host
        _host = _run(_make_host())
        _run(_host.boot())
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


broker.add_middleware(HostLifecycle(), before=AsyncIO)
execute_run = declare_actor(broker, _execute)
