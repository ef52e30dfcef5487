"""Models a team can train from, and how a model id turns into what the engine loads.

Three sources: the engine's presets (built from config with random weights, listed with
`pretrained: false` and a description that says so), base models an
admin registered by path (`replayft models add`), and the team's own fine-tuned outputs, named
`ft:<base>:<team>:<suffix>:<job id>`, and each of their jobs' checkpoints, named
`...:ckpt-step-N` (listed while its folder exists, also while the job still runs); both resolve to
checkpoint folders. Nothing else is accepted: the API never lets a client name an
arbitrary server path or make the server download from a hub.
"""

from __future__ import annotations

import functools
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError, invalid, not_found
from api.schemas.models import ModelPublic
from control.db.models import Checkpoint, Job, Model, Team
from control.lifecycle import fine_tuned_name
from control.statuses import TERMINAL_STATUSES

PRESETS_CREATED = 1735689600  # presets are built from code; a fixed date keeps `created` stable


def _presets() -> list[str]:
    from replay_engine.models import PRESETS

    return list(PRESETS)


@functools.cache
def _preset_public(name: str) -> ModelPublic:
    from replay_engine.models import preset_description

    return ModelPublic(
        id=name,
        created=PRESETS_CREATED,
        owned_by="replayft",
        pretrained=False,
        description=preset_description(name),
    )


def list_models(*, session: Session, team: Team) -> list[ModelPublic]:
    """Presets, registered base models, then the team's jobs newest first: each job's fine-tuned
    model (once it exists) followed by its checkpoints, newest step first."""
    models = _shared_models(session)
    checkpoints: dict[str, list[Checkpoint]] = {}
    for ckpt in session.scalars(
        select(Checkpoint)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Job.team_id == team.id)
        .order_by(Checkpoint.step_number.desc())
    ):
        checkpoints.setdefault(ckpt.job_id, []).append(ckpt)
    jobs = session.scalars(
        select(Job)
        .where(
            Job.team_id == team.id,
            Job.fine_tuned_model.is_not(None) | Job.id.in_(list(checkpoints)),
        )
        .order_by(Job.pk.desc())
    )
    for job in jobs:
        if job.fine_tuned_model is not None:
            models.append(_fine_tuned_public(job, team))
        models += [
            _checkpoint_public(ckpt, team)
            for ckpt in checkpoints.get(job.id, [])
            if Path(ckpt.path).is_dir()  # a pruned checkpoint cannot be served: not a model now
        ]
    return models


def _fine_tuned_public(job: Job, team: Team) -> ModelPublic:
    return ModelPublic(
        id=job.fine_tuned_model, created=job.finished_at or job.created_at, owned_by=team.id
    )


def _checkpoint_public(ckpt: Checkpoint, team: Team) -> ModelPublic:
    return ModelPublic(
        id=ckpt.fine_tuned_model_checkpoint,
        created=ckpt.created_at,
        owned_by=team.id,
        description=f"The checkpoint at step {ckpt.step_number} of job {ckpt.job_id}.",
    )


def _shared_models(session: Session) -> list[ModelPublic]:
    """The models every team sees: presets and registered base models."""
    models = [_preset_public(name) for name in _presets()]
    for row in session.scalars(select(Model).where(Model.kind == "base").order_by(Model.pk)):
        models.append(ModelPublic(id=row.id, created=row.created_at, owned_by=row.owned_by))
    return models


def get_model(*, session: Session, team: Team, model_id: str) -> ModelPublic:
    """One model of `list_models`; 404 (param `model`) for any other id."""
    if model_id.startswith("ft:") and ":ckpt-step-" in model_id:
        ckpt = session.scalar(
            select(Checkpoint)
            .join(Job, Job.id == Checkpoint.job_id)
            .where(Checkpoint.fine_tuned_model_checkpoint == model_id, Job.team_id == team.id)
        )
        if ckpt is not None and Path(ckpt.path).is_dir():
            return _checkpoint_public(ckpt, team)
    elif model_id.startswith("ft:"):
        job = session.scalar(
            select(Job).where(Job.fine_tuned_model == model_id, Job.team_id == team.id)
        )
        if job is not None:
            return _fine_tuned_public(job, team)
    for model in _shared_models(session):
        if model.id == model_id:
            return model
    raise not_found("model", model_id, param="model")


def _locate(*, session: Session, team: Team, model_id: str) -> tuple[str, str | None] | None:
    """(what the engine loads, gguf_file) for a model id the team may use, or None."""
    if model_id in _presets():
        return model_id, None
    row = session.scalar(select(Model).where(Model.id == model_id, Model.kind == "base"))
    if row is not None:
        return row.paths[0], row.gguf_file
    if model_id.startswith("ft:"):
        if model_id.rsplit(":", 1)[-1].startswith("ckpt-step-"):
            ckpt = session.scalar(
                select(Checkpoint)
                .join(Job, Job.id == Checkpoint.job_id)
                .where(Checkpoint.fine_tuned_model_checkpoint == model_id, Job.team_id == team.id)
            )
            if ckpt is not None and Path(ckpt.path).is_dir():
                return ckpt.path, None
        else:
            job = session.scalar(
                select(Job).where(Job.fine_tuned_model == model_id, Job.team_id == team.id)
            )
            if job is not None and job.final_checkpoint and Path(job.final_checkpoint).is_dir():
                return job.final_checkpoint, None
    return None


def resolve_model(*, session: Session, team: Team, model_id: str) -> tuple[str, str | None]:
    """-> (what the engine's `model` field gets, gguf_file). 400 with param `model` if unknown."""
    found = _locate(session=session, team=team, model_id=model_id)
    if found is not None:
        return found
    raise invalid(
        f"Model {model_id!r} does not exist or you do not have access to it; "
        f"GET /v1/models lists the available ones.",
        "model",
        code="model_not_found",
    )


def resolve_for_inference(*, session: Session, team: Team, model_id: str) -> tuple[str, str | None]:
    """-> (what the serving process loads, gguf_file) for a completion request. 404 (param
    `model`) if the team cannot use it; for the model or a checkpoint of one of the team's jobs
    that has not made it yet, the 404 says so and what the job is doing."""
    found = _locate(session=session, team=team, model_id=model_id)
    if found is not None:
        return found
    job = _job_named_by(session=session, team=team, model_id=model_id)
    if job is not None:
        what = "checkpoint" if ":ckpt-step-" in model_id else "model"
        if job.status == "succeeded":
            state = f"is not available: job {job.id} succeeded, but its files are gone"
        elif job.status in TERMINAL_STATUSES:
            state = f"does not exist: job {job.id} ended {job.status} without making it"
        else:
            status = job.status.replace("_", " ")
            state = f"does not exist yet: job {job.id} is still {status}"
        raise APIError(
            404, f"The {what} {model_id!r} {state}.", param="model", code="model_not_ready"
        )
    raise APIError(
        404,
        f"Model {model_id!r} does not exist or you do not have access to it; "
        f"GET /v1/models lists the available ones.",
        param="model",
        code="model_not_found",
    )


def _job_named_by(*, session: Session, team: Team, model_id: str) -> Job | None:
    """The team's job whose model (or one of whose checkpoints) `model_id` is."""
    if not model_id.startswith("ft:"):
        return None
    name, _, step = model_id.partition(":ckpt-step-")
    job_id = name.rsplit(":", 1)[-1]
    job = session.scalar(select(Job).where(Job.id == job_id, Job.team_id == team.id))
    if job is None or (step and not step.isdigit()):
        return None
    expected = fine_tuned_name(base=job.model, team=team, suffix=job.suffix, job_id=job.id)
    return job if name == expected else None
