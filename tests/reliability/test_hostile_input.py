"""Hostile and absurd input (issue 11, items 4 and 7): every request here was a 500, or was
accepted and then failed later or would have run for years. Each must be a 400 (or 404/413 where
that is the right answer) with `error.param` naming the field, and write nothing.

Run against two real deployments: the session's PostgreSQL + Redis one (`service`) and one on
the embedded defaults (SQLite, SQLite broker) with a files worker, because the two databases fail
on different input (PostgreSQL refuses NUL and 32-bit overflows, SQLite 64-bit ones). The
SQLite deployment's files worker allows fewer steps per job than its API, so a job whose exact
plan is over the limit is caught where the plan is resolved. Engine-level tests at the end check
the same bounds on `JobSpec`, which `replayft train` uses without any service.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from servicekit import (
    JOBS,
    MAX_UPLOAD_BYTES,
    Service,
    Team,
    assert_error,
    files_under,
    multipart,
    service_env,
)

from replay_engine.spec import JobSpec, SpecError, parse_spec

# the postgresql half runs on the session's `service` (through request.getfixturevalue): under
# xdist, on the worker that holds it (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("session-deployment")

SWEEPS = "/v1/sweeps"
NUL = "\x00"
WORKER_MAX_STEPS = 5  # the SQLite deployment's files worker: a tiny 1-epoch job plans ~25


@pytest.fixture(scope="module")
def sqlite_service(tmp_path_factory, cache_dir):
    """A deployment on the embedded defaults: no database or broker URL."""
    root = tmp_path_factory.mktemp("sqlite-service")
    (root / "data").mkdir()
    (root / "tmp").mkdir()
    env = service_env(
        REPLAYFT_DATA_DIR=root / "data",
        REPLAYFT_MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES),
        REPLAYFT_CACHE_DIR=cache_dir,
        TMPDIR=root / "tmp",
    )
    svc = Service(root, env)
    try:
        upgrade = svc.cli("db", "upgrade")
        assert upgrade.returncode == 0, f"replayft db upgrade failed:\n{upgrade.stderr}"
        svc.env = {**env, "REPLAYFT_MAX_STEPS_PER_JOB": str(WORKER_MAX_STEPS)}
        svc.start_worker("files")
        svc.env = env
        svc.start_api()
        yield svc
    finally:
        svc.stop()


@dataclass
class Deployment:
    service: Service
    team: Team
    target: str  # processed fine-tune file id
    replay: str  # processed replay file id
    job: str  # a job of the team's (cancelled), for the routes below a job

    def rows(self) -> dict[str, int]:
        """What a refused request must not add to: the team's rows and the stored files."""
        return {
            "files": len(self.team.list_all("/v1/files")),
            "jobs": len(self.team.list_all(JOBS)),
            "sweeps": len(self.team.list_all(SWEEPS)),
            "stored files": len(files_under(self.service.data_dir / "files")),
        }


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def deployment(request, target_jsonl, replay_jsonl) -> Deployment:
    svc = request.getfixturevalue("service" if request.param == "postgresql" else "sqlite_service")
    team = svc.team(f"hostile-{request.param}")
    target = team.processed_file(target_jsonl, "fine-tune")["id"]
    replay = team.processed_file(replay_jsonl, "replay")["id"]
    job = team.create_job(team.tiny_job(target, replay, n_epochs=0.1))["id"]
    team.ok(team.post(f"{JOBS}/{job}/cancel"))
    yield Deployment(svc, team, target, replay, job)
    team.close()


def job_body(d: Deployment, **changes: Any) -> dict[str, Any]:
    """A valid tiny job (1 epoch, replay 0.25), with `changes` applied at dotted paths
    (`hp.X` = method.supervised.hyperparameters.X)."""
    body = Team.tiny_job(d.target, d.replay, n_epochs=1)
    for path, value in changes.items():
        if path.startswith("hp."):
            node, key = body["method"]["supervised"]["hyperparameters"], path[3:]
        elif "." in path:
            head, key = path.split(".")
            node = body.setdefault(head, {})
        else:
            node, key = body, path
        node[key] = value
    return body


