"""The client commands (`replayft files ...`, `replayft jobs ...`) run as subprocesses against the
session's real server (PostgreSQL, Redis, uvicorn and a Celery worker; see conftest.py), with the
URL and key in the environment as a user sets them.

Every upload costs a validation task on the session's single worker, so the module shares its
work: `uploaded` is one `files upload --wait`, `job_run` one `jobs submit --wait` of a tiny replay
spec, followed live by `jobs logs --follow` while it runs, and the tests read what they did. A
few in-process tests at the end cover the spec-to-request mapping that needs no server.
"""

import json
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from servicekit import TINY, Team, service_env

from client.http import CLIError, api_error
from client.submit import attach_ids, build_submission, join_jsonl
from replay_engine.spec import parse_spec

JOB_LINE = re.compile(r"^(ftjob-\S+) (\S+)")
STEP_LINE = re.compile(r"^step (\d+)/(\d+)\b")
CLI_TIMEOUT_S = 300  # a tiny job on a busy 2-core machine
WAIT = ("--timeout", "240")  # the CLI gives up (and says on what) before the test does


# ---------------------------------------------------------------------------- helpers
def cli_env(service, key: str | None) -> dict[str, str]:
    settings = {"REPLAYFT_URL": service.url}
    if key is not None:
        settings["REPLAYFT_API_KEY"] = key
    return service_env(**settings)


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def run_cli(env: dict[str, str], cwd: Path, *args: str, timeout: float = CLI_TIMEOUT_S):
    return subprocess.run(
        cli_argv(*args),
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def show(result) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


class Background:
    """A CLI subprocess whose stdout lines can be awaited while it runs."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str):
        self.proc = subprocess.Popen(
            cli_argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self._new: queue.Queue = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, daemon=True),
            threading.Thread(target=lambda: self._stderr.append(self.proc.stderr.read())),
        ]
        for t in self._threads:
            t.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))

    def wait_line(self, pattern: re.Pattern, timeout: float, diagnostics=lambda: "") -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if m := pattern.match(line):
                    return m
            try:
                self.lines.append(self._new.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                self.kill()
                raise AssertionError(
                    f"no line matching {pattern.pattern!r} within {timeout:.0f}s: {self.lines}\n"
                    f"{diagnostics()}"
                ) from None

    def finish(self, timeout: float) -> Result:
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        for t in self._threads:
            t.join(timeout=10)
        while not self._new.empty():
            self.lines.append(self._new.get())
        return Result(self.proc.returncode, "\n".join(self.lines) + "\n", "".join(self._stderr))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def write_spec(folder: Path, target: Path | str, replay_data: Path | str, **overrides) -> Path:
    """An engine spec as `replayft train` takes it. Local data is copied beside the spec and
    named by a relative path; a string (a file id) goes in as it is. An override of None
    removes the field."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)

    def place(source: Path | str, name: str) -> str:
        if isinstance(source, str):
            return source
        (data / name).write_bytes(source.read_bytes())
        return f"data/{name}"

    spec = {
        "model": TINY,
        "training_file": place(target, "gsm8k.jsonl"),
        "replay": {"dataset": place(replay_data, "c4.jsonl"), "fraction": 0.25},
        "seq_len": 64,
        "batch_size": 4,
        "n_epochs": 0.25,
        "eval_sequences": 4,
        "eval_interval": 4,
        "checkpoint_interval": 1000,  # only the final checkpoint: disk writes are slow here
        "seed": 7,
    }
    for key, value in overrides.items():
        if value is None:
            spec.pop(key, None)
        elif isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ---------------------------------------------------------------------------- shared runs
@pytest.fixture(scope="module")
def client_team(service) -> Team:
    """One team for the module: its key is what the CLI gets through REPLAYFT_API_KEY."""
    t = service.team("client-cli")
    yield t
    t.close()


@pytest.fixture(scope="module")
def env(service, client_team) -> dict[str, str]:
    return cli_env(service, client_team.key)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("client-cli")


@pytest.fixture(scope="module")
def uploaded(env, workdir, target_jsonl):
    """`replayft files upload GSM8K --purpose fine-tune --wait`."""
    return run_cli(
        env,
        workdir,
        "files",
        "upload",
        str(target_jsonl),
        "--purpose",
        "fine-tune",
        "--wait",
        *WAIT,
    )


@dataclass
class JobRun:
    job_id: str
    submit: Result
    follow: Result


@pytest.fixture(scope="module")
def job_run(service, env, workdir, client_team, target_jsonl, replay_jsonl) -> JobRun:
    """`jobs submit SPEC --wait --suffix clicli` of a tiny replay spec with local data, and
    `jobs logs ID --follow` started as soon as the job id is printed."""
    # packing_attention: not the default, so the job object shows that the field got through
    spec = write_spec(workdir / "run", target_jsonl, replay_jsonl, packing_attention="causal")
    submit = Background(
        env, workdir, "jobs", "submit", str(spec), "--wait", "--suffix", "clicli", *WAIT
    )
    job_id = submit.wait_line(JOB_LINE, CLI_TIMEOUT_S, service.diagnostics)[1]
    client_team.job_ids.append(job_id)
    follow = Background(env, workdir, "jobs", "logs", job_id, "--follow")
    submitted = submit.finish(CLI_TIMEOUT_S)
    assert submitted.returncode == 0, f"{show(submitted)}\n{service.diagnostics()}"
    return JobRun(job_id, submitted, follow.finish(60))


# ---------------------------------------------------------------------------- against the server
def test_files_upload_waits_for_validation(env, workdir, uploaded):
    assert uploaded.returncode == 0, show(uploaded)
    file = json.loads(uploaded.stdout)
    assert file["id"].startswith("file-") and file["status"] == "processed", file
    assert file["purpose"] == "fine-tune" and file["stats"]["examples"] == 30, file

    bad = workdir / "bad.jsonl"
    bad.write_text('{"prompt": "1 + 1 =", "completion": " 2"}\n{"prompt": "2 + 2 =", \n')
    result = run_cli(
        env, workdir, "files", "upload", str(bad), "--purpose", "fine-tune", "--wait", *WAIT
    )
    assert result.returncode == 2, show(result)
    assert json.loads(result.stdout)["status"] == "error", show(result)
    assert re.search(
        r"error: file-\S+ \(bad\.jsonl\) failed validation: .*line 2", result.stderr
    ), show(result)


def test_submit_uploads_the_spec_data_and_waits_for_success(client_team, job_run):
    lines = job_run.submit.stdout.splitlines()
    assert len(lines) == 2, show(job_run.submit)
    first, last = JOB_LINE.match(lines[0]), JOB_LINE.match(lines[1])
    assert first[1] == last[1] == job_run.job_id and last[2] == "succeeded", show(job_run.submit)
    assert f"ft:{TINY}:" in lines[1] and "clicli" in lines[1], show(job_run.submit)
    assert "waiting for the server to validate" in job_run.submit.stderr, show(job_run.submit)

    # what reached the server is the spec's content, with the local files uploaded
    job = client_team.job(job_run.job_id)
    hp = job["hyperparameters"]
    assert (hp["seq_len"], hp["batch_size"], hp["n_epochs"]) == (64, 4, 0.25), hp
    assert hp["packing_attention"] == "causal", hp
    assert job["seed"] == 7 and job["suffix"] == "clicli", job
    assert job["replay"]["fraction"] == 0.25, job["replay"]
    files = {f["id"]: f for f in client_team.list_all("/v1/files")}
    assert files[job["training_file"]]["filename"] == "gsm8k.jsonl", files
    assert files[job["replay"]["dataset"]]["purpose"] == "replay", job["replay"]
    assert files[job["replay"]["dataset"]]["filename"] == "c4.jsonl", job["replay"]
    total = job["progress"]["total_steps"]
    assert total and job["progress"]["step"] == total, job["progress"]

    # --wait showed the losses: progress lines with the train loss, every eval as it came
    stderr = job_run.submit.stderr
    assert re.search(rf"step \d+/{total}, .*loss \d+\.\d{{4}} \(target ", stderr), stderr
    evals = [r for r in client_team.metrics(job_run.job_id) if r.get("type") == "eval"]
    assert evals, "the job ran no evaluation"
    for record in evals:
        line = (
            f"eval at step {record['step']}: val_loss_target {record['val_loss_target']:.4f}, "
            f"val_loss_generic {record['val_loss_generic']:.4f}"
        )
        assert stderr.count(line) == 1, f"{line!r} not printed once:\n{stderr}"


def test_logs_follow_streams_events_and_a_line_per_step(client_team, job_run, env, workdir):
    total = client_team.job(job_run.job_id)["progress"]["total_steps"]
    for follow in (
        job_run.follow,
        run_cli(env, workdir, "jobs", "logs", job_run.job_id, "--follow", "--poll"),
    ):
        assert follow.returncode == 0, show(follow)
        lines = follow.stdout.splitlines()
        steps = [m for m in map(STEP_LINE.match, lines) if m]
        assert [int(m[1]) for m in steps] == list(range(1, total + 1)), show(follow)
        assert all(int(m[2]) == total for m in steps), show(follow)
        assert "Created fine-tuning job" in lines[0], show(follow)
        assert any("successfully completed" in x for x in lines), show(follow)
        assert any("Eval at step" in x and "val_loss_generic" in x for x in lines), show(follow)
        assert all(" loss " in m.string and "generic " in m.string for m in steps[-3:]), lines
        assert f"{job_run.job_id}: succeeded" in follow.stderr, show(follow)


def test_list_show_logs_and_cancel(client_team, job_run, env, workdir, uploaded, replay_jsonl):
    job_id = job_run.job_id
    job = client_team.job(job_id)
    total = job["progress"]["total_steps"]

    # a second job from already uploaded files (ids in the spec), cancelled before it trains
    spec = write_spec(
        workdir / "by-id", json.loads(uploaded.stdout)["id"], job["replay"]["dataset"]
    )
    result = run_cli(env, workdir, "jobs", "submit", str(spec))
    assert result.returncode == 0 and "uploaded" not in result.stderr, show(result)
    other = JOB_LINE.match(result.stdout)[1]
    client_team.job_ids.append(other)
    result = run_cli(env, workdir, "jobs", "cancel", other)
    assert result.returncode == 0 and result.stdout.split() == [other, "cancelled"], show(result)

    result = run_cli(env, workdir, "jobs", "list")
    assert result.returncode == 0, show(result)
    header, *rows = result.stdout.splitlines()
    assert header.split()[:6] == ["ID", "STATUS", "MODEL", "STEP", "REPLAY", "CREATED"], header
    table = {r.split()[0]: r.split() for r in rows}
    assert list(table)[:2] == [other, job_id], show(result)  # newest first
    assert table[job_id][1:5] == ["succeeded", TINY, f"{total}/{total}", "0.25"], table
    assert table[other][1] == "cancelled", table
    result = run_cli(env, workdir, "jobs", "list", "--status", "cancelled", "--limit", "5")
    assert result.returncode == 0, show(result)
    assert other in result.stdout and job_id not in result.stdout, show(result)

    result = run_cli(env, workdir, "jobs", "show", job_id)
    assert result.returncode == 0, show(result)
    assert json.loads(result.stdout) == client_team.job(job_id)

    result = run_cli(env, workdir, "jobs", "logs", job_id)
    assert result.returncode == 0, show(result)
    messages = result.stdout.splitlines()
    assert "Created fine-tuning job" in messages[0], messages
    assert "successfully completed" in messages[-1], messages
    assert not any(STEP_LINE.match(m) for m in messages), messages  # events only

    result = run_cli(env, workdir, "jobs", "cancel", job_id)
    assert result.returncode == 2 and "already succeeded" in result.stderr, show(result)
    result = run_cli(env, workdir, "jobs", "show", "ftjob-nope")
    assert result.returncode == 2, show(result)
    assert result.stderr.startswith("error: fine_tuning_job_id: No fine-tuning job"), show(result)


def test_bad_spec_exits_2_naming_the_field(client_team, env, workdir, target_jsonl, replay_jsonl):
    before = set(client_team.file_ids())
    spec = write_spec(workdir / "r1", target_jsonl, replay_jsonl, replay={"fraction": 1.0})
    result = run_cli(env, workdir, "jobs", "submit", str(spec), "--wait")
    assert result.returncode == 2, show(result)
    assert "error: replay.fraction: must be in [0, 1), got 1.0" in result.stderr, show(result)
    assert result.stdout == "" and set(client_team.file_ids()) == before

    # a problem only the server sees: its 400 names the field, and the upload is removed
    spec = write_spec(workdir / "model", target_jsonl, "", model="replayft/no-such", replay=None)
    result = run_cli(env, workdir, "jobs", "submit", str(spec), *WAIT)
    assert result.returncode == 2, show(result)
    assert re.search(r"^error: model: .*no-such", result.stderr, re.M), show(result)
    assert "removed the files uploaded for this job" in result.stderr, show(result)
    assert set(client_team.file_ids()) == before


def test_bad_or_missing_key_fails_clearly(service, env, workdir):
    wrong = "rft-wrong-key-1234567890"
    result = run_cli(cli_env(service, None), workdir, "jobs", "--api-key", wrong, "list")
    assert result.returncode == 1, show(result)
    assert "Incorrect API key" in result.stderr and "--api-key" in result.stderr, show(result)
    assert wrong not in result.stdout + result.stderr

    result = run_cli(cli_env(service, None), workdir, "jobs", "list")
    assert result.returncode == 2 and "no API key" in result.stderr, show(result)

    # --url wins over the environment; an unreachable server is named, the key is not
    result = run_cli(env, workdir, "jobs", "list", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1, show(result)
    assert "cannot reach the server at http://127.0.0.1:9" in result.stderr, show(result)
    assert env["REPLAYFT_API_KEY"] not in result.stdout + result.stderr


# ---------------------------------------------------------------------------- in-process
def test_spec_fields_map_to_the_request_and_unsupported_ones_are_errors(tmp_path):
    target = tmp_path / "t.jsonl"
    target.write_text('{"prompt": "a", "completion": "b"}\n')
    spec = parse_spec(
        {
            "model": TINY,
            "training_file": str(target),
            "replay": {"dataset": ["c4-corpus", "file-abc"], "fraction": 0.2, "stage2_duration": 1},
            "seq_len": 64,
            "packing_attention": "causal",
            "lr_scheduler": {"type": "cosine"},
            "total_steps": 10,
            "optimizer_state": "reset",
            "device": "cpu",
            "weight_decay": 0.05,  # an optimizer setting: a hyperparameter of the API too
        }
    )
    sub = build_submission(spec, suffix="s")
    hp = sub.body["method"]["supervised"]["hyperparameters"]
    assert hp == {
        "seq_len": 64,
        "packing_attention": "causal",
        "lr_scheduler": {"type": "cosine"},
        "total_steps": 10,
        "optimizer_state": "reset",
        "weight_decay": 0.05,
    }
    assert sub.body["replay"] == {"fraction": 0.2, "stage2_duration": 1.0}
    assert sub.body["suffix"] == "s" and "seed" not in sub.body
    replay = next(d for d in sub.data if d.param == "replay.dataset")
    assert replay.remote == ["c4-corpus", "file-abc"] and replay.local == []
    assert any(n.startswith("device:") for n in sub.notes)

    spec = parse_spec(
        {
            "model": TINY,
            "training_file": str(target),
            "gguf_file": "model.gguf",
            "replay": {"dataset": "x", "validation_dataset": "held-out.txt"},
        }
    )
    with pytest.raises(CLIError) as info:
        build_submission(spec)
    message = str(info.value)
    assert info.value.exit_code == 2
    # a spec field the request cannot carry is refused, naming what to do instead
    assert re.search(r"^gguf_file: not accepted by the API: register the model", message, re.M), (
        message
    )
    assert "replay.validation_dataset: no such file: held-out.txt" in message, message

    # a generic validation file goes up as a fine-tune file, its id into replay
    held_out = tmp_path / "held-out.txt"
    held_out.write_text("Generic text held out for val_loss_generic.\n")
    replay = {"dataset": "c4-corpus", "validation_dataset": [str(held_out)]}
    sub = build_submission(
        parse_spec({"model": TINY, "training_file": str(target), "replay": replay})
    )
    fields = {d.param: d for d in sub.data}
    assert fields["replay.validation_dataset"].purpose == "fine-tune"
    assert fields["replay.validation_dataset"].local == [held_out]
    fields["training_file"].ids = ["file-target"]  # as upload_data fills them in
    fields["replay.dataset"].ids = ["c4-corpus"]
    fields["replay.validation_dataset"].ids = ["file-held"]
    body = attach_ids(sub)
    assert body["replay"] == {"dataset": "c4-corpus", "validation_dataset": "file-held"}, body


def test_spec_lora_method_becomes_the_adapter_hyperparameter(tmp_path):
    from api.schemas.jobs import JobCreate
    from api.services.jobs import engine_method, merged_hyperparameters

    target = tmp_path / "t.jsonl"
    target.write_text('{"prompt": "a", "completion": "b"}\n')
    base = {"model": TINY, "training_file": str(target)}
    method = {"type": "lora", "lora": {"r": 4, "target_modules": ["q_proj"]}, "export": "adapter"}
    sub = build_submission(parse_spec({**base, "method": method}))
    hp = sub.body["method"]["supervised"]["hyperparameters"]
    assert hp == {
        "adapter": {"type": "lora", "r": 4, "target_modules": ["q_proj"], "export": "adapter"}
    }
    # and the server maps it back onto the same engine method
    body = JobCreate.model_validate({**sub.body, "training_file": "file-x"})
    assert engine_method(merged_hyperparameters(body)["adapter"]) == method
    # full fine-tuning sends no adapter (its lora settings have no effect in the engine either)
    sub = build_submission(parse_spec({**base, "method": {"type": "full", "lora": {"r": 4}}}))
    assert "method" not in sub.body, sub.body


def test_several_jsonl_files_of_one_format_join_into_one(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"text": "one"}\n{"text": "two"}')  # no final newline
    b.write_bytes(b'\xef\xbb\xbf{"text": "three"}\n')  # a BOM
    out = join_jsonl([a, b], "training_file", tmp_path)
    assert [json.loads(x)["text"] for x in out.read_text().splitlines()] == ["one", "two", "three"]

    c = tmp_path / "c.jsonl"
    c.write_text('{"prompt": "p", "completion": "c"}\n')
    with pytest.raises(CLIError, match="formats differ"):
        join_jsonl([a, c], "training_file", tmp_path)


def test_api_errors_print_param_once_and_exit_2():
    body = {"error": {"message": "replay.fraction: must be in [0, 1)", "param": "replay.fraction"}}
    assert str(api_error(400, body)) == "replay.fraction: must be in [0, 1)"
    err = api_error(404, {"error": {"message": "No job 'x'.", "param": "fine_tuning_job_id"}})
    assert (str(err), err.exit_code) == ("fine_tuning_job_id: No job 'x'.", 2)
    assert api_error(401, {"error": {"message": "Incorrect API key provided."}}).exit_code == 1
    assert api_error(502, None, "<html>bad gateway</html>").exit_code == 1
