"""`/v1/sweeps`: a family of jobs created in one commit (each member's preparation enqueued),
refusals that create and enqueue nothing, idempotency, listing, cancel and the report. The
members' worker-side outcomes are set on their rows directly."""

import pytest
from appkit import JOBS, PREPARE_JOB, SWEEPS, add_rows, set_job, tiny_job
from servicekit import TINY, assert_error, sweep_body

from control.db.models import JobMetric


def test_create_answers_the_sweep_and_enqueues_every_member(team, team_files, queue):
    target, replay = team_files
    sweep = team.ok(team.post(SWEEPS, json=sweep_body(target, replay, metadata={"tag": "t"})))
    assert sweep["object"] == "sweep" and sweep["id"].startswith("sweep-"), sweep
    assert sweep["status"] == "queued" and sweep["model"] == TINY, sweep
    assert sweep["training_file"] == target and sweep["seed"] == 7, sweep
    assert sweep["replay_fractions"] == [0, 0.25] and sweep["reference_subsets"] == [0.25, 0.5, 1]
    assert sweep["counts"]["total"] == 4 and sweep["metadata"] == {"tag": "t"}, sweep
    members = {
        (m["replay_fraction"], m["target_subset_fraction"]): m["roles"] for m in sweep["members"]
    }
    assert members == {
        (0.0, 1.0): ["configuration", "reference"],  # r = 0 on all the data: both, created once
        (0.25, 1.0): ["configuration"],
        (0.0, 0.5): ["reference"],
        (0.0, 0.25): ["reference"],
    }, members
    job_ids = [m["job_id"] for m in sweep["members"]]
    assert sorted(queue.subjects(PREPARE_JOB)) == sorted(job_ids) and len(queue.enqueued) == 4

    # members are ordinary jobs, found by their metadata
    listed = team.ok(team.get(JOBS, params={"metadata[sweep_id]": sweep["id"]}))["data"]
    assert sorted(j["id"] for j in listed) == sorted(job_ids)
    assert all(j["metadata"]["tag"] == "t" for j in listed)
    labels = {j["metadata"]["sweep_member"] for j in listed}
    assert labels == {"r=0", "r=0.25", "r=0 subset=0.5", "r=0 subset=0.25"}, labels
    assert team.ok(team.get(f"{SWEEPS}/{sweep['id']}")) == sweep


def test_the_default_grid_is_five_fractions_and_five_subsets(team, team_files, queue):
    target, replay = team_files
    body = sweep_body(target, replay)
    del body["replay_fractions"], body["reference_subsets"]
    sweep = team.ok(team.post(SWEEPS, json=body))
    assert sweep["replay_fractions"] == [0, 0.1, 0.25, 0.5, 0.75]
    assert len(sweep["members"]) == 9 == len(queue.enqueued)  # r = 0 on all data counted once


BAD_SWEEPS = [
    ({"replay_fractions": [0, 1.0]}, "replay_fractions.1"),
    ({"replay_fractions": [-0.1]}, "replay_fractions.0"),
    ({"replay_fractions": []}, "replay_fractions"),
    ({"replay_fractions": [0.25, 0.25]}, "replay_fractions"),
    ({"replay_fractions": ["lots"]}, "replay_fractions.0"),
    ({"replay_fractions": [i / 100 for i in range(64)]}, "replay_fractions"),  # > 64 jobs
    ({"reference_subsets": [0, 0.5]}, "reference_subsets.0"),
    ({"reference_subsets": [0.5, 2]}, "reference_subsets.1"),
    ({"reference_subsets": [0.5]}, "reference_subsets"),  # with 1: two points, no fit
    ({"target_stage2_allocations": [0]}, "target_stage2_allocations.0"),
    ({"target_stage2_allocations": [0.5]}, "target_stage2_allocations"),  # no total_steps
    ({"replay_fraction": [0.1]}, "replay_fraction"),  # a typo is not the default grid
    ({"training_file": "{replay}"}, "training_file"),
    ({"replay": {"dataset": "no-such-corpus"}}, "replay.dataset"),
    ({"model": "replayft/no-such-model"}, "model"),
    ({"seed": 2**31}, "seed"),
]


