"""Admin registrations by server-side path: base models and replay corpora (`models` table),
and the demo data that `replayft serve --demo` gives the default team."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from control.db.models import File, Model, Team
from control.queue import VALIDATE_FILE, enqueue
from control.settings import Settings


def register(
    *, session: Session, name: str, kind: str, paths: list[str], gguf_file: str | None = None
) -> Model:
    """Create or replace a registration; paths are stored absolute and must exist."""
    resolved = [str(Path(p).expanduser().resolve()) for p in paths]
    missing = [p for p in resolved if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")
    row = session.scalar(select(Model).where(Model.id == name))
    if row is None:
        row = Model(id=name, kind=kind, paths=resolved, gguf_file=gguf_file)
        session.add(row)
    else:
        row.kind, row.paths, row.gguf_file = kind, resolved, gguf_file
    session.commit()
    return row


def corpus_paths(*, session: Session, name: str) -> list[str] | None:
    row = session.scalar(select(Model).where(Model.id == name, Model.kind == "corpus"))
    return list(row.paths) if row else None


DEMO_FILES = {
    # file id (fixed, so that examples/quickstart.yaml can name it) -> (filename, purpose, which
    # half of demo_documents())
    "file-demo-stdlib-code": ("demo-stdlib-code.jsonl", "fine-tune", 0),
    "file-demo-python-help-topics": ("demo-python-help-topics.jsonl", "replay", 1),
}


def register_demo(*, session: Session, team: Team, settings: Settings) -> list[File]:
    """Write the demo documents as JSONL text files owned by `team` under their fixed ids (once:
    a demo file that exists is kept); returns the new rows."""
    from replay_engine.demo import demo_documents

    existing = set(session.scalars(select(File.id).where(File.id.in_(list(DEMO_FILES)))))
    documents = demo_documents()
    created = []
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    for file_id, (filename, purpose, half) in DEMO_FILES.items():
        if file_id in existing:
            continue
        path = settings.files_dir / f"{file_id}.jsonl"
        with open(path, "w") as f:
            for doc in documents[half]:
                f.write(json.dumps({"text": doc}) + "\n")
        file = File(
            id=file_id,
            team_id=team.id,
            filename=filename,
            purpose=purpose,
            bytes=path.stat().st_size,
            path=str(path),
        )
        session.add(file)
        enqueue(session, VALIDATE_FILE, file.id)
        created.append(file)
    session.commit()
    return created
