"""The worker's main process watching its own consumer: messages waiting and none taken means it is stuck.

A Redis frozen for 20 s (SIGSTOP; a VM paused, a failover stalling) left the
consumer's blocking-pop connection half closed and unregistered from the
event loop, without an error reaching Celery: the worker stayed up, its pool
warm, its heartbeats fresh, and it took nothing from the queue again (beat's
own messages piled up behind the studies). kombu reports no error there, so
the symptom is watched instead: every ``interval`` seconds this thread asks
the broker how many messages wait in the worker's queues. When some wait,
this process holds none (reserved or running), none has arrived since the
last look and a pool process is warm to take one, ``stalled_after`` times in
a row, it makes the event loop raise a connection error, which Celery
answers as it does a lost broker: it reconnects and consumes again.

A false alarm costs one reconnect with nothing in flight; the messages stay
in the broker.
"""

from __future__ import annotations

import logging
import threading

from celery.signals import task_received
from celery.worker import state
from django.db import close_old_connections
from kombu.exceptions import ChannelError

log = logging.getLogger(__name__)

_received = 0


@task_received.connect
def _count_received(**kwargs) -> None:
    global _received
    _received += 1


class ConsumerStalled(ConnectionError):
    """Raised inside the consumer's event loop so that Celery reconnects (a ``ConnectionError``: recoverable)."""


class ConsumerWatchdog:
    def __init__(self, consumer, *, waiting, pool_ready, stalled_after: int = 3):
        self.consumer = consumer
        self.waiting = waiting  # () -> messages waiting in this worker's queues
        self.pool_ready = pool_ready  # () -> True when a pool process could take a message
        self.stalled_after = stalled_after
        self.strikes = 0
        self.restarts = 0
        self._seen = _received

    def check(self) -> bool:
        """Look once; True when this look restarted the consumer."""
        arrived, self._seen = _received != self._seen, _received
        busy = bool(state.reserved_requests) or bool(state.active_requests)
        if arrived or busy or not self.pool_ready() or not self.waiting():
            self.strikes = 0
            return False
        self.strikes += 1
        if self.strikes < self.stalled_after:
            return False
        self.strikes = 0
        self.restarts += 1
        log.error("the consumer takes no messages while some wait and the pool is idle: reconnecting to the broker")
        self.consumer.hub.call_soon(_stalled)
        return True


def _stalled() -> None:
    raise ConsumerStalled("the consumer took no message while messages waited (worker.watchdog)")


def queue_length(app, queues) -> int:
    """Messages waiting in ``queues`` (names), asked on a connection of its own.

    Redis keeps no empty list: a queue with nothing in it (the urgent one, most
    of the time) is "not found" to a passive declare, and counts as 0. Raising
    there would blind the watchdog for as long as any of its queues is empty.
    """
    waiting = 0
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for name in queues:
            try:
                waiting += channel.queue_declare(queue=name, passive=True).message_count
            except ChannelError:  # no such queue: nothing waits in it
                continue
    return waiting


def start(consumer, *, interval: float, pool_ready, stop: threading.Event | None = None) -> threading.Thread:
    """Watch ``consumer`` every ``interval`` seconds from a daemon thread until ``stop``."""
    stop = stop or threading.Event()
    declared = consumer.task_consumer.queues if consumer.task_consumer else consumer.app.conf.task_queues
    queues = [queue.name for queue in declared]
    watchdog = ConsumerWatchdog(consumer, waiting=lambda: queue_length(consumer.app, queues), pool_ready=pool_ready)

    def run() -> None:
        while not stop.wait(interval):
            try:
                watchdog.check()
            except Exception:  # the broker or the database is away: that is for the consumer to notice
                log.debug("consumer watchdog: could not look", exc_info=True)
            finally:
                close_old_connections()

    thread = threading.Thread(target=run, name="consumer-watchdog", daemon=True)
    thread.start()
    return thread
