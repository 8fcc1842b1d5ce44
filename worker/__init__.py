"""Celery worker: ``celery -A worker worker`` scores studies; ``-B`` (or a beat
process) runs the periodic sweep that re-queues lost studies."""

from worker.app import app

__all__ = ["app"]
