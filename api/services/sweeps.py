"""Sweeps: one request, a family of ordinary fine-tuning jobs, and their data-efficiency report.

Members. For replay fractions R, optional target stage-2 allocations A (mid-training) and
reference subsets S, a sweep runs
  - a configuration job per (r, a) in R x A on all the target data, and
  - a reference job per s in S: no replay (r = 0, and a = 1 when A is given: all target data at
    the end) on the nested subset s of the target documents (`target_subset_fraction`; the engine
    holds out validation documents first, so every member is scored on the same sequences).
S always includes 1, the baseline S0 of every multiplier. A job that fills both roles (r = 0 on all
the data) is created once. Every member gets the sweep's model, data, seed and hyperparameters,
so the compute rule is the engine's: fine-tuning with replay takes N = epochs x T / ((1 - r) B)
steps, and a reference run on subset s takes about s times the steps of the full run.

Members are ordinary jobs (they show in /v1/fine_tuning/jobs with `metadata.sweep_id`), created in
one transaction with their tasks (through the outbox), each on its own: as many run at once as there are
training workers. Validation happens before anything is written, so a rejected sweep leaves no
job behind.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError, invalid
from api.schemas.jobs import JobCreate
from api.schemas.sweeps import MAX_MEMBERS, SweepCreate, SweepMemberPublic, SweepPublic
from api.services import idempotency
from api.services import jobs as job_service
from api.services.pages import page
from api.services.sweep_report import (
    MemberResult,
    build_report,
    count_statuses,
    sweep_status,
)
from control import lifecycle
from control.db.models import File, Job, JobMetric, Sweep, SweepMember, Team, new_id
from control.queue import TaskQueue
from control.settings import Settings

# engine/job field -> the sweep field a client sets, for errors found while building a member
_SWEEP_PARAMS = {
    "replay.fraction": "replay_fractions",
    "replay.target_stage2_allocation": "target_stage2_allocations",
    "replay.stage2_duration": "target_stage2_allocations",
    "hyperparameters.target_subset_fraction": "reference_subsets",
}


# ---------------------------------------------------------------------------- request checks
def _check_unique(values: list[float] | None, param: str) -> None:
    if values and len(set(values)) != len(values):
        dup = next(v for v in values if values.count(v) > 1)
        raise invalid(f"{param}: {dup:g} appears more than once.", param)


def _check_request(body: SweepCreate) -> None:
    """What the schema cannot check (`SweepCreate` declares each value's bounds and the lists'
    lengths): no value twice, and at least 3 target amounts for the efficiency fit."""
    _check_unique(body.replay_fractions, "replay_fractions")
    _check_unique(body.target_stage2_allocations, "target_stage2_allocations")
    _check_unique(body.reference_subsets, "reference_subsets")
    if len(set(body.reference_subsets) | {1.0}) < 3:
        raise invalid(
            "reference_subsets: the efficiency fit needs at least 3 target amounts (1 is always "
            f"included); got {sorted(set(body.reference_subsets) | {1.0})}.",
            "reference_subsets",
        )


def plan_members(body: SweepCreate) -> list[dict[str, Any]]:
    """The member jobs of a request: dicts of r, a, subset and roles, configurations first."""
    allocations: list[float | None] = list(body.target_stage2_allocations or [None])
    reference_a = 1.0 if body.target_stage2_allocations else None
    members: dict[tuple, dict[str, Any]] = {}

    def member(r: float, a: float | None, subset: float) -> dict[str, Any]:
        key = (r, a, subset)
        if key not in members:
            members[key] = {
                "replay_fraction": r,
                "target_stage2_allocation": a,
                "target_subset_fraction": subset,
                "is_configuration": False,
                "is_reference": False,
            }
        return members[key]

    for a in allocations:
        for r in body.replay_fractions:
            member(float(r), a, 1.0)["is_configuration"] = True
    for subset in sorted(set(body.reference_subsets) | {1.0}, reverse=True):
        member(0.0, reference_a, float(subset))["is_reference"] = True
    return list(members.values())


def _member_body(body: SweepCreate, sweep_id: str, m: dict[str, Any]) -> JobCreate:
    """The fine-tuning job request of one member: the sweep's fields plus its r, a and subset."""
    label = f"r={m['replay_fraction']:g}"
    if m["target_stage2_allocation"] is not None:
        label += f" a={m['target_stage2_allocation']:g}"
    if m["target_subset_fraction"] < 1:
        label += f" subset={m['target_subset_fraction']:g}"
    data = body.model_dump(
        exclude={"replay", "replay_fractions", "target_stage2_allocations", "reference_subsets"},
        exclude_none=True,
    )
    data["metadata"] = {
        **(body.metadata or {}),
        "sweep_id": sweep_id,
        "sweep_member": label,
        "sweep_roles": ",".join(_roles(m)),
    }
    replay = {
        "dataset": body.replay.dataset if body.replay else None,
        "validation_dataset": body.replay.validation_dataset if body.replay else None,
        "fraction": m["replay_fraction"],
        "target_stage2_allocation": m["target_stage2_allocation"],
    }
    data["replay"] = {k: v for k, v in replay.items() if v is not None}
    if m["target_subset_fraction"] < 1:
        # method.supervised.hyperparameters wins over the top-level form (merged_hyperparameters)
        method = data.setdefault("method", {"type": "supervised"})
        supervised = method.get("supervised") or {}
        method["supervised"] = supervised
        hp = supervised.setdefault("hyperparameters", {})
        hp["target_subset_fraction"] = m["target_subset_fraction"]
    return JobCreate.model_validate(data)


