"""The consumer watchdog: a worker whose consumer stopped taking messages without an error reconnects."""

import uuid
from types import SimpleNamespace

import pytest
from celery.worker import state
from kombu import Connection, Exchange, Producer, Queue
from kombu.asynchronous import Hub

from worker import watchdog
from worker.app import app


def dog(hub=None, *, waiting=5, pool_ready=True):
    return watchdog.ConsumerWatchdog(
        SimpleNamespace(hub=hub or Hub()), waiting=lambda: waiting, pool_ready=lambda: pool_ready, stalled_after=3
    )


def test_a_consumer_taking_nothing_while_messages_wait_is_made_to_reconnect():
    hub = Hub()
    watching = dog(hub)

    assert [watching.check() for _ in range(3)] == [False, False, True]

    with pytest.raises(ConnectionError):  # what Celery's consumer answers by reconnecting
        next(hub.create_loop())


def test_a_message_arriving_resets_the_count():
    watching = dog()
    watching.check()
    watching.check()
    watchdog._count_received()
    assert [watching.check() for _ in range(3)] == [False, False, False]
    assert watching.check() is True


class HeldRequest:
    """Stands for a request the pool holds (Celery keeps them in a WeakSet)."""


@pytest.mark.parametrize("situation", ["nothing waits", "no pool process is warm", "a message is in hand"])
def test_it_is_no_stall_when(situation):
    watching = dog(waiting=0 if situation == "nothing waits" else 5, pool_ready=situation != "no pool process is warm")
    in_hand = HeldRequest()
    if situation == "a message is in hand":
        state.reserved_requests.add(in_hand)
    try:
        assert not any(watching.check() for _ in range(6))
    finally:
        state.reserved_requests.discard(in_hand)


def test_the_queue_length_is_what_waits_in_the_broker(settings):
    name = f"watchdog-test-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), routing_key=name)
    with Connection(settings.CELERY_BROKER_URL) as connection:
        bound = queue(connection.default_channel)
        bound.declare()
        producer = Producer(connection.default_channel, exchange=queue.exchange, routing_key=name)
        try:
            for n in range(3):
                producer.publish({"n": n}, declare=[queue])
            assert watchdog.queue_length(app, [name]) == 3
            # An empty queue Redis does not keep (the urgent one, most of the time) counts as empty, not an error.
            assert watchdog.queue_length(app, [name, f"{name}-never-declared"]) == 3
        finally:
            bound.purge()
            bound.delete()
