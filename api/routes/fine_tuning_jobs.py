"""`/v1/fine_tuning/...`: jobs, their events, checkpoints (and downloads), metrics, a live SSE
stream, and `plan` (the resolved schedule of a request, without creating a job)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import tarfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from api.deps import (
    CurrentKey,
    CurrentTeam,
    DownloadToken,
    JobDep,
    QueueDep,
    SessionDep,
    db_slot,
    download_team,
    get_job,
)
from api.errors import APIError, invalid
from api.openapi import error_responses
from api.schemas.common import (
    ID_MAX_LENGTH,
    Cursor,
    IdempotencyKeyHeader,
    ListResponse,
    PathId,
    Step,
    storable_or_none,
)
from api.schemas.jobs import (
    CheckpointDownloadLink,
    CheckpointPublic,
    JobCreate,
    JobEventPublic,
    JobPublic,
    JobStatus,
    MetricsList,
)
from api.services import download_links
from api.services import jobs as service
from control import lifecycle
from control.db.models import Job, JobEvent, JobMetric
from control.db.session import session_scope
from control.settings import get_settings

router = APIRouter(prefix="/fine_tuning", tags=["fine_tuning"])

Limit = Annotated[int, Query(ge=1, le=1000)]


@router.post("/jobs", response_model=JobPublic, responses=error_responses(400, 409, 429))
def create_job(
    body: JobCreate,
    session: SessionDep,
    team: CurrentTeam,
    queue: QueueDep,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobPublic:
    job, created = service.create_job(
        session=session,
        team=team,
        body=body,
        settings=get_settings(),
        queue=queue,
        idempotency_key=idempotency_key,
    )
    response.status_code = 200  # OpenAI answers 200 for a new job as well as a replayed one
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return service.to_public(job)


@router.post("/plan", responses=error_responses(400))
def plan_job(body: JobCreate, session: SessionDep, team: CurrentTeam) -> dict[str, Any]:
    return service.plan_job(session=session, team=team, body=body, settings=get_settings())


@router.get("/jobs", response_model=ListResponse[JobPublic], responses=error_responses(400))
def list_jobs(
    request: Request,
    session: SessionDep,
    team: CurrentTeam,
    after: Cursor = None,
    limit: Limit = 20,
    status: Annotated[
        list[JobStatus] | None, Query(description="ReplayFT extra: only jobs in these states.")
    ] = None,
) -> ListResponse[JobPublic]:
    # OpenAI's filter syntax: ?metadata[key]=value (repeatable)
    metadata = {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.items()
        if key.startswith("metadata[") and key.endswith("]")
    }
    jobs, has_more = service.list_jobs(
        session=session, team=team, after=after, limit=limit, metadata=metadata, statuses=status
    )
    return ListResponse(data=service.public_jobs(session=session, jobs=jobs), has_more=has_more)


@router.get("/jobs/{job_id}", response_model=JobPublic, responses=error_responses(404))
def retrieve_job(job: JobDep, session: SessionDep) -> JobPublic:
    return service.public_jobs(session=session, jobs=[job])[0]


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic, responses=error_responses(404, 409))
def cancel_job(job: JobDep, session: SessionDep) -> JobPublic:
    return service.to_public(service.cancel_job(session=session, job=job))


@router.post("/jobs/{job_id}/pause", response_model=JobPublic, responses=error_responses(404, 409))
def pause_job(job: JobDep, session: SessionDep) -> JobPublic:
    return service.to_public(service.pause_job(session=session, job=job))


@router.post("/jobs/{job_id}/resume", response_model=JobPublic, responses=error_responses(404, 409))
def resume_job(job: JobDep, session: SessionDep, queue: QueueDep) -> JobPublic:
    return service.to_public(service.resume_job(session=session, job=job, queue=queue))


@router.get(
    "/jobs/{job_id}/events",
    response_model=ListResponse[JobEventPublic],
    responses=error_responses(400, 404),
)
def list_events(
    job: JobDep, session: SessionDep, after: Cursor = None, limit: Limit = 20
) -> ListResponse[JobEventPublic]:
    events, has_more = service.list_events(session=session, job=job, after=after, limit=limit)
    return ListResponse(data=[service.event_public(e) for e in events], has_more=has_more)


@router.get(
    "/jobs/{job_id}/checkpoints",
    response_model=ListResponse[CheckpointPublic],
    responses=error_responses(400, 404),
)
def list_checkpoints(
    job: JobDep, session: SessionDep, after: Cursor = None, limit: Limit = 10
) -> ListResponse[CheckpointPublic]:
    rows, has_more = service.list_checkpoints(session=session, job=job, after=after, limit=limit)
    return ListResponse(data=[service.checkpoint_public(c) for c in rows], has_more=has_more)


class _QueueWriter:
    """A write-only file object feeding a bounded queue: the tar producer blocks while the
    client is slower than the disk, so memory stays flat whatever the checkpoint's size. Once the
    reader is gone (`abandoned`), writing raises, so the producer thread ends too."""

    def __init__(self, chunks: queue.Queue, abandoned: threading.Event):
        self.chunks, self.abandoned = chunks, abandoned

    def write(self, data: bytes) -> int:
        while data:
            if self.abandoned.is_set():
                raise ConnectionAbortedError("the download was abandoned")
            try:
                self.chunks.put(bytes(data), timeout=1.0)
                break
            except queue.Full:
                continue
        return len(data)

    def flush(self) -> None:
        pass


def _tar_stream(folder: Path, arcname: str) -> Iterator[bytes]:
    chunks: queue.Queue = queue.Queue(maxsize=16)
    abandoned = threading.Event()
    done = object()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with tarfile.open(fileobj=_QueueWriter(chunks, abandoned), mode="w|gz") as tar:
                tar.add(folder, arcname=arcname)
        except BaseException as exc:
            failure.append(exc)
        finally:
            with contextlib.suppress(queue.Full):
                chunks.put(done, timeout=5.0)

    threading.Thread(target=produce, name="checkpoint-tar", daemon=True).start()
    try:
        while (chunk := chunks.get()) is not done:
            yield chunk
    finally:
        abandoned.set()
    if failure:
        # e.g. the folder was pruned mid-download: raising aborts the connection, so the client
        # sees a cut-off body instead of a short archive that looks complete
        raise RuntimeError(f"archiving {folder} failed: {failure[0]!r}") from failure[0]


@router.post(
    "/jobs/{job_id}/checkpoints/{checkpoint_id}/download_link",
    response_model=CheckpointDownloadLink,
    responses=error_responses(404),
)
def create_download_link(
    job: JobDep, checkpoint_id: PathId, session: SessionDep, key: CurrentKey, request: Request
) -> CheckpointDownloadLink:
    """A short-lived URL of the checkpoint's download that needs no Authorization header (for a
    browser's own download manager); it holds no API key (ReplayFT extra)."""
    service.checkpoint_folder(session=session, job=job, checkpoint_id=checkpoint_id)  # or 404
    subject = download_links.checkpoint_subject(job.id, checkpoint_id)
    token, expires_at = download_links.make_token(key=key, subject=subject)
    url = request.url_for("download_checkpoint", job_id=job.id, checkpoint_id=checkpoint_id)
    return CheckpointDownloadLink(
        url=str(url.include_query_params(token=token)), expires_at=expires_at
    )


