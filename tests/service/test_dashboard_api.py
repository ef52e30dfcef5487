"""What the dashboard needs from the API, beyond the OpenAI shape: the jobs list filtered by
status, and the dashboard itself served at `/` without shadowing any API path."""

import httpx
from servicekit import Team, assert_error

JOBS = "/v1/fine_tuning/jobs"


def test_jobs_list_filters_by_status(team: Team, team_files):
    target, replay = team_files
    cancelled = [team.create_job(team.tiny_job(target, replay, seed=s))["id"] for s in (1, 2)]
    for job_id in cancelled:
        assert team.ok(team.post(f"{JOBS}/{job_id}/cancel"))["status"] == "cancelled"
    paused = team.create_job(team.tiny_job(target, replay, seed=3))["id"]
    team.wait_job(paused, "queued", "running")
    team.post(f"{JOBS}/{paused}/pause")
    team.wait_job(paused, "paused")

    def listed(*statuses: str) -> list[str]:
        return [j["id"] for j in team.list_all(JOBS, status=list(statuses))]

    assert listed("cancelled") == cancelled[::-1]  # newest first, as unfiltered
    assert listed("paused") == [paused]
    assert listed("paused", "cancelled") == [paused, *cancelled[::-1]]
    assert listed("succeeded") == []
    assert set(listed()) == {paused, *cancelled}
    # paging within a filter
    page = team.ok(team.get(JOBS, params={"status": "cancelled", "limit": 1}))
    assert [j["id"] for j in page["data"]] == [cancelled[1]] and page["has_more"], page
    err = assert_error(team.get(JOBS, params={"status": ["paused", "finished"]}), 400)
    assert err["param"] == "status.1" and "finished" not in err["message"].split(":")[0], err
    team.post(f"{JOBS}/{paused}/cancel")


def test_dashboard_is_served_without_shadowing_the_api(service, team: Team):
    base = service.url
    for path in ("/", "/jobs/ftjob-does-not-exist", "/files", "/compare?jobs=a,b"):
        resp = httpx.get(base + path)
        assert resp.status_code == 200 and "text/html" in resp.headers["content-type"], path
        assert "<title>ReplayFT</title>" in resp.text, (path, resp.text[:300])
    # API paths keep their own answers
    assert httpx.get(base + "/healthz").json() == {"status": "ok"}
    assert httpx.get(base + "/openapi.json").json()["info"]["title"] == "ReplayFT"
    assert "swagger" in httpx.get(base + "/docs").text.lower()
    assert_error(httpx.get(base + "/v1/no-such-thing"), 404)
    assert_error(httpx.post(base + "/v1/no-such-thing"), 404)
    assert_error(httpx.get(base + "/v1/fine_tuning/jobs"), 401)  # no key: not the page
    assert_error(team.delete(JOBS), 405)


def test_plan_answers_the_schedule_with_its_lr_curve(team: Team, team_files):
    target, replay = team_files
    body = team.tiny_job(target, replay, fraction=0.25, n_epochs=2)
    plan = team.ok(team.post("/v1/fine_tuning/plan", json=body))
    total = plan["total_steps"]
    assert total > 1 and plan["replay_fraction"] == 0.25, plan
    assert sum(s["steps"] for s in plan["stages"]) == total, plan["stages"]
    assert plan["target_tokens"] > 0 and plan["generic_tokens"] > 0, plan
    curve = plan["lr_curve"]
    assert curve["step"][0] == 1 and curve["step"][-1] == total, curve["step"][-3:]
    assert len(curve["step"]) == len(curve["lr"]) == min(total, 500)
    assert curve["lr"][0] == plan["stages"][0]["lr_at_start"], (curve["lr"][:2], plan["stages"])
    assert curve["lr"][-1] == plan["stages"][-1]["lr_at_end"], (curve["lr"][-2:], plan["stages"])
    assert max(curve["lr"]) <= plan["peak_lr"], plan["peak_lr"]
    # nothing was created, and a bad knob names its field
    assert team.list_all(JOBS) == []
    bad = team.tiny_job(target, replay, fraction=1.5)
    assert_error(team.post("/v1/fine_tuning/plan", json=bad), 400, param="replay.fraction")
