"""Fair share (control.scheduling) on the database: which queued job a free worker claims next.
Jobs are created through the API and moved between states the way workers move them; the claims
are the workers' own `claim_next`. (Its own module: the pick looks at every queued job in the
database, and the fast tier gives each module a database of its own.)"""

import itertools
import time

import pytest
from appkit import mint_key, set_job, target_lines, tiny_job
from sqlalchemy import select

from control import scheduling
from control.db.models import Job, OutboxMessage
from control.db.session import session_scope


@pytest.fixture
def teams(client, processed_file):
    """Three teams A, B, C, each with a processed fine-tune file: [(team, file id)]."""
    made = []
    for name in ("team-a", "team-b", "team-c"):
        team = mint_key(client, f"{name}-{time.monotonic_ns()}")
        made.append((team, processed_file(team, target_lines(), "fine-tune")["id"]))
    return made


def queue_jobs(team, file_id, *priorities):
    """Jobs of `team`, queued in this order, with these priorities: their ids."""
    ids = []
    for priority in priorities:
        job = team.create_job(tiny_job(file_id, priority=priority))
        set_job(job["id"], status="queued")
        ids.append(job["id"])
    return ids


START_TIMES = itertools.count(int(time.time()))  # one start a second, as if each took that long


def run_one(owner="worker-1"):
    """A worker takes the next job and trains it to the end: its id (None if nothing started)."""
    job_id = scheduling.claim_next(owner)
    if job_id is not None:
        set_job(job_id, started_at=next(START_TIMES), status="succeeded", lease_owner=None)
    return job_id


def test_one_worker_takes_teams_in_turn_and_priority_within_a_team(teams):
    (a, fa), (b, fb), (c, fc) = teams
    a1, a2, a3 = queue_jobs(a, fa, 0, 0, 5)  # A queued first, and most; its a3 matters most
    b1, b2 = queue_jobs(b, fb, 0, 0)
    (c1,) = queue_jobs(c, fc, 0)
    started = [run_one() for _ in range(7)]
    # in arrival order it would be a1 a2 a3 b1 b2 c1: A would hold the worker for three jobs
    assert started == [a3, b1, c1, a1, b2, a2, None]


def test_the_team_with_least_running_work_goes_first_and_limits_hold(teams, admin):
    (a, fa), (b, fb), (c, fc) = teams
    a1, a2 = queue_jobs(a, fa, 0, 0)
    (b1,) = queue_jobs(b, fb, 0)
    # A has one job running on 4 GPUs, B one on 1: B, then C, then A
    running_a, running_b = queue_jobs(a, fa, 0)[0], queue_jobs(b, fb, 0)[0]
    set_job(running_a, status="running", spec={**_spec(running_a), "distributed": {"gpus_per_node": 4, "nodes": 1}})  # fmt: skip
    set_job(running_b, status="running")
    (c1,) = queue_jobs(c, fc, 0)
    with session_scope() as session:
        assert scheduling.fair_order(session) == [c1, b1, a1]

    # B may run one job at a time: its queued job waits while the other runs, and nothing else
    resp = admin.request("PATCH", f"/v1/admin/teams/{b.id}", json={"limits": {"max_running_jobs": 1}})  # fmt: skip
    assert resp.status_code == 200, resp.text
    with session_scope() as session:
        assert scheduling.fair_order(session) == [c1, a1]
    assert scheduling.claim_next("worker-2") == c1  # whichever message brought the worker
    assert scheduling.claim_next("worker-3") == a1
    assert scheduling.claim_next("worker-4") == a2
    assert scheduling.claim_next("worker-5") is None  # b1 waits for B's running job

    # when B's running job ends, b1's task is due at once: the relay offers it again now
    with session_scope() as session:
        session.add(OutboxMessage(task="replayft.run_job", args=[b1], subject=b1, due_at=1e12))
        session.commit()
    set_job(running_b, status="succeeded", lease_owner=None)
    with session_scope() as session:
        scheduling.wake_team(session, b.id)
        session.commit()
        due = session.scalar(select(OutboxMessage.due_at).where(OutboxMessage.subject == b1))
    assert due <= time.time()
    assert scheduling.claim_next("worker-6") == b1


def test_a_job_its_stopping_worker_still_holds_is_not_taken(teams):
    (a, fa), (b, fb), _ = teams
    (a1,) = queue_jobs(a, fa, 0)
    (b1,) = queue_jobs(b, fb, 0)
    # paused and resumed quickly: queued again, but its previous worker holds the lease
    set_job(a1, lease_owner="worker-old", heartbeat_at=time.time())
    assert scheduling.claim_next("worker-1") == b1
    assert scheduling.claim_next("worker-2") is None
    set_job(a1, heartbeat_at=time.time() - 3600)  # that worker died: its lease has lapsed
    assert scheduling.claim_next("worker-2") == a1


def test_a_team_whose_monthly_quota_ran_out_keeps_its_admitted_jobs_queued(teams, admin):
    (a, fa), (b, fb), _ = teams
    (a1,) = queue_jobs(a, fa, 0)  # admitted while A had tokens left
    (b1,) = queue_jobs(b, fb, 0)
    (done,) = queue_jobs(a, fa, 0)  # then one of A's jobs trained 2000 tokens this month
    now = int(time.time())
    set_job(done, status="succeeded", started_at=now - 60, finished_at=now, trained_tokens=2000)
    limits = {"limits": {"monthly_tokens": 2000}}
    resp = admin.request("PATCH", f"/v1/admin/teams/{a.id}", json=limits)
    assert resp.status_code == 200, resp.text
    with session_scope() as session:
        assert scheduling.fair_order(session) == [b1]  # a1 waits for next month
    assert scheduling.claim_next("worker-1") == b1
    assert scheduling.claim_next("worker-2") is None
    # the worker that found nothing to start says why on the job its message offered, once
    for _ in range(2):
        with session_scope() as session:
            assert scheduling.note_quota_wait(session, a1) is True
            assert scheduling.note_quota_wait(session, b1) is False  # running, not waiting
            session.commit()
    events = a.list_all(f"/v1/fine_tuning/jobs/{a1}/events")
    waits = [e for e in events if e["message"].startswith("Waiting to start")]
    assert len(waits) == 1 and waits[0]["level"] == "warn", events
    assert "2,000 of its 2,000 tokens this month" in waits[0]["message"]

    limits = {"limits": {"monthly_tokens": 5000}}  # an admin raises the quota: a1 may start
    assert admin.request("PATCH", f"/v1/admin/teams/{a.id}", json=limits).status_code == 200
    assert scheduling.claim_next("worker-2") == a1


def _spec(job_id):
    with session_scope() as session:
        return dict(session.scalar(select(Job.spec).where(Job.id == job_id)))
