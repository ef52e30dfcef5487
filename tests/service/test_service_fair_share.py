"""Fair share on a real deployment: three teams and one training worker. Team A queues three jobs
before B queues two and C one; a worker started once all six are queued trains them a team at a
time (the team that least recently started a job first), and A's high-priority job before A's
others, instead of in arrival order, which would give A the worker for its three jobs first.

The worker serves its Prometheus metrics (worker.metrics, multiprocess mode): they count what its
pool child trained, as the jobs report it."""

import json
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servicekit import TERMINAL, Service, free_port, own_database, own_redis_db, service_env


@pytest.fixture
def deployment(tmp_path, cache_dir):
    """API and a files worker on a database and broker of their own; no training worker yet."""
    (tmp_path / "data").mkdir()
    (tmp_path / "tmp").mkdir()
    with own_database() as database_url, own_redis_db() as broker_url:
        env = service_env(
            REPLAYFT_DATA_DIR=tmp_path / "data",
            REPLAYFT_DATABASE_URL=database_url,
            REPLAYFT_BROKER_URL=broker_url,
            REPLAYFT_CACHE_DIR=cache_dir,
            TMPDIR=tmp_path / "tmp",
        )
        svc = Service(tmp_path, env)
        try:
            assert svc.cli("db", "upgrade").returncode == 0
            svc.start_worker("files")
            svc.start_api()
            yield svc
        finally:
            svc.stop()


def test_one_worker_trains_three_teams_in_turn(deployment: Service, target_jsonl):
    svc = deployment
    teams = {name: svc.team(f"fair-{name}") for name in "ABC"}
    files = {name: team.processed_file(target_jsonl, "fine-tune")["id"] for name, team in teams.items()}  # fmt: skip
    jobs = {}  # label -> (team, job id)
    for label, priority in [("A1", 0), ("A2", 0), ("A3", 5), ("B1", 0), ("B2", 0), ("C1", 0)]:
        team = teams[label[0]]
        body = team.tiny_job(files[label[0]], n_epochs=0.25, priority=priority)
        jobs[label] = (team, team.create_job(body)["id"])
    for team, job_id in jobs.values():
        team.wait_job(job_id, "queued", timeout=120)

    port = free_port()
    worker = svc.start_worker("training", env={"REPLAYFT_WORKER_METRICS_PORT": str(port)})
    finished = [team.wait_job(job_id, *TERMINAL) for team, job_id in jobs.values()]
    assert [job["status"] for job in finished] == ["succeeded"] * 6

    label_of = {job_id: label for label, (_, job_id) in jobs.items()}
    claimed = re.findall(r"job (ftjob-\w+): claimed by", worker.log_text())
    order = [label_of[job_id] for job_id in claimed]
    # arrival order would be A1 A2 A3 B1 B2 C1
    assert order == ["A3", "B1", "C1", "A1", "B2", "A2"], f"{order}\n{svc.diagnostics()}"

    # the worker's metrics: six run_job tasks, and every step and token its jobs trained
    samples = {}
    for family in text_string_to_metric_families(
        httpx.get(f"http://127.0.0.1:{port}/metrics").text
    ):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    run_job = (("outcome", "success"), ("task", "replayft.run_job"))
    assert samples[("replayft_worker_tasks_total", run_job)] == 6, samples
    steps = sum(job["progress"]["total_steps"] for job in finished)
    assert samples[("replayft_worker_steps_total", ())] == steps, samples
    tokens = sum(job["trained_tokens"] for job in finished)
    assert samples[("replayft_worker_tokens_total", ())] == tokens == steps * 4 * 64, samples
    assert samples[("replayft_worker_training_jobs", ())] == 0, samples  # training now: none

    # the Grafana dashboard's worker panels query series that a worker exports (the GPU ones
    # where NVML sees a GPU)
    from worker.metrics import GPU_SERIES

    board = json.loads(
        (Path(__file__).parents[2] / "deploy" / "grafana-dashboard.json").read_text()
    )
    queried = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in board["panels"]
        for target in panel["targets"]
        for name in re.findall(r"replayft_(?:worker|gpu)_\w+", target["expr"])
    }
    exported = {re.sub(r"_(bucket|count|sum|created)$", "", name) for name, _ in samples}
    assert queried and queried <= exported | set(GPU_SERIES), queried - exported
