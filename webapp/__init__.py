"""The Django project. Loading the Celery application here (Celery's documented
Django layout) lets the web process publish tasks by name (``screening.queue``)
through it; the task modules themselves are imported only by the worker."""

from worker.app import app as celery_app

__all__ = ("celery_app",)
