"""Per-team limits (control.limits) through the API: admins set them with PATCH
/v1/admin/teams/{id}; a submission past the queue limit or a spent monthly quota is a 429 naming
the limit (with Retry-After at the month's end for quotas), and a refused sweep creates nothing."""

import time

from appkit import JOBS, SWEEPS, set_job, tiny_job
from servicekit import assert_error, sweep_body

TEAMS = "/v1/admin/teams"


def team_row(admin, team) -> dict:
    listed = admin.ok(admin.get(TEAMS))["data"]
    return next(t for t in listed if t["id"] == team.id)


def set_limits(admin, team, **limits) -> dict:
    resp = admin.request("PATCH", f"{TEAMS}/{team.id}", json={"limits": limits})
    return admin.ok(resp)


def test_admins_set_and_clear_a_teams_limits(admin, team, other_team):
    row = team_row(admin, team)
    assert (
        row["limits"]
        == row["effective_limits"]
        == {
            "max_running_jobs": None,
            "max_queued_jobs": None,
            "monthly_tokens": None,
            "monthly_gpu_hours": None,
        }
    )
    assert row["month_usage"] == {"tokens": 0, "gpu_hours": 0.0}

    changed = set_limits(admin, team, max_running_jobs=2, monthly_gpu_hours=1.5)
    assert changed["limits"]["max_running_jobs"] == 2
    assert changed["limits"]["monthly_gpu_hours"] == 1.5
    # a field left out is kept; null puts the default back
    changed = set_limits(admin, team, max_queued_jobs=5, max_running_jobs=None)
    assert changed["limits"] == {
        "max_running_jobs": None,
        "max_queued_jobs": 5,
        "monthly_tokens": None,
        "monthly_gpu_hours": 1.5,
    }
    assert team_row(admin, team)["limits"] == changed["limits"]
    assert team_row(admin, other_team)["limits"]["max_queued_jobs"] is None  # one team only

    patch = f"{TEAMS}/{team.id}"
    for body, param in [
        ({"limits": {"max_running_jobs": 0}}, "limits.max_running_jobs"),
        ({"limits": {"monthly_tokens": "lots"}}, "limits.monthly_tokens"),
        ({"limits": {"monthly_gpu_hours": -1}}, "limits.monthly_gpu_hours"),
        ({"limits": {"max_jobs": 3}}, "limits.max_jobs"),
        ({}, "limits"),
    ]:
        assert_error(admin.request("PATCH", patch, json=body), 400, param)
    assert_error(admin.request("PATCH", f"{TEAMS}/org-nope", json={"limits": {}}), 404)
    assert_error(team.request("PATCH", patch, json={"limits": {"max_queued_jobs": 1000}}), 403)


def test_the_queue_limit_refuses_a_job_past_it_with_a_429_naming_it(admin, team, team_files):
    target, replay = team_files
    set_limits(admin, team, max_queued_jobs=2)
    first = team.create_job(tiny_job(target))
    team.create_job(tiny_job(target))
    err = assert_error(team.post(JOBS, json=tiny_job(target)), 429, "max_queued_jobs")
    assert "2 jobs waiting" in err["message"] and err["type"] == "rate_limit_error", err
    # a sweep of four members does not fit either, and leaves nothing behind
    assert_error(team.post(SWEEPS, json=sweep_body(target, replay)), 429, "max_queued_jobs")
    assert len(team.list_all(JOBS)) == 2 and team.list_all(SWEEPS) == []
    # a job that started no longer waits: the next one fits
    set_job(first["id"], status="running", started_at=int(time.time()))
    team.create_job(tiny_job(target))


def test_a_spent_monthly_quota_is_a_429_until_the_month_ends(admin, team, team_files):
    from control.limits import next_month_start

    target = team_files[0]
    done = team.create_job(tiny_job(target))
    now = int(time.time())
    set_job(done["id"], status="succeeded", started_at=now - 3600, finished_at=now,
            trained_tokens=5000)  # fmt: skip
    assert team_row(admin, team)["month_usage"] == {"tokens": 5000, "gpu_hours": 1.0}

    set_limits(admin, team, monthly_tokens=6000)
    team.create_job(tiny_job(target))  # 5,000 of 6,000 used: still allowed
    set_limits(admin, team, monthly_tokens=5000)
    resp = team.post(JOBS, json=tiny_job(target))
    err = assert_error(resp, 429, "monthly_tokens")
    assert "5,000 of its 5,000 tokens" in err["message"], err
    wait = int(resp.headers["Retry-After"])
    assert abs(time.time() + wait - next_month_start(time.time())) <= 5, wait

    set_limits(admin, team, monthly_tokens=None, monthly_gpu_hours=0.5)
    err = assert_error(team.post(JOBS, json=tiny_job(target)), 429, "monthly_gpu_hours")
    assert "1.00 of its 0.50 GPU-hours" in err["message"], err
    set_limits(admin, team, monthly_gpu_hours=None)
    team.create_job(tiny_job(target))


def test_priority_is_a_bounded_integer_shown_on_the_job(team, team_files):
    target = team_files[0]
    job = team.create_job(tiny_job(target, priority=7))
    assert job["priority"] == 7
    assert team.create_job(tiny_job(target))["priority"] == 0
    for bad in (101, -101, "high", 1.5):
        assert_error(team.post(JOBS, json=tiny_job(target, priority=bad)), 400, "priority")