@pytest.mark.parametrize(("change", "param"), BAD_SWEEPS, ids=[str(c)[:40] for c, _ in BAD_SWEEPS])
def test_a_refused_sweep_names_the_field_and_creates_and_enqueues_nothing(
    team, team_files, queue, change, param
):
    target, replay = team_files
    change = {k: replay if v == "{replay}" else v for k, v in change.items()}
    err = assert_error(team.post(SWEEPS, json={**sweep_body(target, replay), **change}), 400)
    assert err["param"] == param, (change, err)
    assert team.list_all(SWEEPS) == [] and team.list_all(JOBS) == [] and queue.enqueued == []


def test_a_member_the_engine_refuses_rolls_back_the_members_before_it(team, team_files, queue):
    target, replay = team_files
    body = sweep_body(target, replay)
    del body["replay"]  # r = 0 members are fine; r = 0.25 needs replay data
    err = assert_error(team.post(SWEEPS, json=body), 400, "replay.dataset")
    assert "r=0.25" in err["message"], err
    assert team.list_all(SWEEPS) == [] and team.list_all(JOBS) == []
    assert queue.enqueued == [], "members enqueued before the refusal went with the rollback"


def test_an_idempotency_key_answers_the_first_sweep_and_launches_nothing_more(
    team, team_files, queue
):
    target, replay = team_files
    key = {"Idempotency-Key": "sweep-1"}
    first = team.post(SWEEPS, json=sweep_body(target, replay), headers=key)
    again = team.post(SWEEPS, json=sweep_body(target, replay), headers=key)
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert team.ok(again)["id"] == team.ok(first)["id"]
    assert team.ok(again)["members"] == team.ok(first)["members"]
    assert len(queue.enqueued) == 4 and len(team.list_all(JOBS)) == 4
    err = assert_error(team.post(JOBS, json=tiny_job(target), headers=key), 409, "Idempotency-Key")
    assert err["code"] == "idempotency_key_reused" and "sweep" in err["message"], err
    assert_error(
        team.post(SWEEPS, json=sweep_body(target, replay), headers={"Idempotency-Key": "k" * 256}),
        400,
        "Idempotency-Key",
    )


def test_list_pages_newest_first(team, team_files):
    target, replay = team_files
    body = sweep_body(target, replay, replay_fractions=[0])
    ids = [team.ok(team.post(SWEEPS, json=body))["id"] for _ in range(3)]
    page = team.ok(team.get(SWEEPS, params={"limit": 2}))
    assert page["object"] == "list" and page["has_more"] is True
    assert [s["id"] for s in page["data"]] == ids[::-1][:2]
    assert [s["id"] for s in team.list_all(SWEEPS, limit=1)] == ids[::-1]
    assert_error(team.get(SWEEPS, params={"after": "sweep-unknown"}), 400, "after")
    assert_error(team.get(SWEEPS, params={"limit": 101}), 400, "limit")


def test_cancel_cancels_every_unfinished_member_then_is_a_409(team, team_files, queue):
    target, replay = team_files
    sweep = team.ok(team.post(SWEEPS, json=sweep_body(target, replay)))
    jobs = [m["job_id"] for m in sweep["members"]]
    set_job(jobs[0], status="succeeded")
    set_job(jobs[1], status="running", lease_owner="worker-1")
    assert team.ok(team.get(f"{SWEEPS}/{sweep['id']}"))["status"] == "running"
    queue.clear()

    cancelled = team.ok(team.post(f"{SWEEPS}/{sweep['id']}/cancel"))
    statuses = {m["job_id"]: m["status"] for m in cancelled["members"]}
    assert statuses == {jobs[0]: "succeeded", **{j: "cancelled" for j in jobs[1:]}}, statuses
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None, cancelled
    assert cancelled["counts"] == {
        "total": 4,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 3,
        "unfinished": 0,
    }, cancelled
    err = assert_error(team.post(f"{SWEEPS}/{sweep['id']}/cancel"), 409)
    assert err["code"] == "invalid_state", err
    assert queue.enqueued == []

    report = team.ok(team.get(f"{SWEEPS}/{sweep['id']}/report"))
    assert report["object"] == "sweep.report" and report["status"] == "incomplete", report
    assert report["counts"]["cancelled"] == 3 and report["recommendation"] is None, report


