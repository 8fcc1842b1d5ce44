"""The prefork pool, with queue locks that a killed pool process cannot keep.

Without an event loop (``make run``'s SQL broker is polled, so Celery runs
billiard's blocking pool), every pool process reads its next task from one
shared pipe, guarded by a ``multiprocessing.Lock``. An idle pool process
waits for work holding that lock. A semaphore has no owner: when that process
is killed (``kill -9``, the OOM killer), the lock stays taken and every
replacement blocks on it forever, warm and heartbeating, while the queue fills
(billiard issue #104, never fixed for the blocking pool). The same goes for
the lock on the shared result pipe.

Here both locks are POSIX record locks (``fcntl.lockf``) on a file: the
kernel drops a process's record locks when it dies, so the next pool process
gets the lock. With Redis (an event loop) Celery uses a queue per pool
process and none of this applies; this class changes nothing there.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
import time

from billiard.pool import Pool as BlockingPool
from celery.concurrency import prefork


class ProcessLock:
    """A lock between processes that is released when its holder dies, and between threads within one."""

    def __init__(self):
        # Opened before the pool forks: every pool process inherits the descriptor.
        # Record locks belong to a process, not to a descriptor, so sharing it is how they exclude each other.
        self._file = tempfile.TemporaryFile(prefix="pool-lock-")  # noqa: SIM115 - open for the pool's life
        self._pid = os.getpid()
        self._threads = threading.Lock()

    def _thread_lock(self) -> threading.Lock:
        if self._pid != os.getpid():  # forked: a thread of the parent may have held the copy
            self._pid, self._threads = os.getpid(), threading.Lock()
        return self._threads

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        threads = self._thread_lock()
        deadline = None if timeout is None or not block else time.monotonic() + timeout
        if not threads.acquire(block, -1 if deadline is None else timeout):
            return False
        try:
            if block and deadline is None:
                fcntl.lockf(self._file, fcntl.LOCK_EX)
                return True
            while True:
                try:
                    fcntl.lockf(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except OSError:  # held by another process
                    if deadline is None or time.monotonic() >= deadline:
                        threads.release()
                        return False
                    time.sleep(0.005)
        except BaseException:
            threads.release()
            raise

    def release(self) -> None:
        fcntl.lockf(self._file, fcntl.LOCK_UN)
        self._thread_lock().release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class DeathSafeBlockingPool(BlockingPool):
    def _setup_queues(self):
        super()._setup_queues()
        self._inqueue._rlock = ProcessLock()  # pool processes read tasks
        self._outqueue._wlock = ProcessLock()  # pool processes write results


class TaskPool(prefork.TaskPool):
    """Celery's prefork pool; without an event loop, its blocking pool uses ``ProcessLock``."""

    BlockingPool = DeathSafeBlockingPool