def post_json(team: Team, path: str, body: Any, headers: dict[str, str] | None = None):
    """JSON as Python writes it: NaN and Infinity literals included, as json.loads accepts."""
    return team.post(
        path,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def raw_request(url: str, request_line: str, headers: dict[str, str]) -> tuple[int, dict]:
    """One HTTP/1.1 request written by hand (httpx refuses to send a NUL in a header)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    lines = [request_line, f"Host: {host}:{port}", "Connection: close", "Content-Length: 0"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"raw": body[:300].decode("latin-1")}


# ---------------------------------------------------------------------------- item 4: reads
# (method, path, query params, param); {job} is a job of the team
READS = [
    ("GET", "/v1/files/file-%00x", {}, "file_id"),
    ("DELETE", "/v1/files/file-%00x", {}, "file_id"),
    ("GET", "/v1/files/file-%00x/content", {}, "file_id"),
    ("GET", "/v1/files/" + "f" * 65, {}, "file_id"),
    ("GET", "/v1/files", {"after": NUL}, "after"),
    ("GET", "/v1/files", {"purpose": "fine-tune" + NUL}, "purpose"),
    ("GET", f"{JOBS}/ftjob-%00x", {}, "job_id"),
    ("POST", f"{JOBS}/ftjob-%00x/cancel", {}, "job_id"),
    ("POST", f"{JOBS}/ftjob-%00x/pause", {}, "job_id"),
    ("POST", f"{JOBS}/ftjob-%00x/resume", {}, "job_id"),
    ("GET", f"{JOBS}/ftjob-%00x/events", {}, "job_id"),
    ("GET", JOBS, {"after": NUL}, "after"),
    ("GET", f"{JOBS}/{{job}}/events", {"after": "ftevent-" + NUL}, "after"),
    ("GET", f"{JOBS}/{{job}}/checkpoints", {"after": NUL}, "after"),
    ("GET", f"{JOBS}/{{job}}/checkpoints/ftckpt-%00x/download", {}, "checkpoint_id"),
    ("GET", f"{JOBS}/{{job}}/stream", {"after": NUL}, "after"),
    ("GET", f"{JOBS}/{{job}}/stream", {"since_step": 2**31}, "since_step"),
    ("GET", f"{JOBS}/{{job}}/stream", {"since_step": -(2**64)}, "since_step"),
    ("GET", f"{JOBS}/{{job}}/metrics", {"start_step": 2**31}, "start_step"),
    ("GET", f"{JOBS}/{{job}}/metrics", {"end_step": -(2**64)}, "end_step"),
    ("GET", f"{JOBS}/{{job}}/metrics", {"end_step": 2**63}, "end_step"),
    ("GET", f"{JOBS}/{{job}}/metrics", {"max_points": 2**64}, "max_points"),
    ("GET", f"{SWEEPS}/sweep-%00x", {}, "sweep_id"),
    ("POST", f"{SWEEPS}/sweep-%00x/cancel", {}, "sweep_id"),
    ("GET", f"{SWEEPS}/sweep-%00x/report", {}, "sweep_id"),
    ("GET", SWEEPS, {"after": NUL}, "after"),
]


@pytest.mark.parametrize(
    ("method", "path", "params", "param"),
    READS,
    ids=[f"{m} {p} {sorted(q)}" for m, p, q, _ in READS],
)
def test_bad_id_cursor_or_step_is_a_400(deployment: Deployment, method, path, params, param):
    resp = deployment.team.http.request(
        method, path.format(job=deployment.job), params=params, timeout=30
    )
    assert_error(resp, 400, param)


# ---------------------------------------------------------------------------- item 4: writes
# (field changes on a valid job body, param)
JOB_FIELDS = [
    ({"model": "replayft/llama-tiny" + NUL}, "model"),
    ({"model": "m" * 501}, "model"),
    ({"training_file": "file-" + NUL}, "training_file"),
    ({"validation_file": "file-" + NUL}, "validation_file"),
    ({"suffix": "a" + NUL}, "suffix"),
    ({"suffix": "\ud800"}, "suffix"),  # a lone surrogate: no database can encode it
    ({"metadata": {"k" + NUL: "v"}}, "metadata"),
    ({"metadata": {"k": "v" + NUL}}, "metadata.k"),
    ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ({"replay.dataset": "file-" + NUL}, "replay.dataset"),
    (
        {"hp.adapter": {"type": "lora", "target_modules": ["q_proj" + NUL]}},
        "adapter.target_modules",
    ),
    ({"seed": 2**31}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"seed": -1}, "seed"),
    ({"hp.n_epochs": float("nan")}, "n_epochs"),
    ({"hp.n_epochs": float("inf")}, "n_epochs"),
    ({"hp.learning_rate_multiplier": float("-inf")}, "learning_rate_multiplier"),
    ({"replay.fraction": float("nan")}, "replay.fraction"),
    # item 7: accepted, then failed later or planned for years
    ({"hp.n_epochs": 1e308}, "n_epochs"),
    ({"hp.n_epochs": 1e9}, "n_epochs"),
    ({"hp.total_steps": 10**12}, "total_steps"),
    ({"replay.fraction": 0.999999}, "replay.fraction"),
    ({"hp.batch_size": 10**12}, "batch_size"),
    ({"hp.eval_sequences": 10**9}, "eval_sequences"),
    # within every field's bounds, over the deployment's token limit (10^12)
    ({"hp.batch_size": 2**16, "hp.total_steps": 300_000}, "hyperparameters.total_steps"),
]


def _field_ids(cases):
    return [json.dumps(c, default=str)[:60] for c, _ in cases]


def _param_matches(err: dict, param: str) -> None:
    """`param`, or the field's path as the client set it (under method.supervised), or an item
    of it (a list index)."""
    got = err["param"] or ""
    for name in (param, f"hyperparameters.{param}", f"method.supervised.hyperparameters.{param}"):
        if got == name or got.startswith(name + "."):
            return
    raise AssertionError(f"param should name {param!r}: {err}")


@pytest.mark.parametrize(("changes", "param"), JOB_FIELDS, ids=_field_ids(JOB_FIELDS))
def test_bad_job_field_is_a_400_naming_it(deployment: Deployment, changes, param):
    before = deployment.rows()
    for path in (JOBS, "/v1/fine_tuning/plan"):
        resp = post_json(deployment.team, path, job_body(deployment, **changes))
        _param_matches(assert_error(resp, 400), param)
    assert deployment.rows() == before


def test_limit_errors_name_the_limit(deployment: Deployment):
    # 10^4 epochs of ~93 sequences, one a step, half of each batch replay: ~1.9M steps
    body = job_body(deployment, **{"hp.n_epochs": 1e4, "hp.batch_size": 1, "replay.fraction": 0.5})
    resp = post_json(deployment.team, JOBS, body)
    err = assert_error(resp, 400, "hyperparameters.n_epochs")
    assert "REPLAYFT_MAX_STEPS_PER_JOB" in err["message"] and "1,000,000" in err["message"], err
    assert err["code"] == "limit_exceeded", err
    body = job_body(deployment, **{"hp.batch_size": 2**16, "hp.total_steps": 300_000})
    err = assert_error(post_json(deployment.team, JOBS, body), 400, "hyperparameters.total_steps")
    assert "REPLAYFT_MAX_TOKENS_PER_JOB" in err["message"], err


SWEEP_FIELDS = [
    ({"model": "replayft/llama-tiny" + NUL}, "model"),
    ({"metadata": {"k": NUL}}, "metadata.k"),
    ({"seed": 2**31}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"hp.n_epochs": float("nan")}, "n_epochs"),
    ({"replay.dataset": "file-" + NUL}, "replay.dataset"),
    ({"replay_fractions": [0.999999]}, "replay_fractions"),
    ({"hp.total_steps": 10**12}, "total_steps"),
]


def sweep_body(d: Deployment, **changes: Any) -> dict[str, Any]:
    """A valid small sweep (one configuration, three reference runs) with `changes`."""
    body = job_body(d, **changes)
    body["replay"] = {"dataset": body["replay"].get("dataset", d.replay)}
    body.setdefault("replay_fractions", [0.25])
    body["reference_subsets"] = [0.25, 0.5, 1.0]
    return body


@pytest.mark.parametrize(("changes", "param"), SWEEP_FIELDS, ids=_field_ids(SWEEP_FIELDS))
def test_bad_sweep_field_is_a_400_naming_it(deployment: Deployment, changes, param):
    before = deployment.rows()
    resp = post_json(deployment.team, SWEEPS, sweep_body(deployment, **changes))
    _param_matches(assert_error(resp, 400), param)
    assert deployment.rows() == before


@pytest.mark.parametrize("path", [JOBS, SWEEPS])
@pytest.mark.parametrize("key", ["k" * 256, "k" * 10_000])
def test_long_idempotency_key_is_a_400(deployment: Deployment, path, key):
    before = deployment.rows()
    body = sweep_body(deployment) if path == SWEEPS else job_body(deployment)
    resp = post_json(deployment.team, path, body, headers={"Idempotency-Key": key})
    if len(key) > 8000:  # past the server's header size limit, if it has one
        assert resp.status_code in (400, 431), resp.text
    else:
        assert_error(resp, 400, "Idempotency-Key")
    assert deployment.rows() == before


def test_nul_in_idempotency_key_is_a_400(deployment: Deployment):
    before = deployment.rows()
    status, body = raw_request(
        deployment.service.url,
        f"POST {JOBS} HTTP/1.1",
        {"Authorization": f"Bearer {deployment.team.key}", "Idempotency-Key": "a\x00b"},
    )
    assert status == 400, body
    if "error" in body:  # the HTTP server itself may refuse the header first
        assert body["error"]["param"] == "Idempotency-Key", body
    assert deployment.rows() == before


# ---------------------------------------------------------------------------- item 4: uploads
UPLOADS = {
    "nul in file name": multipart(b"a\x00b.jsonl"),
    "501-character file name": multipart(b"a" * 497 + b".txt"),
    "10000-character file name": multipart(b"a" * 10_000),
    "1 MB part header": multipart(b"a" * 1_000_000),
    "malformed multipart": (b"this is not multipart", "multipart/form-data; boundary=xyz"),
    "bad part header": (
        b"--xyz\r\nnot a header\r\n\r\nbody\r\n--xyz--\r\n",
        "multipart/form-data; boundary=xyz",
    ),
}


@pytest.mark.parametrize("case", list(UPLOADS))
def test_bad_upload_is_a_400_naming_the_file(deployment: Deployment, case):
    before = deployment.rows()
    content, content_type = UPLOADS[case]
    resp = deployment.team.post(
        "/v1/files", content=content, headers={"Content-Type": content_type}
    )
    assert_error(resp, 400, "file")
    assert deployment.rows() == before


def test_a_500_character_file_name_is_kept(deployment: Deployment):
    """The limit is the column's: a name of exactly 500 characters is stored whole."""
    name = "b" * 494 + ".jsonl"
    content, content_type = multipart(name.encode())
    resp = deployment.team.post(
        "/v1/files", content=content, headers={"Content-Type": content_type}
    )
    file = deployment.team.ok(resp)
    assert file["filename"] == name
    deployment.team.ok(deployment.team.delete(f"/v1/files/{file['id']}"))


# ---------------------------------------------------------------------------- item 7: the plan
@pytest.mark.parametrize("deployment", ["sqlite"], indirect=True)  # its files worker's limit
def test_a_plan_over_the_limit_found_when_tokenizing_fails_the_job(deployment: Deployment):
    """The SQLite deployment's files worker allows WORKER_MAX_STEPS steps; its API allows the
    default. A tiny 1-epoch job passes submission (its estimate is far below the API's limit)
    and fails when its exact plan is resolved, naming the limit, before it is ever queued."""
    team = deployment.team
    job = team.create_job(job_body(deployment))
    done = team.poll(
        lambda: team.job(job["id"]),
        lambda j: j["status"] not in ("validating_files",),
        120,
        "the job to be prepared",
    )
    assert done["status"] == "failed", done
    assert done["error"]["param"] == "hyperparameters.n_epochs", done
    assert "REPLAYFT_MAX_STEPS_PER_JOB" in done["error"]["message"], done
    assert f"at most {WORKER_MAX_STEPS} steps" in done["error"]["message"], done


# ---------------------------------------------------------------------------- the engine
BASE = {"model": "replayft/llama-tiny", "training_file": "t.jsonl", "replay": {"dataset": "g"}}
ENGINE_CASES = [
    ({"seed": -1}, "seed"),
    ({"seed": 2**31}, "seed"),
    ({"seed": 2**63}, "seed"),
    ({"n_epochs": float("nan")}, "n_epochs"),
    ({"n_epochs": float("inf")}, "n_epochs"),
    ({"n_epochs": 1e308}, "n_epochs"),
    ({"n_epochs": 1e9}, "n_epochs"),
    ({"total_steps": 10**12}, "total_steps"),
    ({"batch_size": 10**12}, "batch_size"),
    ({"micro_batch_size": 0}, "micro_batch_size"),
    ({"eval_sequences": 10**9}, "eval_sequences"),
    ({"eval_interval": 2**31}, "eval_interval"),
    ({"seq_len": 2**40}, "seq_len"),
    ({"learning_rate": float("inf")}, "learning_rate"),
    ({"adam_betas": [0.9, float("nan")]}, "adam_betas.1"),
    ({"replay": {"dataset": "g", "fraction": 1.0}}, "replay.fraction"),
    ({"replay": {"dataset": "g", "stage2_duration": float("nan")}}, "replay.stage2_duration"),
    ({"distributed": {"nodes": 2**40}}, "distributed.nodes"),
    ({"distributed": {"nodes": 2, "rendezvous_timeout": 0}}, "distributed.rendezvous_timeout"),
    ({"method": {"type": "lora", "lora": {"r": 2**40}}}, "method.lora.r"),
]


@pytest.mark.parametrize(("change", "path"), ENGINE_CASES, ids=_field_ids(ENGINE_CASES))
def test_engine_spec_bounds_name_the_field(change, path):
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, **change})
    assert info.value.param == path, info.value.errors
    assert "must be" in info.value.errors[0][1], info.value.errors