# ---------------------------------------------------------------------------- create
def create_sweep(
    *,
    session: Session,
    team: Team,
    body: SweepCreate,
    settings: Settings,
    queue: TaskQueue,
    idempotency_key: str | None = None,
) -> tuple[Sweep, bool]:
    """-> (sweep, created). A repeated Idempotency-Key returns the first sweep, created=False,
    and launches nothing: a retried request must not start a second family of jobs."""
    return idempotency.create_once(
        session=session,
        team=team,
        key=idempotency_key,
        kind="sweep",
        make=lambda: _add_sweep(
            session=session, team=team, body=body, settings=settings, queue=queue
        ),
    )


def _member_error(exc: APIError, member_body: JobCreate) -> APIError:
    """A member's refusal, naming the sweep's field and the member."""
    param = _SWEEP_PARAMS.get(exc.param or "", exc.param)
    message = exc.message
    if exc.param and message.startswith(f"{exc.param}:"):
        message = message[len(exc.param) + 1 :].strip()
    where = member_body.metadata["sweep_member"]
    if param and not message.startswith(param):
        message = f"{param}: {message}"
    return APIError(
        exc.status_code,
        f"{message} (member {where})",
        param=param,
        code=exc.code,
        headers=exc.headers,
    )


def _planned(body: SweepCreate) -> list[dict[str, Any]]:
    _check_request(body)
    planned = plan_members(body)
    if len(planned) > MAX_MEMBERS:
        raise invalid(
            f"replay_fractions: this sweep would launch {len(planned)} jobs; the limit is "
            f"{MAX_MEMBERS}.",
            "replay_fractions",
        )
    return planned


def plan_sweep(*, session: Session, team: Team, body: SweepCreate, settings: Settings) -> dict:
    """What a sweep request would launch, without launching it: each member checked as its job
    would be, with its step count as estimated at submission (from the training file's token
    count; exact once the member's data is tokenized), and the total."""
    from control.limits import estimated_steps
    from replay_engine.spec import JobSpec

    training = session.scalar(
        select(File).where(File.id == body.training_file, File.team_id == team.id)
    )
    tokens = ((training.stats if training else None) or {}).get("tokens")
    members = []
    for m in _planned(body):
        member_body = _member_body(body, "sweep-plan", m)
        try:
            spec = job_service.build_spec(
                session=session, team=team, body=member_body, settings=settings
            )
        except APIError as exc:
            raise _member_error(exc, member_body) from None
        steps = estimated_steps(JobSpec.model_validate(spec), tokens)
        members.append({**m, "roles": _roles(m), "estimated_steps": steps})
    known = [m["estimated_steps"] for m in members if m["estimated_steps"] is not None]
    return {
        "object": "sweep.plan",
        "members": members,
        "member_count": len(members),
        "total_estimated_steps": sum(known) if len(known) == len(members) else None,
    }


def _add_sweep(
    *, session: Session, team: Team, body: SweepCreate, settings: Settings, queue: TaskQueue
) -> Sweep:
    """Check a sweep request and add the sweep, its member jobs and their tasks to the session
    (uncommitted: they go together or not at all). Raises APIError(400) naming the field."""
    planned = _planned(body)
    sweep_id = new_id("sweep")
    sweep = Sweep(
        id=sweep_id,
        team_id=team.id,
        model=body.model,
        training_file=body.training_file,
        seed=body.seed if body.seed is not None else 0,
        replay_fractions=list(body.replay_fractions),
        target_stage2_allocations=body.target_stage2_allocations,
        reference_subsets=sorted(set(body.reference_subsets) | {1.0}),
        request=body.model_dump(mode="json", exclude_none=True),
        sweep_metadata=body.metadata,
    )
    session.add(sweep)
    session.flush()
    for m in planned:
        member_body = _member_body(body, sweep_id, m)
        try:
            job = job_service.add_job(
                session=session, team=team, body=member_body, settings=settings, queue=queue
            )
        except APIError as exc:
            raise _member_error(exc, member_body) from None
        session.add(SweepMember(sweep_id=sweep_id, job_id=job.id, **m))
    return sweep


