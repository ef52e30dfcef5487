"""`/v1/fine_tuning/...`: create (and what it enqueues), validation 400s naming the field,
idempotency, listing, the lifecycle's transitions and their 409s, events, checkpoints, metrics,
the SSE stream and the plan. A job's worker-side states are set on its row directly."""

import io
import json
import tarfile

import pytest
from appkit import (
    FILES,
    JOBS,
    PREPARE_JOB,
    RUN_JOB,
    SWEEPS,
    add_rows,
    outbox_rows,
    replay_lines,
    set_job,
    target_lines,
    tiny_job,
)
from servicekit import TINY, assert_error, sweep_body

from control.db.models import Checkpoint, JobEvent, JobMetric


def test_create_answers_an_openai_job_and_enqueues_its_preparation(team, team_files, queue):
    target, replay = team_files
    body = tiny_job(target, replay, suffix="fast", metadata={"group": "a"})
    job = team.create_job(body)
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-"), job
    assert job["status"] == "validating_files" and job["organization_id"] == team.id, job
    assert job["model"] == TINY and job["training_file"] == target, job
    assert job["validation_file"] is None and job["fine_tuned_model"] is None, job
    assert job["finished_at"] is None and job["estimated_finish"] is None, job
    assert job["error"] is None and job["trained_tokens"] is None, job
    assert job["result_files"] == [] and job["integrations"] == [], job
    assert job["seed"] == 7 and job["suffix"] == "fast" and job["metadata"] == {"group": "a"}
    hp = job["hyperparameters"]
    assert hp["n_epochs"] == 1 and hp["batch_size"] == 4 and hp["seq_len"] == 64, hp
    assert hp["learning_rate_multiplier"] == pytest.approx(1.0), hp
    assert job["method"] == {"type": "supervised", "supervised": {"hyperparameters": hp}}
    assert job["replay"] == {"dataset": replay, "fraction": 0.25}, job["replay"]
    assert job["progress"]["step"] == 0, job["progress"]

    assert queue.enqueued == [(PREPARE_JOB, (job["id"],))]
    assert outbox_rows(job["id"]) == []
    assert team.ok(team.get(f"{JOBS}/{job['id']}")) == job
    events = team.ok(team.get(f"{JOBS}/{job['id']}/events"))["data"]
    assert [e["message"] for e in events] == [f"Created fine-tuning job: {job['id']}"]
    assert events[0]["object"] == "fine_tuning.job.event" and events[0]["level"] == "info"


def test_the_official_openai_client_reads_every_answer(deployment, team, team_files):
    openai = pytest.importorskip("openai")
    target, _ = team_files
    client = openai.OpenAI(
        base_url="http://testserver/v1",
        api_key=team.key,
        http_client=deployment.client,
        max_retries=0,
    )
    assert target in {f.id for f in client.files.list()}
    assert client.files.retrieve(target).status == "processed"
    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(model="replayft/no-such-model", training_file=target)
    assert bad.value.param == "model", bad.value.body
    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=target,
        seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
        extra_body={"replay": {"fraction": 0}},
    )
    assert job.object == "fine_tuning.job" and job.status == "validating_files"
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
    assert [j.id for j in client.fine_tuning.jobs.list(limit=5)] == [job.id]
    assert client.fine_tuning.jobs.list_events(job.id).data[0].object == "fine_tuning.job.event"
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert TINY in {m.id for m in client.models.list()}


