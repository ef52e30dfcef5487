"""Shared fixtures. Tests never reach a model hub: everything is built from presets or local files."""

import json
import os
from pathlib import Path

import pytest
from servicekit import (
    HEARTBEAT_TIMEOUT_S,
    MAX_UPLOAD_BYTES,
    RENDEZVOUS_TIMEOUT_S,
    REPLAY_DOCS,
    TARGET_EXAMPLES,
    Service,
    Team,
    end_survivors,
    free_port,
    own_database,
    own_redis_db,
    service_env,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail fast instead of waiting on an unreachable hub

# Under pytest-xdist (`-n 2`, the README's test command) two test processes share the cores: each
# computes on one thread, and so do the processes it starts (they inherit the environment), so
# that two torch runs side by side do not fight over the same cores. Set before torch is imported.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Two tiers: `pytest -m "not slow"` runs in a few minutes on 2 cores; the whole suite adds every
# `slow` test (a model trained for more than a moment, torchrun, a deployment of processes).
# A test that uses a deployment fixture is slow without saying so: starting one alone takes tens
# of seconds. Tests that start a deployment of their own carry the mark themselves.
DEPLOYMENT_FIXTURES = {"service", "sqlite_service", "deployment"}


# Under `-n 2 --dist loadfile --no-loadscope-reorder` (the README's test command) xdist hands out
# whole test files (so module fixtures are built once) in the order of the collection, which is
# changed here so that the longest files start first and neither worker is left running one
# long file alone at the end. Each worker that runs a test on `service` starts its own
# deployment (its own database, Redis index, ports and temp folders; tests/servicekit.py).
# (`--dist loadgroup` would keep the service tests on one deployment, but it does not group on
# pytest 9.2: pytest-dev/pytest-xdist#1386.) Seconds from one run of the command, 2026-12-04.
LONGEST_FIRST = (
    "tests/service/test_service_multinode.py",  # 230 s
    "tests/test_readme.py",  # 200 s
    "tests/service/test_service_jobs.py",  # 150 s
    "tests/reliability/test_embedded_worker.py",  # 130 s
    "tests/service/test_service_lora.py",  # 100 s
    "tests/service/test_service_sweeps.py",  # 90 s
    "tests/service/test_dashboard_browser.py",  # 90 s
    "tests/test_gpu_mfu_script.py",  # 80 s
    "tests/service/test_service_evals.py",  # 60 s
    "tests/test_cli.py",  # 60 s
    "tests/test_harness.py",  # 60 s
    "tests/service/test_service_fair_share.py",  # 45 s: a deployment of its own
    "tests/service/test_service_team_tools.py",  # 40 s
)


def pytest_collection_modifyitems(items):
    for item in items:
        # tests/api's `deployment` is the fast in-process app, not a deployment of processes
        in_process = item.path.parent.name == "api"
        if not in_process and DEPLOYMENT_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)
    if XDIST_WORKER:

        def rank(item) -> int:
            path = item.nodeid.split("::")[0]
            return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

        items.sort(key=rank)  # stable: the order within a file is kept


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real text data not found at {SHARED_DATA} (the checkout's ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("token-cache")


@pytest.fixture(scope="session")
def gsm8k_file(shared_data):
    """Writes the first n GSM8K train examples as prompt/completion JSONL; returns the path."""
    return lambda out, n, offset=0: gsm8k_prompt_completion(shared_data, out, n, offset)


def gsm8k_prompt_completion(shared_data: Path, out: Path, n: int, offset: int = 0) -> Path:
    """GSM8K {question, answer} -> {prompt, completion} JSONL (the API's format)."""
    lines = (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[offset : offset + n]
    with open(out, "w") as f:
        for line in lines:
            row = json.loads(line)
            f.write(
                json.dumps(
                    {
                        "prompt": f"Question: {row['question']}\nAnswer:",
                        "completion": " " + row["answer"],
                    }
                )
                + "\n"
            )
    return out


# ---------------------------------------------------------------------------- a real deployment
# `service` (one per test session) is a real ReplayFT deployment for the service and reliability
# tests: it creates a database of its own on the local PostgreSQL server, claims an empty Redis
# database index, runs `replayft db upgrade`, then starts the API (`replayft api`), one Celery
# worker for both queues and one for the files queue only, as subprocesses. Each runs in its own
# process group with its output in a log file; teardown stops every group it started, drops the
# database and flushes only the Redis index it claimed.
#
# Tests isolate themselves by team: `team` and `other_team` mint a fresh key through the CLI and
# wrap an HTTP client (`Team`) whose helpers poll with timeouts. When a wait runs out, or a job
# ends in a state the test did not expect, the failure message carries the tail of every service
# log, so a red run on CI says what the server and the workers were doing.


@pytest.fixture(scope="session")
def target_jsonl(tmp_path_factory, gsm8k_file) -> Path:
    """30 GSM8K examples as prompt/completion JSONL (the fine-tune file of every test)."""
    return gsm8k_file(tmp_path_factory.mktemp("data") / "gsm8k-30.jsonl", n=TARGET_EXAMPLES)


@pytest.fixture(scope="session")
def replay_jsonl(tmp_path_factory, shared_data) -> Path:
    """The first 20 documents of the C4 sample (the replay file of every test)."""
    lines = (shared_data / "c4_sample" / "c4_demo.jsonl").read_text().splitlines()[:REPLAY_DOCS]
    out = tmp_path_factory.mktemp("data") / "c4-20.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def service(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("service")
    (root / "data").mkdir()
    (root / "tmp").mkdir()
    with own_database() as database_url, own_redis_db() as broker_url:
        env = service_env(
            REPLAYFT_DATA_DIR=root / "data",
            REPLAYFT_DATABASE_URL=database_url,
            REPLAYFT_BROKER_URL=broker_url,
            REPLAYFT_MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES),
            REPLAYFT_CACHE_DIR=cache_dir,
            REPLAYFT_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT_S),
            REPLAYFT_RENDEZVOUS_TIMEOUT=str(RENDEZVOUS_TIMEOUT_S),
            TMPDIR=root / "tmp",  # where the server spools uploads: checked for leftovers
            # experiment trackers: W&B offline, MLflow on a local store, and one allowed
            # tracking server where nothing listens (refused at once: no retries)
            REPLAYFT_WANDB_MODE="offline",
            WANDB_CONFIG_DIR=root / "wandb-config",
            WANDB_CACHE_DIR=root / "wandb-cache",
            REPLAYFT_MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
            REPLAYFT_MLFLOW_TRACKING_URIS=json.dumps(
                [f"http://e2e:pw-e2e@127.0.0.1:{free_port()}"]
            ),
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
            # the tests' webhook receivers listen on loopback, which is refused by default
            REPLAYFT_WEBHOOK_ALLOWED_NETWORKS=json.dumps(["127.0.0.0/8"]),
        )
        svc = Service(root, env)
        try:
            upgrade = svc.cli("db", "upgrade")
            assert upgrade.returncode == 0, f"replayft db upgrade failed:\n{upgrade.stderr}"
            svc.start_worker()  # training and files, as the contract starts a worker
            # a CPU worker for the files queue, so that validating a test's uploads never waits
            # behind the training left over from the test before (the split the queues exist for)
            svc.start_worker("files")
            svc.start_api()
            yield svc
        finally:
            svc.stop()
            end_survivors()


@pytest.fixture
def serving(service) -> str:
    """The deployment's model-serving process (started once, on first use); its URL."""
    return service.start_inference()


@pytest.fixture
def team(service, request) -> Team:
    t = service.team(request.node.name)
    yield t
    t.close()


@pytest.fixture
def other_team(service, request) -> Team:
    t = service.team("other-" + request.node.name)
    yield t
    t.close()


@pytest.fixture
def team_files(team, target_jsonl, replay_jsonl) -> tuple[str, str]:
    """(fine-tune file id, replay file id), uploaded by `team` and processed."""
    target = team.processed_file(target_jsonl, "fine-tune")
    replay = team.processed_file(replay_jsonl, "replay")
    return target["id"], replay["id"]