def _download_job(
    job_id: PathId,
    checkpoint_id: PathId,
    request: Request,
    session: SessionDep,
    token: DownloadToken = None,
) -> Job:
    subject = download_links.checkpoint_subject(job_id, checkpoint_id)
    return get_job(job_id, session, download_team(session, request, token, subject))


@router.get(
    "/jobs/{job_id}/checkpoints/{checkpoint_id}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/gzip": {}}}, **error_responses(404)},
)
def download_checkpoint(
    job: Annotated[Job, Depends(_download_job)], checkpoint_id: PathId, session: SessionDep
) -> StreamingResponse:
    """The checkpoint folder as a streamed tar.gz. Authorized by the API key, or by the `token`
    of a download link."""
    folder = service.checkpoint_folder(session=session, job=job, checkpoint_id=checkpoint_id)
    name = f"{job.id}-{folder.name}"
    return StreamingResponse(
        _tar_stream(folder, name),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar.gz"'},
    )


@router.get(
    "/jobs/{job_id}/metrics", response_model=MetricsList, responses=error_responses(400, 404)
)
def get_metrics(
    job: JobDep,
    session: SessionDep,
    start_step: Step = None,
    end_step: Step = None,
    max_points: Annotated[int | None, Query(ge=1, lt=2**31)] = None,
    type: Literal["train", "eval"] | None = None,
) -> MetricsList:
    records = service.metric_series(
        session=session,
        job=job,
        start_step=start_step,
        end_step=end_step,
        max_points=max_points,
        type=type,
    )
    return MetricsList(data=records)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _poll(job_id: str, last_event: int, last_metric: int) -> tuple[JobPublic, list, list]:
    with session_scope() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        public = service.public_jobs(session=session, jobs=[job])[0]
        events = list(
            session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.pk > last_event)
                .order_by(JobEvent.pk)
                .limit(500)
            )
        )
        metrics = list(
            session.execute(
                select(JobMetric.pk, JobMetric.record)
                .where(JobMetric.job_id == job_id, JobMetric.pk > last_metric)
                .order_by(JobMetric.pk)
                .limit(2000)
            )
        )
        return public, events, metrics