# (change to a valid tiny job with replay, param); "{target}" / "{replay}" are the team's files
BAD_JOBS = [
    ({"model": "replayft/no-such-model"}, "model"),
    ({"replay": {"dataset": "{replay}", "fraction": 1.0}}, "replay.fraction"),
    ({"training_file": "{replay}"}, "training_file"),  # a replay file is not target data
    ({"replay": {"dataset": "{target}", "fraction": 0.25}}, "replay.dataset"),  # nor the reverse
    ({"replay": {"dataset": "no-such-corpus", "fraction": 0.25}}, "replay.dataset"),
    ({"training_file": "file-doesnotexist"}, "training_file"),
    ({"validation_file": "file-doesnotexist"}, "validation_file"),
    ({"training_file": None}, "training_file"),
    ({"seed": 2**31}, "seed"),
    ({"suffix": "a\x00"}, "suffix"),
    ({"metadata": {"k": "v\x00"}}, "metadata.k"),
    ({"replay": {"dataset": "{replay}", "fraction": 0.25, "fractoin": 1}}, "replay.fractoin"),
    ({"hp": {"packing_attention": "x"}}, "method.supervised.hyperparameters.packing_attention"),
    ({"hp": {"n_epochs": "many"}}, "method.supervised.hyperparameters.n_epochs"),
    (
        {"hp": {"batch_size": 10**12}},
        "method.supervised.hyperparameters.batch_size",
    ),  # the spec's bound, in the schema
    ({"hp": {"n_epochs": 1e9}}, "method.supervised.hyperparameters.n_epochs"),
    ({"hp": {"seq_len": 10**6}}, "hyperparameters.seq_len"),  # longer than the model's context
    ({"hp": {"adapter": {"type": "lora", "r": 0}}}, "method.supervised.hyperparameters.adapter.r"),
    (
        {"hp": {"adapter": {"type": "lora", "target_modules": ["no_such_proj"]}}},
        "hyperparameters.adapter.target_modules",
    ),
    ({"hp": {"distributed": {"nodes": 0}}}, "method.supervised.hyperparameters.distributed.nodes"),
    ({"hyperparameters": {"batch_size": 0}, "method": None}, "hyperparameters.batch_size"),
]


def _fill(value, target, replay):
    text = json.dumps(value).replace("{target}", target).replace("{replay}", replay)
    return json.loads(text)


@pytest.mark.parametrize(("change", "param"), BAD_JOBS, ids=[p for _, p in BAD_JOBS])
def test_a_refused_job_names_the_field_and_creates_and_enqueues_nothing(
    team, team_files, queue, change, param
):
    target, replay = team_files
    change = _fill(change, target, replay)
    body = tiny_job(target, replay)
    body["method"]["supervised"]["hyperparameters"].update(change.pop("hp", {}))
    body.update(change)
    for path in (JOBS, "/v1/fine_tuning/plan"):
        err = assert_error(team.post(path, json=body), 400, param)
        assert err["type"] == "invalid_request_error", err
    assert team.list_all(JOBS) == [] and queue.enqueued == []


def test_a_file_still_being_validated_is_waited_for_and_a_failed_one_refused(
    team, other_team, team_files, queue
):
    target, _ = team_files
    fresh = team.ok(team.upload(target_lines(5), "fine-tune"))  # no worker has validated it
    queue.clear()
    # as OpenAI does: the job is created and waits in validating_files for its file
    waiting = team.create_job(tiny_job(fresh["id"]))
    assert waiting["status"] == "validating_files", waiting
    assert queue.enqueued == [(PREPARE_JOB, (waiting["id"],))]
    # a plan needs the file's tokens now
    err = assert_error(team.post("/v1/fine_tuning/plan", json=tiny_job(fresh["id"])), 400)
    assert err["code"] == "file_not_ready" and err["param"] == "training_file", err
    team.ok(team.post(f"{JOBS}/{waiting['id']}/cancel"))
    from worker.runner import validate_file

    broken = team.ok(team.upload(b'{"prompt": 1}\n', "fine-tune"))
    validate_file(broken["id"])
    err = assert_error(team.post(JOBS, json=tiny_job(broken["id"])), 400, "training_file")
    assert err["code"] == "invalid_file", err

    resp = other_team.post(JOBS, json=tiny_job(target))
    assert_error(resp, 400, "training_file")
    assert team.name not in resp.text
    queue.clear()  # the uploads above
    assert [j["id"] for j in team.list_all(JOBS)] == [waiting["id"]]
    assert other_team.list_all(JOBS) == [] and queue.enqueued == []


