"""A job's `integrations` (experiment trackers) at the API: OpenAI's wandb shape plus mlflow and
tensorboard, echoed on the job, inherited by a sweep's members; every bad one a 400 naming the
field, with nothing created; an MLflow URI and a W&B entity only from the deployment's
allow-lists; no field that could carry a credential or a local path."""

import pytest
from appkit import JOBS, SWEEPS, tiny_job
from servicekit import assert_error, sweep_body

from control.settings import get_settings

MLFLOW_DEFAULT = "http://mlflow.internal:5000"
MLFLOW_OTHER = "http://mlflow-b.internal:5000"


@pytest.fixture
def mlflow_allowed(monkeypatch):
    """This deployment's MLflow servers: a default and one more a job may name."""
    monkeypatch.setattr(get_settings(), "mlflow_tracking_uri", MLFLOW_DEFAULT)
    monkeypatch.setattr(get_settings(), "mlflow_tracking_uris", [MLFLOW_OTHER])


ALL_THREE = [
    {
        "type": "wandb",
        "wandb": {"project": "replay", "name": "run 1", "entity": "team-a", "tags": ["x", "y"]},
    },
    {"type": "mlflow", "mlflow": {"experiment": "replay-exp", "tracking_uri": MLFLOW_OTHER}},
    {"type": "tensorboard", "tensorboard": {}},
]


def test_a_job_keeps_and_shows_its_integrations(team, team_files, queue, mlflow_allowed):
    target, replay = team_files
    job = team.ok(team.post(JOBS, json=tiny_job(target, replay, integrations=ALL_THREE)))
    assert job["integrations"] == [
        ALL_THREE[0],
        {
            "type": "mlflow",
            "mlflow": {
                "experiment": "replay-exp",
                "tracking_uri": MLFLOW_OTHER,
                "run_name": None,
            },
        },
        ALL_THREE[2],
    ], job["integrations"]
    assert team.ok(team.get(f"{JOBS}/{job['id']}"))["integrations"] == job["integrations"]

    # the shortest forms: the default MLflow server and experiment, tensorboard with no options
    short = [{"type": "mlflow"}, {"type": "tensorboard"}]
    job = team.ok(team.post(JOBS, json=tiny_job(target, replay, integrations=short)))
    assert job["integrations"] == [
        {
            "type": "mlflow",
            "mlflow": {"tracking_uri": None, "experiment": "replayft", "run_name": None},
        },
        {"type": "tensorboard", "tensorboard": {}},
    ]
    # none asked for: an empty list, as OpenAI answers
    job = team.ok(team.post(JOBS, json=tiny_job(target, replay)))
    assert job["integrations"] == []


BAD = [
    ([{"type": "wandb", "wandb": {}}], "integrations[0].wandb.project"),
    ([{"type": "wandb"}], "integrations[0].wandb"),
    ([{"type": "wandb", "wandb": {"project": "a/b"}}], "integrations[0].wandb.project"),
    ([{"type": "wandb", "wandb": {"project": ""}}], "integrations[0].wandb.project"),
    (
        [{"type": "wandb", "wandb": {"project": "p", "entity": "x:y"}}],
        "integrations[0].wandb.entity",
    ),
    (
        [{"type": "wandb", "wandb": {"project": "p", "tags": ["t" * 65]}}],
        "integrations[0].wandb.tags.0",
    ),
    # no field for a credential or a folder: the workers' own settings hold those
    (
        [{"type": "wandb", "wandb": {"project": "p", "api_key": "k"}}],
        "integrations[0].wandb.api_key",
    ),
    (
        [{"type": "tensorboard"}, {"type": "tensorboard", "tensorboard": {"log_dir": "/etc"}}],
        "integrations[1].tensorboard.log_dir",
    ),
    ([{"type": "comet"}], "integrations[0].type"),
    ([{"wandb": {"project": "p"}}], "integrations[0].type"),
    ([{"type": "tensorboard"}, {"type": "tensorboard"}], "integrations[1].type"),
    (
        [{"type": "mlflow", "mlflow": {"tracking_uri": "file:///etc/replayft"}}],
        "integrations[0].mlflow.tracking_uri",
    ),
    ([{"type": "mlflow", "mlflow": {"experiment": ""}}], "integrations[0].mlflow.experiment"),
    ({"type": "tensorboard"}, "integrations"),
    (["tensorboard"], "integrations[0]"),
    ([{"type": "tensorboard"}] * 4, "integrations"),
]


