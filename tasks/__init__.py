"""Celery side of the controller: `celery -A tasks worker -Q <SCHEDD_NAME>` and `celery -A tasks beat`.

Celery finds the app as `tasks.app`; importing this package registers every task.
"""
from tasks.app import app  # noqa: F401

__all__ = ["app"]