def test_over_the_deployment_limits_is_a_400_naming_the_setting(team, team_files, queue):
    target, _ = team_files
    body = tiny_job(target, batch_size=1)
    body["method"]["supervised"]["hyperparameters"].update(total_steps=2_000_000, batch_size=1)
    err = assert_error(team.post(JOBS, json=body), 400, "hyperparameters.total_steps")
    assert err["code"] == "limit_exceeded" and "REPLAYFT_MAX_STEPS_PER_JOB" in err["message"]
    body["method"]["supervised"]["hyperparameters"].update(total_steps=300_000, batch_size=2**16)
    err = assert_error(team.post(JOBS, json=body), 400, "hyperparameters.total_steps")
    assert "REPLAYFT_MAX_TOKENS_PER_JOB" in err["message"], err
    assert queue.enqueued == []


def test_an_idempotency_key_answers_the_first_job_and_enqueues_once(team, team_files, queue):
    target, replay = team_files
    body = tiny_job(target)
    first = team.post(JOBS, json=body, headers={"Idempotency-Key": "k-1"})
    again = team.post(JOBS, json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200, again.text
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert queue.subjects(PREPARE_JOB) == [first.json()["id"]]
    other = team.create_job(body, headers={"Idempotency-Key": "k-2"})
    assert other["id"] != first.json()["id"]

    # one key space per team: a job's key does not create a sweep, nor the reverse
    resp = team.post(SWEEPS, json=sweep_body(target, replay), headers={"Idempotency-Key": "k-1"})
    err = assert_error(resp, 409, "Idempotency-Key")
    assert err["code"] == "idempotency_key_reused", err
    assert_error(
        team.post(JOBS, json=body, headers={"Idempotency-Key": "k" * 256}), 400, "Idempotency-Key"
    )
    assert len(team.list_all(JOBS)) == 2 and team.list_all(SWEEPS) == []


def test_another_team_reusing_a_key_gets_its_own_job(team, other_team, team_files, processed_file):
    target, _ = team_files
    mine = team.create_job(tiny_job(target), headers={"Idempotency-Key": "shared"})
    theirs_file = processed_file(other_team, target_lines(), "fine-tune")
    theirs = other_team.create_job(
        tiny_job(theirs_file["id"]), headers={"Idempotency-Key": "shared"}
    )
    assert theirs["id"] != mine["id"] and theirs["organization_id"] == other_team.id


def test_list_pages_newest_first_and_filters_by_metadata_and_status(team, team_files):
    target, _ = team_files
    ids = [team.create_job(tiny_job(target, metadata={"group": g}))["id"] for g in ("a", "a", "b")]
    page = team.ok(team.get(JOBS, params={"limit": 2}))
    assert page["object"] == "list" and page["has_more"] is True, page
    assert [j["id"] for j in page["data"]] == ids[::-1][:2]
    rest = team.ok(team.get(JOBS, params={"limit": 2, "after": page["data"][-1]["id"]}))
    assert [j["id"] for j in rest["data"]] == ids[:1] and rest["has_more"] is False
    assert [j["id"] for j in team.list_all(JOBS, limit=1)] == ids[::-1]

    group_a = team.ok(team.get(JOBS, params={"metadata[group]": "a"}))["data"]
    assert [j["id"] for j in group_a] == ids[1::-1]
    team.ok(team.post(f"{JOBS}/{ids[0]}/cancel"))
    cancelled = team.ok(team.get(JOBS, params={"status": "cancelled"}))["data"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    both = team.ok(team.get(JOBS, params=[("status", "cancelled"), ("status", "validating_files")]))
    assert len(both["data"]) == 3

    assert_error(team.get(JOBS, params={"after": "ftjob-unknown"}), 400, "after")
    assert_error(team.get(JOBS, params={"limit": 1001}), 400, "limit")
    assert_error(team.get(JOBS, params={"status": "sleeping"}), 400, "status.0")


# ---------------------------------------------------------------------------- transitions
@pytest.fixture
def job(team, team_files, queue) -> str:
    """A new job of `team` (validating_files); the queue left empty."""
    job_id = team.create_job(tiny_job(team_files[0]))["id"]
    queue.clear()
    return job_id


def _row(job_id: str):
    from sqlalchemy import select

    from control.db.models import Job
    from control.db.session import session_scope

    with session_scope() as session:
        return session.scalar(select(Job).where(Job.id == job_id))


def test_cancel_finishes_an_unfinished_job_once(team, job, queue):
    cancelled = team.ok(team.post(f"{JOBS}/{job}/cancel"))
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    err = assert_error(team.post(f"{JOBS}/{job}/cancel"), 409)
    assert err["code"] == "invalid_state" and "cancelled" in err["message"], err
    assert_error(team.post(f"{JOBS}/{job}/pause"), 409)
    assert_error(team.post(f"{JOBS}/{job}/resume"), 409)
    messages = [e["message"] for e in team.list_all(f"{JOBS}/{job}/events")]
    assert messages[0] == "Job cancelled by request.", messages
    assert queue.enqueued == []


def test_a_running_job_is_cancelled_and_its_worker_told_to_stop(team, job):
    set_job(job, status="running", lease_owner="worker-1")
    assert team.ok(team.post(f"{JOBS}/{job}/cancel"))["status"] == "cancelled"
    assert _row(job).control == "cancel"


def test_pause_and_resume_follow_the_lifecycle(team, job, queue):
    err = assert_error(team.post(f"{JOBS}/{job}/pause"), 409)  # still preparing its data
    assert "only queued or running" in err["message"], err
    assert_error(team.post(f"{JOBS}/{job}/resume"), 409)

    set_job(job, status="queued")
    assert team.ok(team.post(f"{JOBS}/{job}/pause"))["status"] == "paused"
    assert_error(team.post(f"{JOBS}/{job}/pause"), 409)
    set_job(job, attempts=2)
    resumed = team.ok(team.post(f"{JOBS}/{job}/resume"))
    assert resumed["status"] == "queued"
    assert queue.enqueued == [(RUN_JOB, (job,))]
    assert _row(job).attempts == 0  # the lost-worker limit counts from the resume
    assert_error(team.post(f"{JOBS}/{job}/resume"), 409)
    assert queue.enqueued == [(RUN_JOB, (job,))], "a refused resume enqueues nothing"


def test_pausing_a_running_job_asks_its_worker_and_resume_waits_for_it(team, job, queue):
    set_job(job, status="running", lease_owner="worker-1")
    for _ in range(2):  # asking twice is harmless
        assert team.ok(team.post(f"{JOBS}/{job}/pause"))["status"] == "running"
    assert _row(job).control == "pause"
    err = assert_error(team.post(f"{JOBS}/{job}/resume"), 409)
    assert "still pausing" in err["message"], err
    pauses = [e for e in team.list_all(f"{JOBS}/{job}/events") if "Pause" in e["message"]]
    assert len(pauses) == 1, pauses

    set_job(job, status="paused", control=None, lease_owner=None)  # the worker checkpointed
    assert team.ok(team.post(f"{JOBS}/{job}/resume"))["status"] == "queued"
    assert queue.subjects(RUN_JOB) == [job]


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_a_finished_job_cannot_be_cancelled_paused_or_resumed(team, job, queue, status):
    set_job(job, status=status)
    for action in ("cancel", "pause", "resume"):
        err = assert_error(team.post(f"{JOBS}/{job}/{action}"), 409)
        assert err["code"] == "invalid_state", err
    assert team.ok(team.get(f"{JOBS}/{job}"))["status"] == status and queue.enqueued == []


def test_another_teams_job_is_404_on_every_route(team, other_team, job, queue):
    for method, path in [
        ("GET", f"{JOBS}/{job}"),
        ("GET", f"{JOBS}/{job}/events"),
        ("GET", f"{JOBS}/{job}/checkpoints"),
        ("GET", f"{JOBS}/{job}/checkpoints/ftckpt-x/download"),
        ("GET", f"{JOBS}/{job}/metrics"),
        ("GET", f"{JOBS}/{job}/stream"),
        ("POST", f"{JOBS}/{job}/cancel"),
        ("POST", f"{JOBS}/{job}/pause"),
        ("POST", f"{JOBS}/{job}/resume"),
    ]:
        resp = other_team.request(method, path)
        assert_error(resp, 404, "fine_tuning_job_id")
        assert team.name not in resp.text, resp.text
    assert other_team.list_all(JOBS) == []
    assert team.ok(team.get(f"{JOBS}/{job}"))["status"] == "validating_files"
    assert queue.enqueued == []


def test_job_routes_need_a_valid_key(client, job):
    for headers in ({}, {"Authorization": "Bearer rft-unknown"}, {"Authorization": "Token x"}):
        for method, path in [
            ("GET", JOBS),
            ("GET", f"{JOBS}/{job}"),
            ("POST", JOBS),
            ("POST", f"{JOBS}/{job}/cancel"),
        ]:
            assert_error(client.request(method, path, headers=headers), 401)


# ---------------------------------------------------------------------------- what a run leaves
def test_events_page_newest_first(team, job):
    add_rows(*[JobEvent(job_id=job, message=f"step {i}") for i in range(5)])
    events = team.list_all(f"{JOBS}/{job}/events", limit=2)
    assert [e["message"] for e in events] == [f"step {i}" for i in range(4, -1, -1)] + [
        f"Created fine-tuning job: {job}"
    ]
    page = team.ok(team.get(f"{JOBS}/{job}/events", params={"limit": 2}))
    assert page["has_more"] is True and len(page["data"]) == 2
    assert_error(team.get(f"{JOBS}/{job}/events", params={"after": "ftevent-x"}), 400, "after")


def test_checkpoints_list_by_step_and_download_as_a_tarball(deployment, team, job):
    folders = []
    for step in (2, 4, 6):
        folder = deployment.data_dir / "jobs" / job / "checkpoints" / f"step-{step}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"step": step}))
        folders.append(folder)
        add_rows(
            Checkpoint(
                job_id=job,
                step_number=step,
                path=str(folder),
                fine_tuned_model_checkpoint=f"ft:{TINY}:t::{job}:ckpt-step-{step}",
                metrics={"step": step},
            )
        )
    ckpts = team.list_all(f"{JOBS}/{job}/checkpoints", limit=2)
    assert [c["step_number"] for c in ckpts] == [6, 4, 2]
    assert ckpts[0]["object"] == "fine_tuning.job.checkpoint"
    assert ckpts[0]["fine_tuning_job_id"] == job and ckpts[0]["metrics"] == {"step": 6}

    resp = team.get(f"{JOBS}/{job}/checkpoints/{ckpts[0]['id']}/download")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(resp.content), mode="r:gz") as tar:
        config = tar.extractfile(f"{job}-step-6/config.json").read()
    assert json.loads(config) == {"step": 6}

    folders[0].joinpath("config.json").unlink()
    folders[0].rmdir()  # pruned by the engine: the row stays a moment longer
    assert_error(
        team.get(f"{JOBS}/{job}/checkpoints/{ckpts[2]['id']}/download"), 404, "checkpoint_id"
    )
    assert_error(team.get(f"{JOBS}/{job}/checkpoints/ftckpt-none/download"), 404, "checkpoint_id")


def test_metrics_filter_by_step_and_type_and_thin_evenly(team, job):
    rows = [
        JobMetric(
            job_id=job,
            step=s,
            type="train",
            record={"type": "train", "step": s, "train_loss": 5 - s / 10},
        )
        for s in range(1, 11)
    ]
    rows += [
        JobMetric(job_id=job, step=s, type="eval", record={"type": "eval", "step": s})
        for s in (5, 10)
    ]
    add_rows(*rows)
    data = team.ok(team.get(f"{JOBS}/{job}/metrics"))
    assert data["object"] == "list" and len(data["data"]) == 12
    train = team.ok(
        team.get(f"{JOBS}/{job}/metrics", params={"type": "train", "start_step": 3, "end_step": 6})
    )
    assert [r["step"] for r in train["data"]] == [3, 4, 5, 6]
    thin = team.ok(team.get(f"{JOBS}/{job}/metrics", params={"type": "train", "max_points": 4}))
    assert [r["step"] for r in thin["data"]] == [1, 4, 7, 10]  # first and last kept
    assert_error(team.get(f"{JOBS}/{job}/metrics", params={"start_step": 2**31}), 400, "start_step")
    assert_error(team.get(f"{JOBS}/{job}/metrics", params={"type": "summary"}), 400, "type")


def test_a_succeeded_job_shows_its_summary(team, job):
    summary = {"type": "summary", "final_val_loss_target": 1.25, "final_val_loss_generic": 2.5}
    add_rows(JobMetric(job_id=job, step=10, type="summary", record=summary))
    set_job(job, status="succeeded", fine_tuned_model=f"ft:{TINY}:t::{job}", trained_tokens=1234)
    got = team.ok(team.get(f"{JOBS}/{job}"))
    assert got["summary"]["final_val_loss_target"] == 1.25, got
    assert got["fine_tuned_model"] == f"ft:{TINY}:t::{job}" and got["trained_tokens"] == 1234
    listed = team.ok(team.get(JOBS))["data"][0]
    assert listed["summary"] == got["summary"]


def test_the_stream_of_a_finished_job_sends_its_history_then_done(team, job):
    team.ok(team.post(f"{JOBS}/{job}/cancel"))
    add_rows(JobMetric(job_id=job, step=1, type="train", record={"type": "train", "step": 1}))
    resp = team.get(f"{JOBS}/{job}/stream")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = [
        (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1][6:]))
        for block in resp.text.strip().split("\n\n")
    ]
    kinds = [kind for kind, _ in events]
    assert kinds.count("event") == 2 and kinds.count("metrics") == 1, kinds
    assert ("job", "cancelled") in [(k, d.get("status")) for k, d in events]
    assert events[-1] == ("done", {"status": "cancelled"})

    newest = team.ok(team.get(f"{JOBS}/{job}/events"))["data"][0]["id"]
    resumed = team.get(f"{JOBS}/{job}/stream", params={"after": newest, "since_step": 1}).text
    assert "event: event" not in resumed and "event: metrics" not in resumed, resumed
    assert_error(team.get(f"{JOBS}/{job}/stream", params={"after": "ftevent-x"}), 400, "after")


