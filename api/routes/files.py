"""`/v1/files`: upload (streamed), list, retrieve, delete, content (and a download link)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from api.deps import (
    CurrentKey,
    CurrentTeam,
    DownloadToken,
    FileDep,
    QueueDep,
    SessionDep,
    authenticate,
    download_team,
    get_file,
    short_session,
)
from api.openapi import error_responses
from api.schemas.common import Cursor, DeletedResponse, ListResponse, PathId, db_string
from api.schemas.files import PURPOSES, FileDownloadLink, FilePreview, FilePublic
from api.services import download_links
from api.services import files as service
from control.db.models import File
from control.settings import get_settings

router = APIRouter(prefix="/files", tags=["files"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(PURPOSES)},
                    },
                }
            }
        },
    }
}


# async, unlike the other routes: it reads the request stream itself so the upload goes straight
# to disk under the size limit; the blocking database work runs in the thread pool. It takes no
# SessionDep: reading a large body can take minutes, and a session held meanwhile would starve the
# pool, so the key is checked with one short session and the row written with another.
@router.post(
    "", response_model=FilePublic, openapi_extra=_UPLOAD_BODY, responses=error_responses(400, 413)
)
async def create_file(
    request: Request, queue: QueueDep, authorization: Annotated[str | None, Header()] = None
) -> FilePublic:
    settings = get_settings()
    async with short_session() as session:
        team, _key = await run_in_threadpool(authenticate, session, authorization)
    tmp, filename, purpose, size = await service.receive_upload(
        content_type=request.headers.get("content-type", ""),
        body=request.stream(),
        settings=settings,
    )
    try:
        async with short_session() as session:
            file = await run_in_threadpool(
                lambda: service.store_upload(
                    session=session,
                    team=team,
                    tmp_path=tmp,
                    filename=filename,
                    purpose=purpose,
                    size=size,
                    settings=settings,
                    queue=queue,
                )
            )
    finally:
        tmp.unlink(missing_ok=True)  # stored (renamed away) or refused: nothing stays behind
    return FilePublic.model_validate(file, from_attributes=True)


@router.get("", response_model=ListResponse[FilePublic], responses=error_responses(400))
def list_files(
    session: SessionDep,
    team: CurrentTeam,
    purpose: Annotated[db_string(32) | None, Query()] = None,
    after: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
) -> ListResponse[FilePublic]:
    rows, has_more = service.list_files(
        session=session, team=team, purpose=purpose, after=after, limit=limit
    )
    return ListResponse(
        data=[FilePublic.model_validate(r, from_attributes=True) for r in rows], has_more=has_more
    )


@router.get("/{file_id}", response_model=FilePublic, responses=error_responses(404))
def retrieve_file(file: FileDep) -> FilePublic:
    return FilePublic.model_validate(file, from_attributes=True)


@router.delete("/{file_id}", response_model=DeletedResponse, responses=error_responses(404, 409))
def delete_file(file: FileDep, session: SessionDep) -> DeletedResponse:
    service.delete_file(session=session, file=file)
    return DeletedResponse(id=file.id, object="file", deleted=True)


@router.get("/{file_id}/preview", response_model=FilePreview, responses=error_responses(400, 404))
def preview_file(file: FileDep, limit: Annotated[int, Query(ge=1, le=50)] = 5) -> FilePreview:
    """ReplayFT extra: the file's first records (as stored, long strings cut) and its stats."""
    rows, truncated = service.preview_rows(Path(file.path), limit)
    return FilePreview(
        id=file.id, filename=file.filename, rows=rows, truncated=truncated, stats=file.stats
    )


def _download_file(
    file_id: PathId, request: Request, session: SessionDep, token: DownloadToken = None
) -> File:
    subject = download_links.file_subject(file_id)
    return get_file(file_id, session, download_team(session, request, token, subject))


@router.get("/{file_id}/content", response_class=FileResponse, responses=error_responses(401, 404))
def download_file(file: Annotated[File, Depends(_download_file)]) -> FileResponse:
    """The file as uploaded (or as a job wrote it). Authorized by the API key, or by the `token`
    of a download link."""
    return FileResponse(file.path, media_type="application/octet-stream", filename=file.filename)


@router.post(
    "/{file_id}/download_link", response_model=FileDownloadLink, responses=error_responses(404)
)
def create_download_link(file: FileDep, key: CurrentKey, request: Request) -> FileDownloadLink:
    """A short-lived URL of the file's content that needs no Authorization header (for a
    browser's own download manager); it holds no API key (ReplayFT extra)."""
    subject = download_links.file_subject(file.id)
    token, expires_at = download_links.make_token(key=key, subject=subject)
    url = request.url_for("download_file", file_id=file.id)
    return FileDownloadLink(url=str(url.include_query_params(token=token)), expires_at=expires_at)
