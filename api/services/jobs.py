"""Fine-tuning jobs: request -> engine spec, lifecycle transitions, and read models.

Create: the OpenAI-shaped request is mapped onto a `replay_engine.spec.JobSpec` (file ids become
their on-disk paths, a fine-tuned model id becomes its checkpoint folder, "auto" means the engine's
default) and checked with `parse_spec`, so every problem the spec alone reveals is a 400 naming the
field. Its files may still be under validation (uploaded a moment before, as OpenAI clients do):
the job starts in `validating_files`, and a `files`-queue task (worker.runner.prepare_job) waits
until every file it names is validated (or fails the job with a file's error), tokenizes the data
and resolves the schedule, then queues it for training. Every task is enqueued
through the queue the route is given (control.queue: the outbox) in the transaction that changes the row, so a committed
job always has its task, even while the broker is down.

Transitions (cancel, pause, resume) are `control.lifecycle`'s, the job state machine that the
workers use as well; a status that does not allow one is a 409.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError, invalid
from api.schemas.jobs import (
    CheckpointPublic,
    Hyperparameters,
    JobCreate,
    JobEventPublic,
    JobPublic,
    JobSummary,
    Progress,
)
from api.services import idempotency
from api.services.models import resolve_model
from api.services.pages import after_cursor, page
from api.services.registry import corpus_paths
from control import lifecycle
from control.db.models import (
    Checkpoint,
    File,
    Job,
    JobEvent,
    JobMetric,
    Team,
    new_id,
)
from control.fields import HYPERPARAMETERS, api_param, file_field
from control.limits import estimated_steps, plan_problem, submission_limit
from control.queue import PREPARE_JOB, TaskQueue
from control.settings import Settings

DEFAULT_LEARNING_RATE = 3e-4  # JobSpec's default; learning_rate_multiplier scales it
LR_CURVE_POINTS = 500  # steps sampled for the plan's `lr_curve` (ReplayFT extra)
_ADAPTER_LORA_KEYS = ("r", "alpha", "dropout", "target_modules")  # the engine's method.lora


# ---------------------------------------------------------------------------- request -> spec
def _data_file(
    *, session: Session, team: Team, file_id: str, purpose: str, param: str, pending_ok: bool
) -> File:
    """The team's file `file_id` for `param`; 400 naming `param` if it is missing, of another
    purpose or failed validation. One still being validated is accepted when `pending_ok` (the
    job waits for it in `validating_files`, as OpenAI's do), else a 400 `file_not_ready`."""
    file = session.scalar(select(File).where(File.id == file_id, File.team_id == team.id))
    if file is None:
        raise invalid(f"No file with id '{file_id}'.", param, code="file_not_found")
    if file.purpose != purpose:
        raise invalid(
            f"File {file_id} has purpose '{file.purpose}'; {param} needs a '{purpose}' file.",
            param,
            code="invalid_file_purpose",
        )
    if file.status == "error":
        raise invalid(
            f"File {file_id} failed validation: {file.status_details}", param, code="invalid_file"
        )
    if file.status != "processed" and not pending_ok:
        raise invalid(
            f"File {file_id} is still being validated; retry when its status is 'processed'.",
            param,
            code="file_not_ready",
        )
    return file


def _replay_paths(
    *, session: Session, team: Team, dataset: str | list[str], pending_ok: bool
) -> list[str]:
    paths: list[str] = []
    for name in [dataset] if isinstance(dataset, str) else dataset:
        if name.startswith("file-"):
            paths.append(
                _data_file(
                    session=session,
                    team=team,
                    file_id=name,
                    purpose="replay",
                    param="replay.dataset",
                    pending_ok=pending_ok,
                ).path
            )
            continue
        corpus = corpus_paths(session=session, name=name)
        if corpus is None:
            raise invalid(
                f"replay.dataset {name!r} is neither a 'replay' file id nor a registered corpus.",
                "replay.dataset",
                code="file_not_found",
            )
        paths.extend(corpus)
    return paths


def _eval_file(session: Session, team: Team, index: int, one: Any, pending_ok: bool) -> str:
    """The path of eval `index`'s file; a validated file of another kind is a 400 naming
    `evals[index].kind` (one still being validated is checked when the job is prepared)."""
    file = _data_file(
        session=session,
        team=team,
        file_id=one.file,
        purpose="evals",
        param=f"evals[{index}].file",
        pending_ok=pending_ok,
    )
    found = (file.stats or {}).get("kind")
    if found is not None and found != one.kind:
        param = f"evals[{index}].kind"
        raise invalid(f"{param}: file {file.id} holds {found} records, not {one.kind}.", param)
    return file.path


def merged_hyperparameters(body: JobCreate) -> dict[str, Any]:
    """Top-level (deprecated) hyperparameters overlaid by method.supervised.hyperparameters;
    unset and "auto" values dropped, so the engine's defaults apply."""
    merged: dict[str, Any] = {}
    sources: list[Hyperparameters | None] = [body.hyperparameters]
    if body.method and body.method.supervised:
        sources.append(body.method.supervised.hyperparameters)
    for source in sources:
        if source is not None:
            merged.update(source.model_dump(exclude_none=True))
    return {k: v for k, v in merged.items() if v != "auto"}


def engine_method(adapter: dict[str, Any] | None) -> dict[str, Any] | None:
    """`hyperparameters.adapter` (flat, unset keys dropped) -> the engine spec's `method`."""
    if adapter is None:
        return None
    lora = {k: adapter[k] for k in _ADAPTER_LORA_KEYS if adapter.get(k) is not None}
    method: dict[str, Any] = {"type": adapter["type"], "lora": lora}
    if adapter.get("export") is not None:
        method["export"] = adapter["export"]
    return method


def build_spec(
    *, session: Session, team: Team, body: JobCreate, settings: Settings, pending_ok: bool = False
) -> dict[str, Any]:
    """Map a create request to a checked engine spec (as plain data). Raises APIError(400).
    `pending_ok`: files still being validated are accepted (see `_data_file`)."""
    from replay_engine.spec import SpecError, parse_spec
    from replay_engine.trainer import check_against_model

    model_path, gguf_file = resolve_model(session=session, team=team, model_id=body.model)
    training = _data_file(
        session=session,
        team=team,
        file_id=body.training_file,
        purpose="fine-tune",
        param="training_file",
        pending_ok=pending_ok,
    )
    spec: dict[str, Any] = {
        "model": model_path,
        "gguf_file": gguf_file,
        "training_file": [training.path],
        "seed": body.seed if body.seed is not None else 0,
        "cache_dir": str(settings.cache_dir),
    }
    if body.validation_file:
        spec["validation_file"] = [
            _data_file(
                session=session,
                team=team,
                file_id=body.validation_file,
                purpose="fine-tune",
                param="validation_file",
                pending_ok=pending_ok,
            ).path
        ]
    if body.replay is not None:
        replay = body.replay.model_dump(exclude_none=True)
        if "dataset" in replay:
            replay["dataset"] = _replay_paths(
                session=session, team=team, dataset=replay["dataset"], pending_ok=pending_ok
            )
        if "validation_dataset" in replay:
            replay["validation_dataset"] = [
                _data_file(
                    session=session,
                    team=team,
                    file_id=replay["validation_dataset"],
                    purpose="fine-tune",
                    param="replay.validation_dataset",
                    pending_ok=pending_ok,
                ).path
            ]
        spec["replay"] = replay

    if body.evals:
        spec["evals"] = [
            {
                **one.model_dump(exclude_none=True),
                # an lm_eval eval names no file (the spec check says so if one is given)
                **(
                    {"file": _eval_file(session, team, i, one, pending_ok)}
                    if one.file and one.kind != "lm_eval"
                    else {}
                ),
            }
            for i, one in enumerate(body.evals)
        ]

    hp = merged_hyperparameters(body)
    multiplier = hp.pop("learning_rate_multiplier", None)
    if "learning_rate" not in hp and multiplier is not None:
        hp["learning_rate"] = DEFAULT_LEARNING_RATE * multiplier
    if isinstance(hp.get("lr_scheduler"), dict):
        hp["lr_scheduler"] = {k: v for k, v in hp["lr_scheduler"].items() if v is not None}
    if "adapter" in hp:
        hp["method"] = engine_method(hp.pop("adapter"))
    spec.update(hp)

    try:
        checked = parse_spec(spec)
    except SpecError as exc:
        path, message = exc.errors[0]
        raise invalid(f"{api_param(path)}: {message}", api_param(path)) from None
    try:
        check_against_model(checked)
    except SpecError as exc:
        path, message = exc.errors[0]
        raise invalid(f"{api_param(path)}: {message}", api_param(path)) from None
    except (ValueError, OSError) as exc:
        raise invalid(f"model: {exc}", "model", code="model_not_found") from None
    steps = estimated_steps(checked, (training.stats or {}).get("tokens"))
    if steps is not None:
        check_limits(checked, steps, settings, estimated=checked.total_steps is None)
    return checked.model_dump(mode="json")


def checked_integrations(body: JobCreate, settings: Settings) -> list[dict[str, Any]] | None:
    """The request's experiment trackers as stored on the job; a 400 naming the field for a
    second tracker of one kind, a W&B entity outside the deployment's `wandb_entities` (when it
    lists some), or an MLflow tracking URI the deployment does not allow (a request never
    chooses where a worker writes: no local path, no server of its own). The messages never
    show a configured URI, which may hold credentials."""
    if not body.integrations:
        return None
    seen: dict[str, int] = {}
    for index, item in enumerate(body.integrations):
        if item.type in seen:
            param = f"integrations[{index}].type"
            raise invalid(
                f"{param}: a job takes one {item.type} integration "
                f"(integrations[{seen[item.type]}] is one).",
                param,
            )
        seen[item.type] = index
        if item.type == "wandb" and settings.wandb_entities:
            param = f"integrations[{index}].wandb.entity"
            entity = item.wandb.entity
            if entity is None:  # the deployment's first entity, not the key's own default
                item.wandb.entity = settings.wandb_entities[0]
            elif entity not in settings.wandb_entities:
                raise invalid(
                    f"{param}: {entity!r} is not a W&B entity this deployment logs to; one of "
                    f"{', '.join(settings.wandb_entities)}.",
                    param,
                )
        if item.type == "mlflow":
            param = f"integrations[{index}].mlflow.tracking_uri"
            allowed = settings.allowed_mlflow_uris
            if item.mlflow.tracking_uri is None and not allowed:
                raise invalid(
                    f"{param}: this deployment has no MLflow tracking server "
                    "(REPLAYFT_MLFLOW_TRACKING_URI is not set).",
                    param,
                    code="integration_unavailable",
                )
            if item.mlflow.tracking_uri is not None and item.mlflow.tracking_uri not in allowed:
                raise invalid(
                    f"{param}: not a tracking URI this deployment allows (its operator lists "
                    "them in REPLAYFT_MLFLOW_TRACKING_URIS); leave it out for the default.",
                    param,
                )
    return [item.model_dump(exclude_none=True) for item in body.integrations]


def check_limits(spec: Any, total_steps: int, settings: Settings, *, estimated: bool) -> None:
    """A 400 naming the setting when `total_steps` puts the job over a deployment limit."""
    problem = plan_problem(spec, total_steps, settings, estimated=estimated)
    if problem is not None:
        path, message = problem
        raise invalid(f"{api_param(path)}: {message}", api_param(path), code="limit_exceeded")


def check_team_limits(*, session: Session, team: Team, settings: Settings) -> None:
    """A 429 naming the team limit that one more job would pass (control.limits), with
    Retry-After when it is known to clear (a monthly quota: at the month's end). Called per job,
    after the rows added before it are flushed: a sweep's members count against the queue limit
    together, and the whole sweep is refused."""
    session.flush()
    reached = submission_limit(session, team, settings)
    if reached is not None:
        raise APIError(
            429,
            reached.message,
            param=reached.limit,
            code="team_limit_reached",
            headers={"Retry-After": str(reached.retry_after)} if reached.retry_after else None,
        )


# ---------------------------------------------------------------------------- create
def create_job(
    *,
    session: Session,
    team: Team,
    body: JobCreate,
    settings: Settings,
    queue: TaskQueue,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """-> (job, created). A repeated Idempotency-Key returns the first job, created=False."""
    return idempotency.create_once(
        session=session,
        team=team,
        key=idempotency_key,
        kind="job",
        make=lambda: add_job(session=session, team=team, body=body, settings=settings, queue=queue),
    )


def add_job(
    *, session: Session, team: Team, body: JobCreate, settings: Settings, queue: TaskQueue
) -> Job:
    """Check a create request and add its job row, first event and PREPARE_JOB task to the
    session, without committing (a sweep adds all its members in one transaction this way).
    Raises APIError(400) naming the field."""
    spec = build_spec(session=session, team=team, body=body, settings=settings, pending_ok=True)
    integrations = checked_integrations(body, settings)
    check_team_limits(session=session, team=team, settings=settings)
    job_id = new_id("ftjob")
    job = Job(
        id=job_id,
        team_id=team.id,
        status="validating_files",
        model=body.model,
        training_file=body.training_file,
        validation_file=body.validation_file,
        suffix=body.suffix,
        seed=spec["seed"],
        priority=body.priority,
        job_metadata=body.metadata,
        hyperparameters=merged_hyperparameters(body),
        method=body.method.model_dump(exclude_none=True) if body.method else {},
        replay_request=body.replay.model_dump(exclude_none=True) if body.replay else None,
        evals_request=[e.model_dump(exclude_none=True) for e in body.evals] if body.evals else None,
        integrations=integrations,
        spec=spec,
        artifact_dir=str(settings.jobs_dir / job_id),
        result_files=[],
        progress={"step": 0, "total_steps": spec.get("total_steps"), "tokens_seen": 0},
    )
    session.add(job)
    session.flush()
    session.add(JobEvent(job_id=job.id, message=f"Created fine-tuning job: {job.id}"))
    queue.enqueue(session, PREPARE_JOB, job.id)
    return job


def plan_job(*, session: Session, team: Team, body: JobCreate, settings: Settings) -> dict:
    """The resolved schedule of a create request, without creating anything (tokenizes the data,
    so the cache is warm for the job that usually follows)."""
    from replay_engine.data import DataFormatError
    from replay_engine.spec import JobSpec, SpecError
    from replay_engine.trainer import prepare

    spec = JobSpec.model_validate(
        build_spec(session=session, team=team, body=body, settings=settings)
    )
    try:
        plan = prepare(spec).plan
    except SpecError as exc:
        path, message = exc.errors[0]
        raise invalid(f"{api_param(path)}: {message}", api_param(path)) from None
    except DataFormatError as exc:
        # the job this request would create, for the field that names the file at fault
        asked = Job(
            training_file=body.training_file,
            validation_file=body.validation_file,
            replay_request=body.replay.model_dump(exclude_none=True) if body.replay else None,
            evals_request=[e.model_dump(exclude_none=True) for e in body.evals or []],
        )
        param = file_field(asked, exc.path) or (
            "replay.dataset" if body.replay else "training_file"
        )
        raise invalid(f"{param}: {exc.reason}", param, code="invalid_file") from None
    check_limits(spec, plan.total_steps, settings, estimated=False)
    return {**plan.summary(), "lr_curve": lr_curve(plan)}


def lr_curve(plan: Any, max_points: int = LR_CURVE_POINTS) -> dict[str, list]:
    """The LR at evenly spaced steps (every step of a short run; the first and last always),
    from the engine's own `lr_at`. Steps count as in metric records: step k is the k-th
    optimizer step (1-based) and trains at lr_at(k - 1), so the plan overlays the run's `lr`."""
    total = max(1, plan.total_steps)
    count = min(max_points, total)
    steps = sorted({1 + round(i * (total - 1) / max(1, count - 1)) for i in range(count)})
    return {"step": steps, "lr": [plan.lr_at(step - 1) for step in steps]}


# ---------------------------------------------------------------------------- transitions
def _transition(change: Callable[[], None], session: Session, job: Job) -> Job:
    """Apply a lifecycle transition and commit it; a status that does not allow it is a 409.
    The job's row is read again and locked first (PostgreSQL), so a worker finishing the job at
    the same moment either commits before (and the transition sees its status) or waits for
    this commit (and its conditional UPDATE then finds the job cancelled): never a cancel that
    overwrites `succeeded`."""
    session.refresh(job, with_for_update=True)
    try:
        change()
    except lifecycle.InvalidTransition as exc:
        raise APIError(409, str(exc), code="invalid_state") from None
    session.commit()
    return job


def cancel_job(*, session: Session, job: Job) -> Job:
    return _transition(lambda: lifecycle.cancel(session, job), session, job)


def pause_job(*, session: Session, job: Job) -> Job:
    return _transition(lambda: lifecycle.pause(session, job), session, job)


def resume_job(*, session: Session, job: Job, queue: TaskQueue) -> Job:
    return _transition(lambda: lifecycle.resume(session, job, queue), session, job)


# ---------------------------------------------------------------------------- reads
def list_jobs(
    *,
    session: Session,
    team: Team,
    after: str | None,
    limit: int,
    metadata: dict[str, str] | None = None,
    statuses: list[str] | None = None,
) -> tuple[list[Job], bool]:
    query = select(Job).where(Job.team_id == team.id)
    if statuses:
        query = query.where(Job.status.in_(statuses))
    where = dict(model=Job, order=Job.pk, scope=Job.team_id == team.id, after=after)
    if not metadata:
        return page(session, query, **where, limit=limit, what="fine-tuning job")
    query = after_cursor(query, session=session, **where, what="fine-tuning job")
    # metadata is JSON, filtered here so the same code runs on SQLite and PostgreSQL
    matched: list[Job] = []
    for job in session.scalars(query.execution_options(yield_per=200)):
        if all((job.job_metadata or {}).get(k) == v for k, v in metadata.items()):
            matched.append(job)
            if len(matched) > limit:
                break
    return matched[:limit], len(matched) > limit


def _page_of_job_rows(
    *, session: Session, job: Job, model: Any, order: Any, after: str | None, limit: int, what: str
) -> tuple[list[Any], bool]:
    """Newest first by `order`; `after` is the id of the last row of the previous page."""
    scope = model.job_id == job.id
    query = select(model).where(scope)
    return page(
        session, query, model=model, order=order, scope=scope, after=after, limit=limit, what=what
    )


def list_events(
    *, session: Session, job: Job, after: str | None, limit: int
) -> tuple[list[JobEvent], bool]:
    return _page_of_job_rows(
        session=session,
        job=job,
        model=JobEvent,
        order=JobEvent.pk,
        after=after,
        limit=limit,
        what="event",
    )


def list_checkpoints(
    *, session: Session, job: Job, after: str | None, limit: int
) -> tuple[list[Checkpoint], bool]:
    # ordered and paged by step, so the cursor and the order always agree
    return _page_of_job_rows(
        session=session,
        job=job,
        model=Checkpoint,
        order=Checkpoint.step_number,
        after=after,
        limit=limit,
        what="checkpoint",
    )


def metric_series(
    *,
    session: Session,
    job: Job,
    start_step: int | None,
    end_step: int | None,
    max_points: int | None,
    type: str | None,
) -> list[dict[str, Any]]:
    """Train and eval records in step order, evenly thinned to at most `max_points` (the first
    and last kept) so a chart of a long run stays cheap."""
    query = select(JobMetric.record).where(
        JobMetric.job_id == job.id, JobMetric.type.in_([type] if type else ["train", "eval"])
    )
    if start_step is not None:
        query = query.where(JobMetric.step >= start_step)
    if end_step is not None:
        query = query.where(JobMetric.step <= end_step)
    records = list(session.scalars(query.order_by(JobMetric.step, JobMetric.pk)))
    if max_points is None:
        return records
    # thin each record type separately, so train rows never crowd out the evals (or back)
    kept = []
    for kind in sorted({r.get("type") for r in records}, key=str):
        kept += _thin([r for r in records if r.get("type") == kind], max_points)
    return sorted(kept, key=lambda r: (r.get("step", 0), r.get("type") == "eval"))


def _thin(records: list[dict[str, Any]], max_points: int) -> list[dict[str, Any]]:
    """At most `max_points` evenly spaced records, the first and last kept."""
    if not 0 < max_points < len(records):
        return records
    if max_points == 1:
        return [records[-1]]
    last = len(records) - 1
    picks = sorted({round(i * last / (max_points - 1)) for i in range(max_points)})
    return [records[i] for i in picks]


# ---------------------------------------------------------------------------- public shapes
def _public_hyperparameters(job: Job) -> dict[str, Any]:
    from replay_engine.spec import upgrade_spec_data

    spec = upgrade_spec_data(job.spec)  # a job stored before a field existed: what it meant
    total_steps = (job.plan or {}).get("total_steps", spec.get("total_steps"))
    public = {name: spec.get(name) for name in HYPERPARAMETERS}
    public.update(
        learning_rate_multiplier=spec["learning_rate"] / DEFAULT_LEARNING_RATE,
        total_steps=total_steps,
        adapter=_public_adapter(spec.get("method") or {}),
        distributed=_public_distributed(spec.get("distributed") or {}),
    )
    return public


def _public_distributed(distributed: dict[str, Any]) -> dict[str, Any] | None:
    """The engine's `distributed` as requested; None for a one-process job."""
    if distributed.get("gpus_per_node", 1) * distributed.get("nodes", 1) <= 1:
        return None
    public = {k: distributed[k] for k in ("strategy", "gpus_per_node", "nodes")}
    if distributed.get("rendezvous_timeout") is not None:  # shown only when the job set it
        public["rendezvous_timeout"] = distributed["rendezvous_timeout"]
    return public


def _public_adapter(method: dict[str, Any]) -> dict[str, Any] | None:
    """The engine's resolved `method` as `hyperparameters.adapter`; None for full fine-tuning."""
    if method.get("type", "full") == "full":
        return None
    return {"type": method["type"], **method.get("lora", {}), "export": method.get("export")}


def _public_replay(job: Job) -> dict[str, Any] | None:
    request = job.replay_request or {}
    plan = job.plan
    if plan is None:
        return dict(request) if request else None
    return {
        "dataset": request.get("dataset"),
        "validation_dataset": request.get("validation_dataset"),
        "fraction": plan["replay_fraction"],
        "target_stage2_allocation": plan["target_stage2_allocation"],
        "stage2_duration": plan["stage2_duration"],
        "target_fraction": plan["target_fraction"],
        "transition_step": plan["transition_step"],
        "total_steps": plan["total_steps"],
        "stages": plan["stages"],
        "warnings": plan.get("warnings", []),
    }


def to_public(job: Job, summary: dict[str, Any] | None = None) -> JobPublic:
    hyperparameters = _public_hyperparameters(job)
    progress = dict(job.progress or {})
    progress.setdefault("total_steps", hyperparameters["total_steps"])
    return JobPublic(
        id=job.id,
        created_at=job.created_at,
        finished_at=job.finished_at,
        model=job.model,
        fine_tuned_model=job.fine_tuned_model,
        organization_id=job.team_id,
        status=job.status,
        error=job.error,
        hyperparameters=hyperparameters,
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        training_file=job.training_file,
        validation_file=job.validation_file,
        result_files=job.result_files or [],
        trained_tokens=job.trained_tokens,
        seed=job.seed,
        priority=job.priority or 0,
        estimated_finish=job.estimated_finish,
        metadata=job.job_metadata,
        suffix=job.suffix,
        progress=Progress(**progress),
        pausing=job.status == "running" and job.control == "pause",
        replay=_public_replay(job),
        evals=job.evals_request,
        integrations=job.integrations or [],
        summary=JobSummary.model_validate(summary) if summary else None,
    )


def job_summaries(*, session: Session, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """job id -> the engine's summary record, for the jobs among `job_ids` that have one (one
    query, so a page of jobs costs the same as one job)."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(JobMetric.job_id, JobMetric.record)
        .where(JobMetric.job_id.in_(job_ids), JobMetric.type == "summary")
        .order_by(JobMetric.pk)
    )
    return {job_id: record for job_id, record in rows}  # the newest wins


def public_jobs(*, session: Session, jobs: list[Job]) -> list[JobPublic]:
    """Job objects with their `summary` filled in."""
    summaries = job_summaries(session=session, job_ids=[j.id for j in jobs])
    return [to_public(j, summary=summaries.get(j.id)) for j in jobs]


def event_public(event: JobEvent) -> JobEventPublic:
    return JobEventPublic(
        id=event.id,
        created_at=event.created_at,
        level=event.level,
        message=event.message,
        type=event.type,
        data=event.data,
    )


def checkpoint_public(ckpt: Checkpoint) -> CheckpointPublic:
    return CheckpointPublic(
        id=ckpt.id,
        created_at=ckpt.created_at,
        fine_tuned_model_checkpoint=ckpt.fine_tuned_model_checkpoint,
        fine_tuning_job_id=ckpt.job_id,
        step_number=ckpt.step_number,
        metrics=ckpt.metrics,
    )


def checkpoint_folder(*, session: Session, job: Job, checkpoint_id: str) -> Path:
    ckpt = session.scalar(
        select(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.job_id == job.id)
    )
    if ckpt is None or not Path(ckpt.path).is_dir():
        raise APIError(
            404,
            f"No checkpoint with id '{checkpoint_id}' for job {job.id} (older checkpoints are "
            f"pruned as new ones are saved).",
            param="checkpoint_id",
            code="not_found",
        )
    return Path(ckpt.path)
