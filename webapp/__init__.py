"""The Django project. Loading the Celery application here (Celery's documented
Django layout) makes ``screening.tasks``' ``shared_task``s publish through it
in the web process too, without the Django app importing the worker package."""

from worker.app import app as celery_app

__all__ = ("celery_app",)
