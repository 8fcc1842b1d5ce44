"""The pool's queue locks: a pool process killed while holding one must not take it to its grave."""

from __future__ import annotations

import os
import signal

import billiard
import pytest

from worker.pool import DeathSafeBlockingPool, ProcessLock, TaskPool


def hold_and_die(lock) -> None:
    """Fork a child that takes ``lock`` and is killed (SIGKILL) while holding it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: take the lock, say so, wait to be killed
        try:
            lock.acquire()
            os.write(write, b"x")
            signal.pause()
        finally:
            os._exit(1)
    os.close(write)
    assert os.read(read, 1) == b"x"
    os.close(read)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_a_semaphore_stays_taken_when_its_holder_is_killed():
    """Why the pool needs its own lock: billiard's (a semaphore) has no owner to release it."""
    semaphore = billiard.get_context("fork").Lock()
    hold_and_die(semaphore)
    assert not semaphore.acquire(timeout=0.5)


def test_a_process_lock_is_free_again_once_its_holder_is_killed():
    lock = ProcessLock()
    hold_and_die(lock)
    assert lock.acquire(timeout=10)
    lock.release()


def test_a_process_lock_excludes_other_processes_while_held():
    lock = ProcessLock()
    assert lock.acquire()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        got = lock.acquire(block=False)
        os.write(write, b"1" if got else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"0"
    os.close(read)
    os.waitpid(pid, 0)
    lock.release()


def test_a_process_lock_excludes_threads_of_one_process_and_times_out():
    import threading

    lock = ProcessLock()
    with lock:
        outcome = []
        thread = threading.Thread(target=lambda: outcome.append(lock.acquire(timeout=0.2)))
        thread.start()
        thread.join()
    assert outcome == [False]
    assert lock.acquire(block=False)
    lock.release()


def test_the_worker_runs_the_pool_with_process_locks():
    from worker.app import app

    assert app.conf.worker_pool == "worker.pool:TaskPool"
    assert TaskPool.BlockingPool is DeathSafeBlockingPool


@pytest.mark.parametrize("lock", ["_inqueue._rlock", "_outqueue._wlock"])
def test_the_blocking_pool_guards_the_shared_pipes_with_process_locks(lock):
    pool = DeathSafeBlockingPool(processes=1)
    try:
        queue, name = lock.split(".")
        assert isinstance(getattr(getattr(pool, queue), name), ProcessLock)
        assert pool.apply(pow, (2, 5)) == 32
    finally:
        pool.terminate()
        pool.join()
