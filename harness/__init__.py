"""Real processes and peers that the tests and the benchmarks both start: a Celery worker, nginx, DICOM peers.

Their own package so that neither borrows from the other (``make lint``
checks it): tests and benchmarks import this; this imports neither.
"""
