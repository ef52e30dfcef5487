"""Celery workers: `app` (configuration and queues), `tasks` (thin task wrappers) and `runner`
(the plain functions that do the work, callable and testable without Celery)."""
