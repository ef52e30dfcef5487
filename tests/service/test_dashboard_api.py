"""What the dashboard needs from the API, beyond the OpenAI shape: the jobs list filtered by
status, the plan's LR curve, a stream that starts after what the page already has and carries
progress and a pending pause as they happen, checkpoint download links a browser can follow
without the key, and the dashboard itself served at `/` without shadowing any API path."""

import base64
import hashlib
import hmac
import io
import json
import tarfile
import time
from pathlib import Path

import httpx
from servicekit import JOBS, Team, assert_error


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


def sse_messages(team: Team, job_id: str, **params) -> list[tuple[str, dict]]:
    """Every (event, data) of a finished job's stream (the server ends it)."""
    messages = []
    with team.http.stream("GET", f"{JOBS}/{job_id}/stream", params=params, timeout=120) as resp:
        assert resp.status_code == 200, resp.read()[:500]
        event = None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                messages.append((event, json.loads(line.split(":", 1)[1])))
    return messages


def test_stream_resumes_after_a_step_and_an_event(team: Team, team_files):
    target, replay = team_files
    job = team.create_job(team.tiny_job(target, replay, n_epochs=0.3))
    job = team.wait_job(job["id"], "succeeded")
    total = job["progress"]["total_steps"]
    assert total >= 4, job["progress"]

    whole = sse_messages(team, job["id"])
    steps = [d["step"] for e, d in whole if e == "metrics" and d["type"] == "train"]
    assert steps == list(range(1, total + 1)), steps
    events = [d for e, d in whole if e == "event"]
    assert whole[-1] == ("done", {"status": "succeeded"}), whole[-1]
    job_objects = [d for e, d in whole if e == "job"]
    assert job_objects[-1]["summary"]["final_val_loss_target"] is not None, job_objects[-1]

    half = total // 2
    mid = events[len(events) // 2]
    rest = sse_messages(team, job["id"], since_step=half, after=mid["id"])
    metrics = [d for e, d in rest if e == "metrics"]
    assert metrics and all(d["step"] > half for d in metrics), [d["step"] for d in metrics]
    assert [d["step"] for d in metrics if d["type"] == "train"] == list(range(half + 1, total + 1))
    later = [d["id"] for e, d in rest if e == "event"]
    assert later == [e["id"] for e in events[len(events) // 2 + 1 :]], later

    assert_error(
        team.get(f"{JOBS}/{job['id']}/stream", params={"after": "ftevent-nope"}), 400, "after"
    )


def test_stream_sends_progress_while_running_and_a_pause_at_once(team: Team, team_files):
    target, replay = team_files
    job = team.create_job(team.tiny_job(target, replay, n_epochs=40))  # ~1300 steps
    team.wait_job(job["id"], "running")
    progress_steps: list[int] = []
    jobs_seen: list[dict] = []
    paused_by_request = None
    # skip the history: only what happens from now on
    params = {"since_step": 2**31 - 1}
    with team.http.stream("GET", f"{JOBS}/{job['id']}/stream", params=params, timeout=120) as resp:
        assert resp.status_code == 200, resp.read()[:500]
        event = None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                continue
            if not line.startswith("data:"):
                continue
            data = json.loads(line.split(":", 1)[1])
            if event == "progress":
                assert set(data) >= {"step", "total_steps", "stage", "tokens_seen", "eta_seconds"}
                progress_steps.append(data["step"])
            elif event == "job":
                jobs_seen.append(data)
            # the header moves while the status stays `running`: then pause
            if paused_by_request is None and len(set(progress_steps)) >= 3:
                paused_by_request = team.ok(team.post(f"{JOBS}/{job['id']}/pause"))
                assert paused_by_request["pausing"] is True, paused_by_request
    assert progress_steps == sorted(progress_steps), progress_steps
    assert len(set(progress_steps)) >= 3, progress_steps
    statuses = [(j["status"], j["pausing"]) for j in jobs_seen]
    # first the job as it was, then the pending pause (unless the worker's checkpoint beat the
    # stream's next poll: the pause's own answer said pausing), then paused (the stream ends)
    assert statuses in (
        [("running", False), ("running", True), ("paused", False)],
        [("running", False), ("paused", False)],
    ), statuses
    assert jobs_seen[-1]["progress"]["step"] >= progress_steps[-1], jobs_seen[-1]["progress"]
    team.post(f"{JOBS}/{job['id']}/cancel")


def _token_for(key: str, key_id: str, job_id: str, checkpoint_id: str, expires_at: int) -> str:
    """A download token as the server signs them (api.services.download_links), made with the
    team's own key: to forge an expired one."""
    message = f"{job_id}/{checkpoint_id}/{expires_at}".encode()
    digest = hmac.new(hashlib.sha256(key.encode()).digest(), message, hashlib.sha256).digest()
    sig = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return f"{key_id}.{expires_at}.{sig}"


def test_checkpoint_download_link_works_without_the_key(
    service, team: Team, other_team: Team, team_files
):
    target, replay = team_files
    job = team.wait_job(
        team.create_job(team.tiny_job(target, replay, n_epochs=0.2))["id"], "succeeded"
    )
    ckpt = team.list_all(f"{JOBS}/{job['id']}/checkpoints")[0]
    path = f"{JOBS}/{job['id']}/checkpoints/{ckpt['id']}"
    link = team.ok(team.post(f"{path}/download_link"))
    assert link["object"] == "fine_tuning.job.checkpoint.download_link", link
    assert team.key not in link["url"] and team.key[4:] not in link["url"], link
    assert 0 < link["expires_at"] - time.time() <= 600, link
    url = httpx.URL(link["url"])
    assert url.path == f"{path}/download", link

    # a plain client with no Authorization header, as a browser download: the tar.gz
    resp = httpx.get(link["url"], timeout=120)
    assert resp.status_code == 200, resp.text[:500]
    assert "attachment" in resp.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(resp.content), mode="r:gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"config.json", "model.safetensors"} <= names, names

    token = url.params["token"]
    bare = str(url.copy_with(query=None))
    # tampered, moved to another checkpoint path, expired, or none at all: refused
    key_id, expires_at, sig = token.split(".")
    tampered = f"{key_id}.{int(expires_at) + 3600}.{sig}"
    assert_error(httpx.get(bare, params={"token": tampered}), 401, "token")
    assert_error(httpx.get(bare, params={"token": "nonsense"}), 401, "token")
    other_path = bare.replace(ckpt["id"], "ftckpt-000000000000000000000000")
    assert_error(httpx.get(other_path, params={"token": token}), 401, "token")
    expired = _token_for(team.key, key_id, job["id"], ckpt["id"], int(time.time()) - 5)
    err = assert_error(httpx.get(bare, params={"token": expired}), 401, "token")
    assert "expired" in err["message"], err
    assert_error(httpx.get(bare), 401)
    # the header still works; another team's key gets neither a link nor the file
    assert team.get(f"{path}/download").status_code == 200
    assert_error(other_team.post(f"{path}/download_link"), 404)
    assert_error(other_team.get(f"{path}/download"), 404)
    # the server's access log shows the downloads, but no token (a credential for 5 minutes)
    access_log = service.api.log_text()
    assert f"{path}/download?token=REDACTED" in access_log, access_log[-3000:]
    assert sig not in access_log and tampered not in access_log
