"""Helpers for the fast API tests (fixtures live in conftest.py): the recording queue, a team's
client over the in-process app, test data, and direct row changes that stand in for a worker."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from servicekit import Team
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, SessionTransaction

JOBS = "/v1/fine_tuning/jobs"
SWEEPS = "/v1/sweeps"
FILES = "/v1/files"
MAX_UPLOAD_BYTES = 64 * 1024  # this deployment's upload limit, small enough to exceed cheaply

# the task names, spelt out: a renamed task is a changed contract with the workers
VALIDATE_FILE = "replayft.validate_file"
PREPARE_JOB = "replayft.prepare_job"
RUN_JOB = "replayft.run_job"


# ---------------------------------------------------------------------------- the fake queue
class RecordingQueue:
    """A `control.queue.TaskQueue` that records `(task, (subject, *args))` once the session it
    was given commits, and forgets what a rolled-back (or closed) transaction had enqueued: what
    the real outbox would deliver."""

    def __init__(self) -> None:
        self.enqueued: list[tuple[str, tuple[Any, ...]]] = []

    def enqueue(self, session: Session, task: str, subject: str, *args: str | int) -> None:
        if "recording_queue" not in session.info:
            session.info["recording_queue"] = []
            event.listen(session, "after_commit", self._committed)
            event.listen(session, "after_transaction_end", self._ended)
        session.info["recording_queue"].append((task, (subject, *args)))

    def _committed(self, session: Session) -> None:
        self.enqueued += session.info["recording_queue"]
        session.info["recording_queue"] = []

    def _ended(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:  # the outermost transaction: a flush's ends earlier
            session.info["recording_queue"] = []  # emptied already if it committed

    def subjects(self, task: str) -> list[Any]:
        """The subjects (job or file ids) of the `task` tasks enqueued, in order."""
        return [args[0] for name, args in self.enqueued if name == task]

    def clear(self) -> None:
        self.enqueued.clear()


# ---------------------------------------------------------------------------- the fake serving process
class FakeInference:
    """A `control.inference.Inference` that answers every choice with `words` and records the
    requests it was sent; set `refusal` (an InferenceError) to have it refuse them. `closed`
    counts the streams that ended, normally or because the API closed them."""

    def __init__(self, words: tuple[str, ...] = ("Hello", " world")) -> None:
        self.words = words
        self.requests: list[dict[str, Any]] = []
        self.refusal: Exception | None = None
        self.closed = 0

    async def generate(self, request: dict[str, Any]):
        self.requests.append(request)
        if self.refusal is not None:
            raise self.refusal
        try:
            yield {"type": "start", "prompt_tokens": 3}
            for i in range(request["n"]):
                for word in self.words:
                    logprobs = [{"token": word, "logprob": -0.5, "top": [[word, -0.5]]}]
                    yield self.chunk(i, word, logprobs if request["logprobs"] is not None else [])
                yield self.chunk(i, "", [], "stop", len(self.words))
            yield {"type": "end", "error": None}
        finally:
            self.closed += 1

    @staticmethod
    def chunk(index, text, logprobs, finish_reason=None, tokens=0) -> dict[str, Any]:
        return {
            "type": "chunk",
            "index": index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish_reason,
            "completion_tokens": tokens,
        }


# ---------------------------------------------------------------------------- teams and keys
class TeamClient:
    """One key's view of the app: every request carries `Authorization: Bearer <key>`."""

    def __init__(self, client: TestClient, key: str, name: str, team_id: str):
        self.client, self.key, self.name, self.id = client, key, name, team_id

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", **(kw.pop("headers", None) or {})}
        return self.client.request(method, path, headers=headers, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    @staticmethod
    def ok(resp: httpx.Response, status: int = 200) -> Any:
        assert resp.status_code == status, (
            f"{resp.request.method} {resp.request.url.path}: expected {status}, got "
            f"{resp.status_code} {resp.text[:1000]}"
        )
        return resp.json()

    def upload(self, content: bytes, purpose: str, filename: str = "data.jsonl") -> httpx.Response:
        return self.post(FILES, files={"file": (filename, content)}, data={"purpose": purpose})

    def create_job(self, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.ok(self.post(JOBS, json=body, **kw))

    def list_all(self, path: str, limit: int = 100, **params: Any) -> list[dict[str, Any]]:
        """Every item of a list endpoint, following `after` while `has_more`."""
        items: list[dict[str, Any]] = []
        after = None
        while True:
            query = {**params, "limit": limit, **({"after": after} if after else {})}
            page = self.ok(self.get(path, params=query))
            items += page["data"]
            if not page["has_more"]:
                return items
            after = page["data"][-1]["id"]


def mint_key(client: TestClient, label: str, admin: bool = False) -> TeamClient:
    """A new team and a key for it, as `replayft keys create` makes them."""
    from api.services.teams import create_key
    from control.db.models import Team as TeamRow
    from control.db.session import session_scope

    name = f"{label[:40]}-{secrets.token_hex(3)}"
    with session_scope() as session:
        key = create_key(session=session, team_name=name, admin=admin)
        team_id = session.scalar(select(TeamRow.id).where(TeamRow.name == name))
    return TeamClient(client, key, name, team_id)


# ---------------------------------------------------------------------------- data
def target_lines(n: int = 40) -> bytes:
    """`n` prompt/completion examples (fine-tune data)."""
    reason = " because adding a number to itself doubles it." * 3
    rows = [
        {"prompt": f"Question: what is {i} + {i}?\nAnswer:", "completion": f" {2 * i},{reason}"}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def replay_lines(n: int = 20) -> bytes:
    """`n` plain-text documents (replay data)."""
    text = " Generic text keeps the model's broad knowledge while it learns the target." * 6
    return "".join(json.dumps({"text": f"Document {i}.{text}"}) + "\n" for i in range(n)).encode()


def tiny_job(target: str, replay: str | None = None, **extra: Any) -> dict[str, Any]:
    """A valid job body on llama-tiny: the service tests' `Team.tiny_job`."""
    return Team.tiny_job(target, replay, **extra)


# ---------------------------------------------------------------------------- rows
def set_job(job_id: str, **values: Any) -> None:
    """Change a job's row directly: the state a worker would have put it in."""
    from control.db.models import Job
    from control.db.session import session_scope

    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))
        session.commit()


def add_rows(*rows: Any) -> None:
    """Insert ORM rows (events, metrics, checkpoints) as a worker would."""
    from control.db.session import session_scope

    with session_scope() as session:
        session.add_all(rows)
        session.commit()


def outbox_rows(subject: str) -> list[tuple[str, list[Any]]]:
    """(task, args) of the real outbox table's rows about `subject` (a file or job id)."""
    from control.db.models import OutboxMessage
    from control.db.session import session_scope

    with session_scope() as session:
        query = select(OutboxMessage).where(OutboxMessage.subject == subject)
        return [(m.task, m.args) for m in session.scalars(query)]


def stored_files(data_dir: Path) -> set[Path]:
    """Every file in the uploads folder, partial uploads included."""
    folder = data_dir / "files"
    return {p for p in folder.iterdir() if p.is_file()} if folder.exists() else set()
