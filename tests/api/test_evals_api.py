"""Task evals through the API: `evals` files validated line by line, a job's (and each sweep
member's) `evals` mapped onto the engine spec, bad combinations a 400 naming `evals[i].<field>`,
the worker's eval events and checkpoint metrics, and the summary's forgetting fields."""

import json

import pytest
from appkit import JOBS, PREPARE_JOB, SWEEPS, add_rows, outbox_rows, set_job, tiny_job
from servicekit import assert_error, sweep_body

from control.db.models import Job, JobMetric
from control.db.session import session_scope


def lines(*records) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


GEN = lines(
    {"prompt": "Question: 2 + 3?\nAnswer:", "reference": "#### 5"},
    {"messages": [{"role": "user", "content": "1 + 1?"}], "reference": "2"},
)
MC = lines({"context": "The sky is", "choices": [" blue", " green"], "label": 0})


@pytest.fixture
def eval_files(team, processed_file, queue):
    gen = processed_file(team, GEN, "evals", "gen.jsonl")
    mc = processed_file(team, MC, "evals", "mc.jsonl")
    queue.clear()
    return gen, mc


def test_an_eval_file_is_validated_and_every_bad_line_named(team, processed_file, eval_files):
    gen, mc = eval_files
    assert gen["status"] == "processed" and gen["purpose"] == "evals", gen
    assert gen["stats"] == {"format": "eval", "kind": "generation", "examples": 2}, gen
    assert mc["stats"]["kind"] == "multiple_choice" and mc["stats"]["examples"] == 1, mc

    bad = lines(
        {"context": "c", "choices": ["a", "b"], "label": 1},
        {"context": "c", "choices": ["a", "b"], "label": 5},
        "{broken",
        {"prompt": "p", "reference": "r"},
        {"context": "c", "choices": "ab", "label": 0},
    )
    file = processed_file(team, bad, "evals", "bad.jsonl")
    assert file["status"] == "error", file
    details = file["status_details"]
    assert details.startswith("4 bad lines: line 2: 'label' must be an index"), details
    assert "line 3: invalid JSON" in details, details
    assert "line 4: this line is a generation record but the file is multiple_choice" in details
    assert "line 5: 'choices' must be a list of at least 2 strings" in details, details


def _job_with(target: str, *evals: dict) -> dict:
    return tiny_job(target, evals=list(evals))


def test_a_job_carries_its_evals_into_the_spec(team, team_files, eval_files):
    target, _ = team_files
    gen, mc = eval_files
    job = team.create_job(
        _job_with(
            target,
            {"name": "math", "file": gen["id"], "kind": "generation", "scorer": "numeric"},
            {"name": "sky", "file": mc["id"], "kind": "multiple_choice", "generic": True},
        )
    )
    assert job["evals"] == [
        {
            "name": "math",
            "file": gen["id"],
            "kind": "generation",
            "scorer": "numeric",
            "generic": False,
        },
        {"name": "sky", "file": mc["id"], "kind": "multiple_choice", "generic": True},
    ], job["evals"]
    with session_scope() as session:
        spec = session.get_one(Job, session.query(Job.pk).filter(Job.id == job["id"]).scalar())
        evals = spec.spec["evals"]
    assert [e["file"].endswith(".jsonl") and e["file"] != gen["id"] for e in evals] == [True] * 2
    assert evals[0]["max_tokens"] == 256 and evals[0]["scorer"] == "numeric"
    assert evals[1]["generic"] is True and evals[1]["scorer"] is None


def test_an_lm_eval_eval_names_a_task_and_no_file(team, team_files):
    target, _ = team_files
    job = team.create_job(_job_with(target, {"name": "hs", "kind": "lm_eval", "task": "hellaswag"}))
    assert job["evals"] == [
        {"name": "hs", "kind": "lm_eval", "task": "hellaswag", "generic": False}
    ]
    with session_scope() as session:
        spec = session.get_one(Job, session.query(Job.pk).filter(Job.id == job["id"]).scalar())
        [one] = spec.spec["evals"]
    assert one["task"] == "hellaswag" and one.get("file") is None


@pytest.mark.parametrize(
    ("evals", "param"),
    [
        ([{"name": "m", "file": "MC", "kind": "multiple_choice", "scorer": "exact_match"}],
         "evals[0].scorer"),
        ([{"name": "m", "file": "MC", "kind": "multiple_choice", "max_tokens": 8}],
         "evals[0].max_tokens"),
        ([{"name": "g", "file": "GEN", "kind": "generation"},
          {"name": "r", "file": "GEN", "kind": "generation", "scorer": "regex"}],
         "evals[1].pattern"),
        ([{"name": "g", "file": "GEN", "kind": "generation", "scorer": "regex", "pattern": "(("}],
         "evals[0].pattern"),
        ([{"name": "g", "file": "GEN", "kind": "generation"}] * 2, "evals[1].name"),
        ([{"name": "g h", "file": "GEN", "kind": "generation"}], "evals[0].name"),
        ([{"name": "g", "file": "GEN", "kind": "essay"}], "evals[0].kind"),
        ([{"name": "g", "file": "GEN", "kind": "generation", "max_tokens": 10**6}],
         "evals[0].max_tokens"),
        ([{"name": "g", "file": "MC", "kind": "generation"}], "evals[0].kind"),
        ([{"name": "g", "file": "TARGET", "kind": "generation"}], "evals[0].file"),
        ([{"name": "g", "file": "file-nope", "kind": "generation"}], "evals[0].file"),
        ([{"name": "g", "file": "GEN", "kind": "generation", "extra": 1}], "evals[0].extra"),
        ([{"name": "h", "kind": "lm_eval"}], "evals[0].task"),
        ([{"name": "h", "file": "GEN", "kind": "lm_eval", "task": "hellaswag"}], "evals[0].file"),
        ([{"name": "g", "kind": "generation"}], "evals[0].file"),
    ],
)  # fmt: skip
def test_bad_evals_are_a_400_naming_the_field(team, team_files, eval_files, queue, evals, param):
    target, _ = team_files
    ids = {"GEN": eval_files[0]["id"], "MC": eval_files[1]["id"], "TARGET": target}
    evals = [{**e, "file": ids.get(e["file"], e["file"])} if "file" in e else e for e in evals]
    err = assert_error(team.post(JOBS, json=_job_with(target, *evals)), 400, param)
    if not param.endswith(".file"):  # file errors say which file, as training_file's do
        assert err["message"].startswith(param), err
    assert team.list_all(JOBS) == [] and queue.enqueued == []


