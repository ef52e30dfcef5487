"""The service's control core: what both the HTTP API (`api/`) and the Celery workers (`worker/`)
stand on, and nothing web- or queue-framework specific.

- `settings`: the deployment's `REPLAYFT_*` settings.
- `db`: the database (tables, sessions, migrations).
- `lifecycle`: the job state machine: every status change of a job, whoever makes it.
- `queue`: the task queue interface (`TaskQueue`) and its transactional outbox.
- `limits`: what one job may cost in this deployment.
- `fields`: the one declared mapping between API request fields and engine spec fields.

Imports point one way: api -> control -> replay_engine, and worker -> control -> replay_engine.
"""
