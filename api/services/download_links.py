"""Short-lived links to download one checkpoint or one file without an Authorization header.

A browser saves a large file well only through its own download manager (streamed to disk, with
progress), and that cannot send headers; a key in the URL would end up in history and logs. So an
authenticated caller asks for a link (`POST .../download_link`), and the link carries a token:

    <API key id>.<expiry, unix seconds>.<HMAC-SHA256 of "<subject>/<expiry>">

keyed with the stored hash of the API key that asked, where the subject is `<job id>/<checkpoint
id>` for a checkpoint or `file/<file id>` for a file (`checkpoint_subject`, `file_subject`). The
token holds no key and opens only that one download until it expires; forging one needs the key
(or the database); and revoking the key ends its links at once, since verification reads the
key's row.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError
from control.db.models import ApiKey, Team, now

LINK_TTL_S = 300  # a link is for a download that starts now; the download itself may run longer


def checkpoint_subject(job_id: str, checkpoint_id: str) -> str:
    return f"{job_id}/{checkpoint_id}"


def file_subject(file_id: str) -> str:
    return f"file/{file_id}"  # ids never hold "/", so no subject is another's


def _signature(key_hash: str, subject: str, expires_at: int) -> str:
    message = f"{subject}/{expires_at}".encode()
    digest = hmac.new(bytes.fromhex(key_hash), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(*, key: ApiKey, subject: str) -> tuple[str, int]:
    """(token, expires_at) for `key`'s team to download `subject`."""
    expires_at = now() + LINK_TTL_S
    sig = _signature(key.key_hash, subject, expires_at)
    return f"{key.id}.{expires_at}.{sig}", expires_at


def _refused(message: str) -> APIError:
    return APIError(401, message, param="token", code="invalid_download_token")


def team_for_token(*, session: Session, token: str, subject: str) -> Team:
    """The team a valid token speaks for; 401 if it is malformed, forged, for another
    download, expired, or its key was revoked."""
    parts = token.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        raise _refused("Malformed download token.")
    key_id, expiry, sig = parts
    row = session.execute(
        select(ApiKey, Team).join(Team, ApiKey.team_id == Team.id).where(ApiKey.id == key_id)
    ).first()
    expected = _signature(row[0].key_hash, subject, int(expiry)) if row else ""
    if row is None or not hmac.compare_digest(expected, sig):
        raise _refused("This download link is not valid for this download.")
    if row[0].revoked_at is not None:
        raise _refused("The API key that made this download link has been revoked.")
    if int(expiry) < now():
        raise _refused("This download link has expired; ask for a new one.")
    return row[1]