def test_another_teams_eval_file_is_refused(team, other_team, processed_file, team_files, queue):
    target, _ = team_files
    theirs = processed_file(other_team, GEN, "evals")
    body = _job_with(target, {"name": "g", "file": theirs["id"], "kind": "generation"})
    err = assert_error(team.post(JOBS, json=body), 400, "evals[0].file")
    assert err["code"] == "file_not_found", err


def test_a_failed_eval_file_is_refused_and_a_pending_one_waited_for(
    team, processed_file, team_files, queue
):
    from control.fields import job_files
    from worker.runner import validate_file

    target, _ = team_files
    broken = processed_file(team, lines({"prompt": "p"}), "evals")
    body = _job_with(target, {"name": "g", "file": broken["id"], "kind": "generation"})
    err = assert_error(team.post(JOBS, json=body), 400, "evals[0].file")
    assert err["code"] == "invalid_file", err

    pending = team.ok(team.upload(GEN, "evals"))
    job = team.create_job(
        _job_with(target, {"name": "g", "file": pending["id"], "kind": "generation"})
    )
    assert job["status"] == "validating_files"
    with session_scope() as session:
        row = session.query(Job).filter(Job.id == job["id"]).one()
        assert ("evals[0].file", pending["id"]) in job_files(row)
    validate_file(pending["id"])  # finishing the file sends the job's preparation again
    assert [task for task, _ in outbox_rows(job["id"])] == [PREPARE_JOB]


def test_every_sweep_member_carries_the_evals(team, team_files, eval_files):
    target, replay = team_files
    gen, _ = eval_files
    evals = [{"name": "math", "file": gen["id"], "kind": "generation", "scorer": "numeric"}]
    sweep = team.ok(team.post(SWEEPS, json=sweep_body(target, replay, evals=evals)))
    members = [team.ok(team.get(f"{JOBS}/{m['job_id']}")) for m in sweep["members"]]
    assert len(members) >= 4
    assert all(m["evals"] == [{**evals[0], "generic": False}] for m in members), members


def test_worker_hooks_write_eval_events_checkpoint_metrics_and_the_summary(team, team_files):
    """DBHooks (the worker's engine hooks) on the records the engine writes."""
    from worker.runner import DBHooks

    target, _ = team_files
    job_id = team.create_job(tiny_job(target))["id"]
    set_job(job_id, status="running", lease_owner="me")
    with session_scope() as session:
        row = session.query(Job).filter(Job.id == job_id).one()
        hooks = DBHooks(job=row, owner="me", model_name="ft:x", batch_size=4, seq_len=64)
    scores = {
        "eval/math/accuracy": 0.5,
        "eval/math/correct": 1,
        "eval/math/total": 2,
        "eval/sky/accuracy": 1.0,
        "eval/sky/accuracy_norm": 0.0,
        "eval/sky/correct": 1,
        "eval/sky/total": 1,
    }
    hooks.on_metrics({"type": "eval", "step": 0, "val_loss_target": 2.0, **scores})
    hooks.on_metrics({"type": "eval", "step": 3, **scores})  # a checkpoint between val evals
    hooks.on_checkpoint(target_dir := __import__("pathlib").Path("/nonexistent"), 3)
    del target_dir

    events = [e["message"] for e in team.list_all(f"{JOBS}/{job_id}/events")]
    assert "Eval math at step 0: accuracy 0.5000 (1/2)" in events, events
    assert "Eval sky at step 3: accuracy 1.0000, accuracy_norm 0.0000 (1/1)" in events, events
    assert "Eval at step 0: val_loss_target 2.0000" in events, events
    [ckpt] = team.list_all(f"{JOBS}/{job_id}/checkpoints")
    assert ckpt["metrics"]["eval/sky/accuracy_norm"] == 0.0, ckpt
    assert ckpt["metrics"]["val_loss_target"] == 2.0, ckpt  # the newest validation loss
    metrics = team.ok(team.get(f"{JOBS}/{job_id}/metrics", params={"type": "eval"}))["data"]
    assert [m["step"] for m in metrics] == [0, 3] and metrics[1]["eval/math/total"] == 2

    summary = {
        "type": "summary",
        "final_val_loss_target": 1.5,
        "initial_val_loss_target": 2.0,
        "target_gain": 0.5,
        "generic_change": 0.25,
        "evals": {
            "sky": {
                "kind": "multiple_choice",
                "generic": True,
                "initial_accuracy": 1.0,
                "final_accuracy": 0.0,
                "accuracy_change": -1.0,
                "total": 1,
                "step": 10,
            }
        },
    }
    add_rows(JobMetric(job_id=job_id, step=10, type="summary", record=summary))
    set_job(job_id, status="succeeded")
    got = team.ok(team.get(f"{JOBS}/{job_id}"))["summary"]
    assert got["target_gain"] == 0.5 and got["generic_change"] == 0.25, got
    assert got["evals"]["sky"]["accuracy_change"] == -1.0 and got["evals"]["sky"]["generic"]
