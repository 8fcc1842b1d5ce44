"""A TCP peer that accepts every connection and never answers: a broker or database that hangs."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager


@contextmanager
def silent_listener():
    """Yield ``(port, accepted)``: a loopback port that accepts and never answers, and the sockets it accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        for peer in accepted:
            peer.close()
        listener.close()
