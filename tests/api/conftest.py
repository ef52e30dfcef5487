"""The fast tier of API tests: the real app (`api.main.create_app`) in-process under FastAPI's
TestClient, on a SQLite database in a temporary folder, with the task queue faked at its boundary.

- `deployment` (one per test module): `REPLAYFT_*` settings pointing into a tmp dir, the cached
  settings, engine and sessionmaker cleared so the app reads them, and the app started (its
  start-up migrates the database). Teardown restores the environment and clears the caches
  again, so the tests that run next in the same session see their own settings. (Module, not
  package, scope: tests/api has no __init__.py, and there pytest keeps a package fixture to
  the end of the session.)
- `queue` (every test): a `RecordingQueue` (appkit) in place of `api.deps.get_queue`;
  `inference` (where asked for): a `FakeInference` in place of `api.deps.get_inference`.
- `team`, `other_team`, `admin`: a fresh team each, with a key minted as `replayft keys create`
  does, wrapped as a client that sends it. Tests share the database and keep apart by team.
- `team_files`: a processed fine-tune and replay file of `team`, validated by the worker's own
  plain function (`worker.runner.validate_file`) called in-process.

No Celery, Redis or PostgreSQL here: what needs them is tested on a real deployment in
tests/service/ and tests/reliability/.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from appkit import (
    MAX_UPLOAD_BYTES,
    FakeInference,
    RecordingQueue,
    TeamClient,
    mint_key,
    replay_lines,
    target_lines,
)
from fastapi import FastAPI
from fastapi.testclient import TestClient


@dataclass
class Deployment:
    app: FastAPI
    client: TestClient  # sends no key: for requests without one, or with a header of their own
    data_dir: Path


def _reset_caches() -> None:
    from control.db.session import get_engine, get_sessionmaker
    from control.settings import get_settings

    for cached in (get_sessionmaker, get_engine, get_settings):
        cached.cache_clear()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("fast-api")
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("REPLAYFT_")]:
            env.delenv(name)  # a developer's own settings must not leak in
        env.setenv("REPLAYFT_DATA_DIR", str(root / "data"))
        env.setenv("REPLAYFT_MAX_UPLOAD_BYTES", str(MAX_UPLOAD_BYTES))
        _reset_caches()
        try:
            from api.main import create_app
            from control.db.session import get_engine

            app = create_app()
            with TestClient(app) as client:
                yield Deployment(app=app, client=client, data_dir=root / "data")
            get_engine().dispose()
        finally:
            _reset_caches()
    _reset_caches()  # once more with the environment restored: the next reader gets its own


@pytest.fixture(autouse=True)
def queue(deployment) -> Iterator[RecordingQueue]:
    from api.deps import get_queue

    recorder = RecordingQueue()
    deployment.app.dependency_overrides[get_queue] = lambda: recorder
    yield recorder
    deployment.app.dependency_overrides.pop(get_queue, None)


@pytest.fixture
def inference(deployment) -> Iterator[FakeInference]:
    """A `FakeInference` in place of `api.deps.get_inference` (the model-serving process)."""
    from api.deps import get_inference

    fake = FakeInference()
    deployment.app.dependency_overrides[get_inference] = lambda: fake
    yield fake
    deployment.app.dependency_overrides.pop(get_inference, None)


@pytest.fixture
def client(deployment) -> TestClient:
    return deployment.client


@pytest.fixture
def team(deployment, request) -> TeamClient:
    return mint_key(deployment.client, request.node.name)


@pytest.fixture
def other_team(deployment, request) -> TeamClient:
    return mint_key(deployment.client, "other-" + request.node.name)


@pytest.fixture
def admin(deployment) -> TeamClient:
    return mint_key(deployment.client, "admin", admin=True)


@pytest.fixture
def processed_file() -> Callable[..., dict[str, Any]]:
    """-> fn(team, content, purpose, filename): the uploaded file once the files worker's
    `validate_file` has run on it (in-process), as its owner now sees it."""
    from worker.runner import validate_file

    def make(team: TeamClient, content: bytes, purpose: str, filename: str = "data.jsonl"):
        file = team.ok(team.upload(content, purpose, filename))
        validate_file(file["id"])
        return team.ok(team.get(f"/v1/files/{file['id']}"))

    return make


@pytest.fixture
def team_files(team, processed_file, queue) -> tuple[str, str]:
    """(fine-tune file id, replay file id) of `team`, both processed; the queue left empty."""
    target = processed_file(team, target_lines(), "fine-tune", "target.jsonl")
    replay = processed_file(team, replay_lines(), "replay", "replay.jsonl")
    assert target["status"] == replay["status"] == "processed", (target, replay)
    queue.clear()
    return target["id"], replay["id"]