def test_the_report_fits_finished_members_and_recommends_one(team, team_files):
    target, replay = team_files
    sweep = team.ok(team.post(SWEEPS, json=sweep_body(target, replay)))
    partial = team.ok(team.get(f"{SWEEPS}/{sweep['id']}/report"))
    assert partial["status"] == "partial" and partial["recommendation"] is None, partial

    # what the runs would have left: sequences trained on and final losses, A / x^0.5 + 1
    for m in sweep["members"]:
        r, subset = m["replay_fraction"], m["target_subset_fraction"]
        loss = 1 + 4 / (400 * subset) ** 0.5 - (0.05 if r == 0.25 else 0)
        set_job(m["job_id"], status="succeeded", plan={"target_sequences": int(400 * subset)})
        record = {"type": "summary", "final_val_loss_target": loss, "final_val_loss_generic": 3.0}
        add_rows(JobMetric(job_id=m["job_id"], step=10, type="summary", record=record))

    report = team.ok(team.get(f"{SWEEPS}/{sweep['id']}/report"))
    assert report["status"] == "complete" and report["sweep_status"] == "succeeded", report
    assert report["recommendation"]["replay_fraction"] == 0.25, report["recommendation"]
    by_r = {c["replay_fraction"]: c for c in report["configurations"]}
    assert by_r[0.25]["multiplier"] > 1 > by_r[0.0]["multiplier"] - 1e-6, by_r


def test_another_teams_sweep_is_404(team, other_team, team_files):
    target, replay = team_files
    sweep = team.ok(team.post(SWEEPS, json=sweep_body(target, replay)))
    for method, path in [
        ("GET", f"{SWEEPS}/{sweep['id']}"),
        ("GET", f"{SWEEPS}/{sweep['id']}/report"),
        ("POST", f"{SWEEPS}/{sweep['id']}/cancel"),
    ]:
        resp = other_team.request(method, path)
        assert_error(resp, 404, "sweep_id")
        assert team.name not in resp.text
    assert other_team.list_all(SWEEPS) == []
    assert team.ok(team.get(f"{SWEEPS}/{sweep['id']}"))["status"] == "queued"


def test_sweep_routes_need_a_valid_key(client):
    for headers in ({}, {"Authorization": "Bearer rft-unknown"}):
        for method, path in [("GET", SWEEPS), ("POST", SWEEPS), ("GET", f"{SWEEPS}/sweep-x")]:
            assert_error(client.request(method, path, headers=headers), 401)


def test_plan_shows_the_members_and_their_steps_and_creates_nothing(team, team_files, queue):
    target, replay = team_files
    body = sweep_body(target, replay)
    plan = team.ok(team.post(f"{SWEEPS}/plan", json=body))
    assert plan["object"] == "sweep.plan" and plan["member_count"] == 4, plan
    members = {(m["replay_fraction"], m["target_subset_fraction"]): m for m in plan["members"]}
    assert members[(0.0, 1.0)]["roles"] == ["configuration", "reference"]
    steps = {key: m["estimated_steps"] for key, m in members.items()}
    assert all(isinstance(s, int) and s > 0 for s in steps.values()), steps
    # replay adds generic sequences to stage 2, a quarter of the data a quarter of the steps
    assert steps[(0.25, 1.0)] > steps[(0.0, 1.0)] > steps[(0.0, 0.5)] > steps[(0.0, 0.25)]
    assert plan["total_estimated_steps"] == sum(steps.values())
    # a member's refusal names the sweep's field and the member; nothing is created either way
    bad = {**body, "replay_fractions": [0, 0.25, 0.5]}
    bad["method"]["supervised"]["hyperparameters"]["total_steps"] = 2_000_000_000
    err = assert_error(team.post(f"{SWEEPS}/plan", json=bad), 400)
    assert "(member r=" in err["message"], err
    assert team.list_all(SWEEPS) == [] and team.list_all(JOBS) == [] and queue.enqueued == []