def test_engine_bounds_read_as_intervals_and_show_in_the_schema():
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, "seed": -1})
    assert info.value.errors == [("seed", "must be in [0, 2147483648), got -1")]
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, "n_epochs": float("nan")})
    assert "finite" in info.value.errors[0][1], info.value.errors
    props = JobSpec.model_json_schema()["properties"]
    assert props["seed"]["minimum"] == 0 and props["seed"]["exclusiveMaximum"] == 2**31, props
    assert props["batch_size"]["maximum"] == 2**16, props["batch_size"]
    # the largest values the bounds allow still make a spec
    assert parse_spec({**BASE, "seed": 2**31 - 1, "batch_size": 2**16, "n_epochs": 1e4}).seed


def test_api_schema_declares_the_bounds():
    """The OpenAPI schema shows the request bounds, so clients can know them in advance."""
    from api.main import create_app

    schema = create_app().openapi()
    components = schema["components"]["schemas"]
    seed = components["JobCreate"]["properties"]["seed"]["anyOf"][0]
    assert seed["minimum"] == 0 and seed["exclusiveMaximum"] == 2**31, seed
    assert components["JobCreate"]["properties"]["model"]["maxLength"] == 500
    create = schema["paths"]["/v1/fine_tuning/jobs"]["post"]["parameters"]
    key = next(p for p in create if p["name"] == "Idempotency-Key")
    assert key["schema"]["anyOf"][0]["maxLength"] == 255, key
    metrics = schema["paths"]["/v1/fine_tuning/jobs/{job_id}/metrics"]["get"]["parameters"]
    end = next(p for p in metrics if p["name"] == "end_step")["schema"]["anyOf"][0]
    assert end["minimum"] == -(2**31) and end["exclusiveMaximum"] == 2**31, end