# ---------------------------------------------------------------------------- reads
def members_of(session: Session, sweep: Sweep) -> list[tuple[SweepMember, Job]]:
    rows = session.execute(
        select(SweepMember, Job)
        .join(Job, Job.id == SweepMember.job_id)
        .where(SweepMember.sweep_id == sweep.id)
        .order_by(SweepMember.pk)
    )
    return [(m, j) for m, j in rows]


def list_sweeps(
    *, session: Session, team: Team, after: str | None, limit: int
) -> tuple[list[Sweep], bool]:
    query = select(Sweep).where(Sweep.team_id == team.id)
    scope = Sweep.team_id == team.id
    return page(
        session,
        query,
        model=Sweep,
        order=Sweep.pk,
        scope=scope,
        after=after,
        limit=limit,
        what="sweep",
    )


def cancel_sweep(*, session: Session, sweep: Sweep) -> Sweep:
    """Cancel every unfinished member in one transaction; 409 when none is left to cancel. The
    members' rows are read again and locked (in id order) first, as a single job's cancel does
    (api.services.jobs._transition)."""
    members = sorted((j for _, j in members_of(session, sweep)), key=lambda j: j.pk)
    for job in members:
        session.refresh(job, with_for_update=True)
    unfinished = [j for j in members if j.status not in lifecycle.TERMINAL_STATUSES]
    if not unfinished:
        raise APIError(
            409,
            f"Sweep {sweep.id} has no unfinished jobs left to cancel.",
            code="invalid_state",
        )
    lifecycle.cancel_all(session, unfinished, reason=f"with sweep {sweep.id}")
    session.commit()
    return sweep


def _roles(m: SweepMember | dict[str, Any]) -> list[str]:
    get = m.get if isinstance(m, dict) else lambda name: getattr(m, name)
    return [r for r in ("configuration", "reference") if get(f"is_{r}")]


def to_public(session: Session, sweep: Sweep) -> SweepPublic:
    pairs = members_of(session, sweep)
    statuses = [j.status for _, j in pairs]
    request = sweep.request or {}
    finished = [j.finished_at for _, j in pairs if j.finished_at is not None]
    status = sweep_status(statuses)
    members = []
    for m, job in pairs:
        public = job_service.to_public(job)
        members.append(
            SweepMemberPublic(
                job_id=job.id,
                status=job.status,
                roles=_roles(m),
                replay_fraction=m.replay_fraction,
                target_stage2_allocation=m.target_stage2_allocation,
                target_subset_fraction=m.target_subset_fraction,
                progress=public.progress,
                error=public.error,
                fine_tuned_model=job.fine_tuned_model,
            )
        )
    hp = dict(request.get("hyperparameters") or {})
    hp.update(((request.get("method") or {}).get("supervised") or {}).get("hyperparameters") or {})
    return SweepPublic(
        id=sweep.id,
        created_at=sweep.created_at,
        finished_at=max(finished) if finished and status not in ("queued", "running") else None,
        status=status,
        model=sweep.model,
        training_file=sweep.training_file,
        validation_file=request.get("validation_file"),
        seed=sweep.seed,
        metadata=sweep.sweep_metadata,
        replay=request.get("replay"),
        hyperparameters=hp,
        replay_fractions=sweep.replay_fractions,
        target_stage2_allocations=sweep.target_stage2_allocations,
        reference_subsets=sweep.reference_subsets,
        counts=count_statuses(statuses),
        members=members,
    )


def _summary(session: Session, job_id: str) -> dict[str, Any]:
    record = session.scalar(
        select(JobMetric.record)
        .where(JobMetric.job_id == job_id, JobMetric.type == "summary")
        .order_by(JobMetric.pk.desc())
        .limit(1)
    )
    return record or {}


def member_results(session: Session, sweep: Sweep) -> list[MemberResult]:
    results = []
    for m, job in members_of(session, sweep):
        summary = _summary(session, job.id) if job.status == "succeeded" else {}
        results.append(
            MemberResult(
                job_id=job.id,
                status=job.status,
                replay_fraction=m.replay_fraction,
                target_stage2_allocation=m.target_stage2_allocation,
                target_subset_fraction=m.target_subset_fraction,
                is_configuration=m.is_configuration,
                is_reference=m.is_reference,
                target_sequences=(job.plan or {}).get("target_sequences"),
                final_val_loss_target=summary.get("final_val_loss_target"),
                final_val_loss_generic=summary.get("final_val_loss_generic"),
                generic_change=summary.get("generic_change"),
                eval_scores={
                    name: entry.get("final_accuracy")
                    for name, entry in (summary.get("evals") or {}).items()
                },
                loss_spike=summary.get("loss_spike"),
                error=job.error,
                progress=job.progress,
            )
        )
    return results


def report(*, session: Session, sweep: Sweep) -> dict[str, Any]:
    return build_report(sweep.id, member_results(session, sweep))
