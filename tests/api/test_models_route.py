"""`/v1/models` (this file is not test_models.py: tests/test_models.py, the engine's, has that
module name): presets, registered base models and the team's own fine-tuned models; a
fine-tuned model is the base of a next job only for its team."""

from appkit import JOBS, set_job, tiny_job
from servicekit import TINY, assert_error

MODELS = "/v1/models"


def test_presets_are_listed_in_the_openai_shape(team):
    page = team.ok(team.get(MODELS))
    assert page["object"] == "list", page
    by_id = {m["id"]: m for m in page["data"]}
    assert by_id[TINY] == {
        "id": TINY,
        "object": "model",
        "created": by_id[TINY]["created"],
        "owned_by": "replayft",
        "pretrained": False,  # the presets are randomly initialised, and say so
        "description": by_id[TINY]["description"],
    }
    assert "Randomly initialised" in by_id[TINY]["description"]
    assert team.ok(team.get(f"{MODELS}/{TINY}")) == by_id[TINY]  # the id holds a slash


def test_a_registered_base_model_is_listed_for_every_team(deployment, team, other_team):
    from api.services.registry import register
    from control.db.session import session_scope

    folder = deployment.data_dir / "registered-model"
    folder.mkdir(exist_ok=True)
    with session_scope() as session:
        register(session=session, name="acme/base-1", kind="base", paths=[str(folder)])
    for t in (team, other_team):
        assert team.ok(t.get(f"{MODELS}/acme/base-1"))["owned_by"] == "system"


def test_a_fine_tuned_model_belongs_to_its_team(deployment, team, other_team, team_files, queue):
    from transformers import LlamaConfig

    from replay_engine.models import PRESETS

    target, _ = team_files
    job = team.create_job(tiny_job(target))["id"]
    name = f"ft:{TINY}:{team.name}::{job}"
    folder = deployment.data_dir / "jobs" / job / "checkpoints" / "step-3"
    folder.mkdir(parents=True)
    LlamaConfig(**PRESETS[TINY]).save_pretrained(folder)  # what a checkpoint folder holds first
    set_job(job, status="succeeded", fine_tuned_model=name, final_checkpoint=str(folder))

    model = team.ok(team.get(f"{MODELS}/{name}"))
    assert model["owned_by"] == team.id and model["id"] in {
        m["id"] for m in team.ok(team.get(MODELS))["data"]
    }
    assert_error(other_team.get(f"{MODELS}/{name}"), 404, "model")
    assert name not in other_team.get(MODELS).text

    queue.clear()
    nxt = team.create_job(tiny_job(target, model=name))  # trains on from the checkpoint
    assert nxt["model"] == name and queue.enqueued == [("replayft.prepare_job", (nxt["id"],))]
    resp = other_team.post(JOBS, json=tiny_job(target, model=name))
    assert_error(resp, 400, "model")


def test_an_unknown_model_is_404_and_routes_need_a_key(client, team):
    err = assert_error(team.get(f"{MODELS}/replayft/no-such-model"), 404, "model")
    assert err["type"] == "not_found_error", err
    for path in (MODELS, f"{MODELS}/{TINY}"):
        assert_error(client.get(path), 401)


def test_a_jobs_checkpoints_are_models_of_its_team(deployment, team, other_team, team_files):
    from appkit import add_rows

    from control.db.models import Checkpoint

    job = team.create_job(tiny_job(team_files[0]))["id"]
    name = f"ft:{TINY}:{team.name}::{job}"
    folders = {}
    for step in (2, 4, 6):
        folders[step] = deployment.data_dir / "jobs" / job / "checkpoints" / f"step-{step}"
        folders[step].mkdir(parents=True)
        add_rows(
            Checkpoint(
                job_id=job,
                step_number=step,
                path=str(folders[step]),
                fine_tuned_model_checkpoint=f"{name}:ckpt-step-{step}",
                created_at=1700000000 + step,
            )
        )

    def team_models(t):
        return [m["id"] for m in t.ok(t.get(MODELS))["data"] if m["id"].startswith("ft:")]

    # while the job runs, its checkpoints are already models (completions accept them)
    set_job(job, status="running")
    ckpts = [f"{name}:ckpt-step-{step}" for step in (6, 4, 2)]
    assert team_models(team) == ckpts
    model = team.ok(team.get(f"{MODELS}/{ckpts[0]}"))
    assert model == {
        "id": ckpts[0],
        "object": "model",
        "created": 1700000006,
        "owned_by": team.id,
        "pretrained": None,
        "description": f"The checkpoint at step 6 of job {job}.",
    }
    assert model in team.ok(team.get(MODELS))["data"]

    # the finished job's model comes first, then its checkpoints, newest step first
    set_job(job, status="succeeded", fine_tuned_model=name, final_checkpoint=str(folders[6]))
    assert team_models(team) == [name, *ckpts]

    # a pruned checkpoint is no model any more
    folders[2].rmdir()
    assert team_models(team) == [name, *ckpts[:2]]
    assert_error(team.get(f"{MODELS}/{ckpts[2]}"), 404, "model")
    # another team sees none of them; ids made up from them are no models either
    assert team_models(other_team) == []
    for model_id in ckpts:
        assert_error(other_team.get(f"{MODELS}/{model_id}"), 404, "model")
    for model_id in (f"{name}:ckpt-step-8", f"{name}:ckpt-step-x"):
        assert_error(team.get(f"{MODELS}/{model_id}"), 404, "model")
