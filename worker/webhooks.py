"""Sending webhook deliveries: the sender side of the outbox that control.webhooks writes.

`send_due()` runs in every worker's maintenance process (worker.maintenance), in a thread of its
own so that a slow or silent receiver never holds up the task relay beside it. Each round:

1. claim up to BATCH due rows (`pending`, `next_attempt_at` passed, the webhook enabled: a
   disabled one's rows wait): one conditional UPDATE per row moves its `next_attempt_at` past
   the time one attempt can take, and only the relay whose UPDATE matched sends it, so several
   maintenance processes share the work without sending a row twice at once (a relay that dies
   mid-send leaves the row due again after that time);
2. post them, at most PARALLEL at once, each with the Standard Webhooks headers of this attempt
   and a `webhook_timeout`, to an address of the host that the receiver check
   (control.webhooks.receiver_addresses) allows, or not at all (a failed attempt); the answer's
   body is never read;
3. record each outcome, again only if the claim still holds (a redelivery asked for meanwhile
   has made the row due at once, and wins): 2xx is `delivered`; otherwise the next attempt waits
   `webhook_retry_base` x 2^(attempts - 1), at most MAX_RETRY_DELAY, and once `webhook_retry_for`
   seconds have passed since the row became pending it is `failed`.

Neither the URL nor the secret is logged: a URL can carry a token of its own.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from sqlalchemy import select, update

from control.db.models import Webhook, WebhookDelivery
from control.db.session import session_scope
from control.settings import get_settings
from control.webhooks import DestinationRefused, receiver_addresses, signed_headers

log = logging.getLogger("replayft.webhooks")

BATCH = 50
PARALLEL = 8
MAX_RETRY_DELAY = 3600.0
USER_AGENT = "ReplayFT-Webhooks/1"


@dataclass
class Attempt:
    delivery_pk: int
    claim: float  # the next_attempt_at this sender set: its claim on the row
    url: str
    secret: str
    event_id: str
    payload: str
    attempts: int  # before this one
    pending_since: float
    status_code: int | None = None
    error: str | None = None


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt, after `attempts` failed ones."""
    return min(get_settings().webhook_retry_base * 2 ** max(0, attempts - 1), MAX_RETRY_DELAY)


def claim_due(limit: int = BATCH) -> list[Attempt]:
    settings = get_settings()
    # past the end of this round: its attempts run PARALLEL at a time, each within the timeout
    hold = settings.webhook_timeout * (limit / PARALLEL + 1) + 30
    claimed = []
    with session_scope() as session:
        due = session.execute(
            select(WebhookDelivery, Webhook.url, Webhook.secret)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= time.time(),
                Webhook.enabled.is_(True),  # a disabled webhook's deliveries wait
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        ).all()
        session.commit()  # end the read: each claim below is a short transaction
        for delivery, url, secret in due:
            claim = time.time() + hold
            taken = session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.pk == delivery.pk,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at == delivery.next_attempt_at,
                )
                .values(next_attempt_at=claim)
            ).rowcount
            session.commit()
            if taken:
                claimed.append(
                    Attempt(
                        delivery_pk=delivery.pk,
                        claim=claim,
                        url=url,
                        secret=secret,
                        event_id=delivery.event_id,
                        payload=delivery.payload,
                        attempts=delivery.attempts,
                        pending_since=delivery.pending_since,
                    )
                )
    return claimed


def pinned_urls(url: httpx.URL) -> list[httpx.URL]:
    """`url` once per address its host resolves to, the host replaced by the address, after the
    receiver check (control.webhooks) has allowed every one: connecting to an address that was
    checked leaves no second DNS answer to trust. Raises DestinationRefused, or OSError when the
    host does not resolve."""
    addresses = receiver_addresses(url.host, get_settings().webhook_allowed_networks)
    return [url.copy_with(host=address) for address in addresses]


def post(client: httpx.Client, attempt: Attempt) -> Attempt:
    """One attempt; fills `status_code` and `error` (None when the receiver took it)."""
    url = httpx.URL(attempt.url)
    try:
        pinned = pinned_urls(url)
    except DestinationRefused as exc:
        attempt.error = f"Not sent: the receiver's host {exc}."
        return attempt
    except (OSError, UnicodeError) as exc:
        attempt.error = f"Not sent: the receiver's host does not resolve ({exc})."[:500]
        return attempt
    headers = {
        "host": url.netloc.decode("ascii"),  # the name, as a direct request would send it
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **signed_headers(attempt.secret, attempt.event_id, attempt.payload),
    }
    # TLS checks the certificate against the name too, not the address
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    body = attempt.payload.encode()
    try:
        for i, address_url in enumerate(pinned):  # each address in turn, as a socket connect would
            try:
                with client.stream(
                    "POST", address_url, content=body, headers=headers, extensions=extensions
                ) as response:
                    attempt.status_code = response.status_code
                break
            except httpx.ConnectError:
                if i == len(pinned) - 1:
                    raise
        if not 200 <= attempt.status_code < 300:
            attempt.error = f"The receiver answered HTTP {attempt.status_code}."
    except httpx.TimeoutException:
        attempt.error = f"No answer within {get_settings().webhook_timeout:g} s."
    except httpx.HTTPError as exc:
        # the exception's text, never its request (which names the URL)
        attempt.error = f"{type(exc).__name__}: {exc}"[:500]
    return attempt


def record_outcome(attempt: Attempt) -> None:
    settings = get_settings()
    now = time.time()
    attempts = attempt.attempts + 1
    values: dict = dict(
        attempts=attempts,
        last_attempt_at=now,
        last_status_code=attempt.status_code,
        last_error=attempt.error,
    )
    if attempt.error is None:
        values.update(status="delivered", delivered_at=now)
    elif now - attempt.pending_since >= settings.webhook_retry_for:
        values.update(status="failed")
    else:
        values.update(next_attempt_at=now + retry_delay(attempts))
    with session_scope() as session:
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.pk == attempt.delivery_pk,
                WebhookDelivery.next_attempt_at == attempt.claim,
            )
            .values(**values)
        )
        session.commit()
    if attempt.error is not None:
        log.warning(
            "webhook event %s (delivery row %s), attempt %d: %s%s",
            attempt.event_id,
            attempt.delivery_pk,
            attempts,
            attempt.error,
            "; giving up" if values.get("status") == "failed" else "",
        )


def send_due() -> int:
    """Send every due delivery once; -> how many were attempted."""
    attempts = claim_due()
    if not attempts:
        return 0
    timeout = get_settings().webhook_timeout
    with (
        httpx.Client(timeout=timeout, follow_redirects=False) as client,
        ThreadPoolExecutor(max_workers=min(PARALLEL, len(attempts))) as pool,
    ):
        for done in pool.map(lambda a: post(client, a), attempts):
            record_outcome(done)
    return len(attempts)