def test_plan_answers_the_resolved_schedule_without_creating_a_job(team, team_files, queue):
    target, replay = team_files
    plan = team.ok(team.post("/v1/fine_tuning/plan", json=tiny_job(target, replay)))
    total = plan["total_steps"]
    assert total > 0 and plan["replay_fraction"] == 0.25, plan
    assert plan["lr_curve"]["step"][0] == 1 and plan["lr_curve"]["step"][-1] == total
    assert len(plan["lr_curve"]["lr"]) == len(plan["lr_curve"]["step"])
    assert team.list_all(JOBS) == [] and queue.enqueued == []


def test_a_replay_file_can_be_named_by_a_list(team, team_files, processed_file):
    target, replay = team_files
    second = processed_file(team, replay_lines(5), "replay")["id"]
    job = team.create_job(
        {**tiny_job(target), "replay": {"dataset": [replay, second], "fraction": 0.5}}
    )
    assert job["replay"]["dataset"] == [replay, second]
    assert {f["id"] for f in team.list_all(FILES)} >= {target, replay, second}


def test_learning_rate_multiplier_takes_auto_and_a_positive_number_only(team, team_files):
    """The multiplier's bound applies to the number, not to "auto" (a 500 the fuzzer found)."""
    target, replay = team_files
    body = tiny_job(target, replay)
    body["method"]["supervised"]["hyperparameters"]["learning_rate_multiplier"] = "auto"
    team.ok(team.post("/v1/fine_tuning/plan", json=body))
    body["method"]["supervised"]["hyperparameters"]["learning_rate_multiplier"] = 0
    param = "method.supervised.hyperparameters.learning_rate_multiplier"
    assert_error(team.post("/v1/fine_tuning/plan", json=body), 400, param)
