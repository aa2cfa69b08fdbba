"""The threads async code calls the store on.

``Store`` methods are synchronous, so async callers hop to a thread. Through
``asyncio.to_thread`` that is the loop's default executor: ``min(32, cpus + 4)``
threads, shared with everything else that uses it (DNS lookups, file reads, the
event log). With many concurrent runs, store calls queued behind one another
there, although the stores can take many at once (Postgres has a connection
pool; the DuckDB store groups queued writers into one commit). So store calls
have a pool of their own.

``in_store_thread`` behaves like ``asyncio.to_thread``: the call runs in a copy
of the caller's context (context variables such as the run scope are seen), and
cancelling the await does not stop a call already started.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

#: Threads for store calls, per process. Idle ones cost little; a store call mostly
#: waits (on a lock, a connection, the database), so more threads than CPUs pay.
STORE_THREADS = 64

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=STORE_THREADS,
                                           thread_name_prefix="kortix-store")
        return _executor


def _forget_after_fork() -> None:
    """A forked child has none of its parent's threads: give it a pool of its own."""
    global _executor, _lock
    _executor, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


async def in_store_thread(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` on a store thread, in a copy of the caller's context."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(_pool(), call)
