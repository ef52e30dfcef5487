"""`GET /v1/usage`: per team and UTC day, from the jobs' own rows; other teams only for admins."""

import datetime as dt

from appkit import set_job, tiny_job
from servicekit import assert_error

USAGE = "/v1/usage"
DAY1 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp()  # 2026-11-02 00:00 UTC
HOUR = 3600


def rows(client, **params):
    resp = client.get(USAGE, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_a_teams_days_count_jobs_tokens_and_gpu_seconds(team, other_team, team_files, admin):
    target = team_files[0]
    ok, bad, ddp = (team.create_job(tiny_job(target)) for _ in range(3))
    # created on day 1; `ok` trains 2 h and succeeds on day 2, `bad` fails on day 1 after
    # 30 min, `ddp` (2 GPUs x 2 machines) trains 1 h and succeeds on day 2
    set_job(ok["id"], created_at=int(DAY1 + HOUR), started_at=int(DAY1 + 23 * HOUR))
    set_job(ok["id"], finished_at=int(DAY1 + 25 * HOUR), status="succeeded", trained_tokens=1000)
    set_job(bad["id"], created_at=int(DAY1 + HOUR), started_at=int(DAY1 + 2 * HOUR))
    set_job(bad["id"], finished_at=int(DAY1 + 2.5 * HOUR), status="failed", trained_tokens=50)
    set_job(ddp["id"], created_at=int(DAY1 + 2 * HOUR), started_at=int(DAY1 + 30 * HOUR))
    set_job(ddp["id"], finished_at=int(DAY1 + 31 * HOUR), status="succeeded", trained_tokens=7)
    set_job(ddp["id"], spec={**_spec(ddp), "distributed": {"gpus_per_node": 2, "nodes": 2}})

    got = rows(team, start_date="2026-11-01", end_date="2026-11-03")
    assert [(r["date"], r["team"]) for r in got] == [
        ("2026-11-02", team.name),
        ("2026-11-03", team.name),
    ], got
    day1, day2 = got
    assert (day1["jobs_created"], day1["jobs_failed"], day1["jobs_succeeded"]) == (3, 1, 0)
    assert day1["trained_tokens"] == 0  # a failed job's tokens are not counted
    assert day1["gpu_seconds"] == 0.5 * HOUR
    assert (day2["jobs_created"], day2["jobs_succeeded"]) == (0, 2)
    assert day2["trained_tokens"] == 1007
    assert day2["gpu_seconds"] == 2 * HOUR + 4 * HOUR

    # the window cuts by day; another team sees none of it
    assert [r["date"] for r in rows(team, start_date="2026-11-03", end_date="2026-11-03")] == [
        "2026-11-03"
    ]
    assert rows(other_team, start_date="2026-11-01", end_date="2026-11-03") == []

    # admins see any team, or all of them; others get 403
    named = rows(admin, start_date="2026-11-01", end_date="2026-11-03", team_name=team.name)
    assert named == got
    every = rows(admin, start_date="2026-11-01", end_date="2026-11-03", team_name="*")
    assert [r for r in every if r["team"] == team.name] == got
    assert_error(team.get(USAGE, params={"team_name": other_team.name}), 403)
    assert_error(admin.get(USAGE, params={"team_name": "no such team"}), 404, "team_name")


def _spec(job):
    from control.db.models import Job
    from control.db.session import session_scope

    with session_scope() as session:
        return dict(session.query(Job).filter(Job.id == job["id"]).one().spec)


def test_bad_windows_are_a_400_naming_the_field(team):
    assert_error(team.get(USAGE, params={"start_date": "2026-11-05", "end_date": "2026-11-01"}),
                 400, "start_date")  # fmt: skip
    assert_error(team.get(USAGE, params={"start_date": "2020-01-01", "end_date": "2026-01-01"}),
                 400, "start_date")  # fmt: skip
    assert_error(team.get(USAGE, params={"end_date": "9999-12-31"}), 400, "end_date")
    assert_error(team.get(USAGE, params={"end_date": "0001-01-01"}), 400, "end_date")
    assert_error(team.get(USAGE, params={"start_date": "0001-01-01"}), 400, "start_date")
    assert team.get(USAGE, params={"end_date": "1970-01-05"}).status_code == 200
    assert_error(team.get(USAGE, params={"start_date": "yesterday"}), 400, "start_date")
    assert_error(team.get(USAGE, params={"team_name": "a\x00b"}), 400, "team_name")