@pytest.mark.parametrize(("integrations", "param"), BAD, ids=[p for _, p in BAD])
def test_a_bad_integration_is_a_400_naming_the_field_and_creates_nothing(
    team, team_files, queue, mlflow_allowed, integrations, param
):
    target, replay = team_files
    body = tiny_job(target, replay, integrations=integrations)
    err = assert_error(team.post(JOBS, json=body), 400, param)
    assert err["message"].startswith(param), err
    assert team.list_all(JOBS) == [] and queue.enqueued == []


def test_mlflow_needs_a_server_the_deployment_configured(team, team_files, queue, monkeypatch):
    target, replay = team_files
    monkeypatch.setattr(get_settings(), "mlflow_tracking_uri", "")
    monkeypatch.setattr(get_settings(), "mlflow_tracking_uris", [])
    body = tiny_job(target, replay, integrations=[{"type": "mlflow"}])
    param = "integrations[0].mlflow.tracking_uri"
    err = assert_error(team.post(JOBS, json=body), 400, param)
    assert err["code"] == "integration_unavailable", err
    # a URI with credentials in the allow-list never shows in an answer
    secret = "http://user:s3cret@mlflow.internal"
    monkeypatch.setattr(get_settings(), "mlflow_tracking_uris", [secret])
    body["integrations"] = [{"type": "mlflow", "mlflow": {"tracking_uri": "http://elsewhere"}}]
    response = team.post(JOBS, json=body)
    assert_error(response, 400, param)
    assert "s3cret" not in response.text
    assert team.list_all(JOBS) == [] and queue.enqueued == []


def test_wandb_entities_the_deployment_lists_are_the_only_ones(team, team_files, monkeypatch):
    target, replay = team_files
    monkeypatch.setattr(get_settings(), "wandb_entities", ["research", "team-a"])
    wandb = {"type": "wandb", "wandb": {"project": "replay", "entity": "someone-else"}}
    body = tiny_job(target, replay, integrations=[{"type": "tensorboard"}, wandb])
    err = assert_error(team.post(JOBS, json=body), 400, "integrations[1].wandb.entity")
    assert "someone-else" in err["message"] and "research, team-a" in err["message"], err
    assert team.list_all(JOBS) == []

    wandb["wandb"]["entity"] = "team-a"
    assert team.create_job(body)["integrations"][1]["wandb"]["entity"] == "team-a"
    del wandb["wandb"]["entity"]  # none named: the deployment's first, not the key's default
    assert team.create_job(body)["integrations"][1]["wandb"]["entity"] == "research"


def test_sweep_members_inherit_the_sweeps_integrations(team, team_files, queue, mlflow_allowed):
    target, replay = team_files
    integrations = [{"type": "wandb", "wandb": {"project": "sweeps"}}, {"type": "tensorboard"}]
    sweep = team.ok(team.post(SWEEPS, json=sweep_body(target, replay, integrations=integrations)))
    for member in sweep["members"]:
        job = team.ok(team.get(f"{JOBS}/{member['job_id']}"))
        assert job["integrations"] == [
            {
                "type": "wandb",
                "wandb": {"project": "sweeps", "name": None, "entity": None, "tags": None},
            },
            {"type": "tensorboard", "tensorboard": {}},
        ], job["integrations"]
    bad = sweep_body(target, replay, integrations=[{"type": "wandb", "wandb": {}}])
    assert_error(team.post(SWEEPS, json=bad), 400, "integrations[0].wandb.project")
