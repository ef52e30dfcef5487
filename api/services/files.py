"""Files: streaming multipart upload straight to disk, listing, deletion, content.

Uploads never sit in memory or in a second temporary copy: the request body is fed chunk by chunk
to python-multipart's streaming parser, and the `file` part is written to a hidden temporary file
in the files directory. Only a complete, in-limit upload is renamed to its final name and gets a
database row; anything else (too big, bad purpose, a dropped connection) deletes the temporary file,
so a failed upload leaves nothing behind. Validation and token counts run afterwards on the `files`
queue (worker.runner.validate_file).

A process killed mid-upload cannot clean up, so its `.upload-*` file is removed later by
`remove_stale_uploads`, at API start-up and then periodically. Several API processes may share the
data dir, so "stale" means not written to for `REPLAYFT_UPLOAD_STALE_SECONDS`: a live upload
writes its file with every chunk received.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError, invalid
from api.schemas.common import storable
from api.schemas.files import FILENAME_MAX_LENGTH, PURPOSES
from api.services.pages import page
from control.db.models import File, Job, Team, new_id
from control.fields import job_files
from control.queue import VALIDATE_FILE, TaskQueue
from control.settings import Settings

# Suffixes the engine reads by name; anything else is stored bare and sniffed by the engine.
_KNOWN_SUFFIXES = {".jsonl", ".json", ".txt", ".parquet"}
_MAX_FIELD_BYTES = 4096
_MAX_PART_HEADER_BYTES = 16 * 1024  # a part's header lines (a file name is at most 500 chars)
UPLOAD_PREFIX = ".upload-"

log = logging.getLogger("replayft.api")


class _UploadSink:
    """Multipart callbacks: the `file` part goes to disk, small text fields to memory."""

    def __init__(self, tmp_path: Path, max_bytes: int):
        self.tmp_path = tmp_path
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self.too_large = False
        self._out = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._append("_header_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._append("_header_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _append(self, attr: str, data: bytes) -> None:
        value = getattr(self, attr) + data
        if len(value) > _MAX_PART_HEADER_BYTES:  # held in memory: bound it
            raise invalid(
                f"Malformed multipart body: a part header is longer than "
                f"{_MAX_PART_HEADER_BYTES} bytes.",
                "file",
                code="invalid_multipart",
            )
        setattr(self, attr, value)

    def _part_begin(self) -> None:
        self._headers, self._name, self._value = {}, None, bytearray()

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            raw = options.get(b"filename", b"upload").decode("utf-8", "replace")
            self.filename = os.path.basename(raw.replace("\\", "/")) or "upload"
            self._out = open(self.tmp_path, "wb")  # noqa: SIM115 - closed in _part_end/close

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == "file":
            self.size += end - start
            if self.size > self.max_bytes:
                self.too_large = True  # keep draining the body, but stop writing
            elif self._out is not None:
                self._out.write(data[start:end])
        elif len(self._value) < _MAX_FIELD_BYTES:
            self._value += data[start:end]

    def _part_end(self) -> None:
        if self._name == "file":
            self.close()
        elif self._name:
            self.fields[self._name] = self._value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def receive_upload(
    *, content_type: str, body: AsyncIterator[bytes], settings: Settings
) -> tuple[Path, str, str, int]:
    """Stream a multipart body to a temporary file: -> (tmp path, filename, purpose, bytes).

    Raises APIError (400/413) after removing the temporary file."""
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise invalid("Expected a multipart/form-data body with 'file' and 'purpose'.", "file")
    settings.files_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.files_dir / f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
    sink = _UploadSink(tmp, settings.max_upload_bytes)
    parser = MultipartParser(options[b"boundary"], sink.callbacks())
    try:
        try:
            async for chunk in body:
                parser.write(chunk)
            parser.finalize()
        except ParseError as exc:
            raise invalid(
                f"Malformed multipart body: {exc}", "file", code="invalid_multipart"
            ) from None
        sink.close()
        if sink.too_large:
            raise APIError(
                413,
                f"File is larger than the limit of {settings.max_upload_bytes} bytes.",
                param="file",
                code="file_too_large",
            )
        if sink.filename is None:
            raise invalid("Missing the 'file' part.", "file", code="missing_file")
        _check_filename(sink.filename)
        purpose = sink.fields.get("purpose", "")
        if purpose not in PURPOSES:
            raise invalid(
                f"Invalid purpose {purpose!r}; expected one of {', '.join(PURPOSES)}.", "purpose"
            )
    except BaseException:
        sink.close()
        tmp.unlink(missing_ok=True)
        raise
    return tmp, sink.filename, purpose, sink.size


def _check_filename(name: str) -> None:
    """The name is stored as given (files.filename); refuse what the column cannot hold."""
    if len(name) > FILENAME_MAX_LENGTH:
        raise invalid(
            f"file: the file name is {len(name)} characters long; the limit is "
            f"{FILENAME_MAX_LENGTH}.",
            "file",
            code="filename_too_long",
        )
    try:
        storable(name)
    except ValueError as exc:
        raise invalid(f"file: the file name {exc}.", "file", code="invalid_filename") from None


def remove_stale_uploads(settings: Settings) -> list[Path]:
    """Delete partial uploads not modified for `upload_stale_seconds`; -> the paths removed."""
    cutoff = time.time() - settings.upload_stale_seconds
    removed = []
    for path in settings.files_dir.glob(f"{UPLOAD_PREFIX}*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue  # finished or removed by another process meanwhile
    if removed:
        log.info("removed %d stale partial upload(s) from %s", len(removed), settings.files_dir)
    return removed


def store_upload(
    *,
    session: Session,
    team: Team,
    tmp_path: Path,
    filename: str,
    purpose: str,
    size: int,
    settings: Settings,
    queue: TaskQueue,
) -> File:
    """Rename the upload into place and record it; on any failure nothing stays behind."""
    file_id = new_id("file")
    suffix = Path(filename).suffix.lower()
    final = settings.files_dir / (file_id + (suffix if suffix in _KNOWN_SUFFIXES else ""))
    try:
        try:
            os.replace(tmp_path, final)
        except FileNotFoundError:  # removed as stale: the client sent nothing for that long
            raise APIError(
                408,
                f"The upload stalled for over {settings.upload_stale_seconds:g} s and was "
                "discarded; send it again.",
                param="file",
                code="upload_stalled",
            ) from None
        file = File(
            id=file_id,
            team_id=team.id,
            filename=filename,
            purpose=purpose,
            bytes=size,
            path=str(final),
            status="uploaded",
        )
        session.add(file)
        queue.enqueue(session, VALIDATE_FILE, file_id)
        session.commit()
    except BaseException:
        session.rollback()
        tmp_path.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise
    return file


def list_files(
    *, session: Session, team: Team, purpose: str | None, after: str | None, limit: int
) -> tuple[list[File], bool]:
    query = select(File).where(File.team_id == team.id)
    if purpose:
        query = query.where(File.purpose == purpose)
    scope = File.team_id == team.id
    return page(
        session,
        query,
        model=File,
        order=File.pk,
        scope=scope,
        after=after,
        limit=limit,
        what="file",
    )


def delete_file(*, session: Session, file: File) -> None:
    """Delete the file, unless an unfinished job (paused ones too: they resume) names it in any
    of its fields: training, validation, replay or eval data (409)."""
    unfinished = session.scalars(
        select(Job).where(
            Job.team_id == file.team_id,
            Job.status.in_(("validating_files", "queued", "running", "paused")),
        )
    )
    for job in unfinished:
        fields = [param for param, named in job_files(job) if named == file.id]
        if fields:
            raise APIError(
                409,
                f"File is in use by unfinished job {job.id} (as its {fields[0]}); cancel it first.",
                param="file_id",
                code="file_in_use",
            )
    path = Path(file.path)
    session.delete(file)
    session.commit()
    path.unlink(missing_ok=True)


PREVIEW_BYTES = 256 * 1024  # read no further than this for a preview, however long the lines
PREVIEW_STRING_CHARS = 500


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > PREVIEW_STRING_CHARS:
        return value[:PREVIEW_STRING_CHARS] + "…"
    if isinstance(value, list):
        return [_cut(v) for v in value]
    if isinstance(value, dict):
        return {k: _cut(v) for k, v in value.items()}
    return value


def preview_rows(path: Path, limit: int) -> tuple[list[Any], bool]:
    """The first `limit` records of a stored file and whether more follow: JSON Lines records as
    objects (a line that does not parse as its text), Parquet rows as objects, other files as
    lines of text. Strings are cut to PREVIEW_STRING_CHARS; reading stops at PREVIEW_BYTES."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        batch = next(parquet.iter_batches(batch_size=limit), None)
        rows = batch.to_pylist() if batch is not None else []
        return [_cut(r) for r in rows], parquet.metadata.num_rows > len(rows)
    with open(path, "rb") as f:
        head = f.read(PREVIEW_BYTES + 1)
    cut_short = len(head) > PREVIEW_BYTES
    lines = head[:PREVIEW_BYTES].decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()
    if cut_short and lines:
        lines = lines[:-1]  # the last line read may be cut in two
    lines = [line for line in lines if line.strip()]
    rows: list[Any] = []
    for line in lines[:limit]:
        try:
            rows.append(json.loads(line) if path.suffix.lower() in (".jsonl", ".json") else line)
        except ValueError:
            rows.append(line)
    return [_cut(r) for r in rows], len(lines) > limit or cut_short