def _start_cursors(
    session: SessionDep, job_id: str, since_step: int | None, after: str | None
) -> tuple[int, int]:
    """(event pk, metric pk) to stream after. Metric rows are written in step order, and a resumed
    run's rewritten steps get new rows, so every row past the last one at or before `since_step`
    is a later step."""
    last_event = last_metric = 0
    if after is not None:
        anchor = session.scalar(
            select(JobEvent.pk).where(JobEvent.job_id == job_id, JobEvent.id == after)
        )
        if anchor is None:
            raise invalid(f"No event with id '{after}' in job {job_id}.", "after")
        last_event = anchor
    if since_step is not None:
        last_metric = (
            session.scalar(
                select(func.max(JobMetric.pk)).where(
                    JobMetric.job_id == job_id, JobMetric.step <= since_step
                )
            )
            or 0
        )
    return last_event, last_metric


@router.get(
    "/jobs/{job_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **error_responses(400, 404)},
)
def stream_job(
    job: JobDep,
    request: Request,
    session: SessionDep,
    since_step: Annotated[
        int | None,
        Query(
            ge=-(2**31),
            lt=2**31,
            description="Only metric records of later steps (ReplayFT extra).",
        ),
    ] = None,
    after: Annotated[
        str | None,
        Query(
            max_length=ID_MAX_LENGTH,
            description="Only events after this event id (ReplayFT extra).",
        ),
        AfterValidator(storable_or_none),
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events: `event` (a job event), `metrics` (an engine record), `job` (the job
    object, first and whenever its status or `pausing` changes) and `progress` (the job's
    `progress` object whenever it moved: step, stage, tokens, ETA). Ends when the job is finished
    or paused. By default the stream starts with the job's whole history; a client that already
    fetched it (the dashboard) passes `since_step` and `after` to get only what is new."""
    job_id = job.id
    start_event, start_metric = _start_cursors(session, job_id, since_step, after)

    async def events() -> AsyncIterator[str]:
        last_event, last_metric = start_event, start_metric
        last_state: tuple | None = None
        last_progress = None
        while True:
            try:
                # a short session per poll, admitted like a request: an open stream holds none
                async with db_slot():
                    current, new_events, new_metrics = await run_in_threadpool(
                        _poll, job_id, last_event, last_metric
                    )
            except (APIError, SQLAlchemyError):  # busy or unreachable database: poll again later
                if await request.is_disconnected():
                    return
                await asyncio.sleep(1.0)
                continue
            for event in new_events:
                last_event = event.pk
                yield _sse("event", service.event_public(event).model_dump())
            for pk, record in new_metrics:
                last_metric = pk
                yield _sse("metrics", record)
            progress = current.progress.model_dump()
            if (current.status, current.pausing) != last_state:
                last_state = (current.status, current.pausing)
                yield _sse("job", current.model_dump())
            elif progress != last_progress:
                yield _sse("progress", progress)
            last_progress = progress
            finished = current.status in lifecycle.TERMINAL_STATUSES or current.status == "paused"
            if (finished and not new_events and not new_metrics) or await request.is_disconnected():
                yield _sse("done", {"status": current.status})
                return
            await asyncio.sleep(1.0)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
