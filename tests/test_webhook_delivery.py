"""Webhook delivery against a real HTTP receiver, on PostgreSQL: the sender
(`worker.webhooks.send_due`, what each worker's maintenance process runs) is called directly, on
events recorded by the real state changes (control.lifecycle), with short retry delays.

The receiver (tests/webhook_receiver.py) verifies every request with the `standardwebhooks`
library, as a team's receiver would. It can be down (nothing listening on its port), answer an
error for a while, or be up.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from servicekit import free_port, own_database
from sqlalchemy import select, update
from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError
from webhook_receiver import Receiver

LOOPBACK = ["127.0.0.0/8", "::1/128"]
ALL_EVENTS = [
    "fine_tuning.job.succeeded",
    "fine_tuning.job.failed",
    "fine_tuning.job.cancelled",
    "fine_tuning.job.checkpoint.created",
    "sweep.completed",
]


# ---------------------------------------------------------------------------- the database
@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Iterator[str]:
    """A fresh PostgreSQL database, migrated; the process's settings point at it."""
    root = tmp_path_factory.mktemp("webhooks")
    with own_database() as url, pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("REPLAYFT_")]:
            env.delenv(name)
        env.setenv("REPLAYFT_DATA_DIR", str(root))
        env.setenv("REPLAYFT_DATABASE_URL", url)
        env.setenv("REPLAYFT_WEBHOOK_RETRY_BASE", "0.1")  # 0.1, 0.2, 0.4, ... s
        env.setenv("REPLAYFT_WEBHOOK_TIMEOUT", "2")
        # the receivers are on loopback, which the sender refuses unless it is allowed
        env.setenv("REPLAYFT_WEBHOOK_ALLOWED_NETWORKS", json.dumps(LOOPBACK))
        _reset_caches()
        from control.db.migrate import upgrade
        from control.db.session import get_engine

        try:
            upgrade()
            yield url
            get_engine().dispose()
        finally:
            _reset_caches()
    _reset_caches()


def _reset_caches() -> None:
    from control.db.session import get_engine, get_sessionmaker
    from control.settings import get_settings

    for cached in (get_sessionmaker, get_engine, get_settings):
        cached.cache_clear()


@pytest.fixture
def settings(database, monkeypatch) -> Callable[..., None]:
    """-> fn(**values): change the (cached) settings for this test only."""
    from control.settings import get_settings

    def change(**values: Any) -> None:
        for name, value in values.items():
            monkeypatch.setattr(get_settings(), name, value)

    return change


def new_team(database: str, name: str) -> str:
    from control.db.models import Team
    from control.db.session import session_scope

    with session_scope() as session:
        team = Team(name=f"{name}-{time.monotonic_ns()}")
        session.add(team)
        session.commit()
        return team.id


def subscribe(team_id: str, url: str, events: list[str] = ALL_EVENTS) -> dict[str, Any]:
    """A webhook made by the API's own service function: -> its create answer (with secret)."""
    from api.schemas.webhooks import WebhookCreate
    from api.services.webhooks import create_webhook
    from control.db.models import Team
    from control.db.session import session_scope
    from control.settings import get_settings

    with session_scope() as session:
        team = session.scalar(select(Team).where(Team.id == team_id))
        body = WebhookCreate(url=url, events=events)
        created = create_webhook(session=session, team=team, body=body, settings=get_settings())
        return created.model_dump()


def subscribed_receiver(
    team_id: str, host: str = "127.0.0.1", **subscribe_kw: Any
) -> tuple[Receiver, dict[str, Any]]:
    """A receiver on a free port (not started) and the team's webhook to it, addressed by `host`;
    the receiver verifies with the webhook's secret. -> (receiver, the create answer)."""
    receiver = Receiver(free_port(), secret="")
    hook = subscribe(team_id, receiver.url.replace("127.0.0.1", host), **subscribe_kw)
    receiver.secret = hook["secret"]
    return receiver, hook


def running_job(team_id: str) -> str:
    """A job row as a worker holds it mid-run (lease `w1`)."""
    from control.db.models import Job
    from control.db.session import session_scope

    with session_scope() as session:
        job = Job(
            team_id=team_id,
            model="replayft/llama-tiny",
            training_file="file-x",
            spec={},
            artifact_dir="/nowhere",
            status="running",
            lease_owner="w1",
            heartbeat_at=time.time(),
        )
        session.add(job)
        session.commit()
        return job.id


def finish_jobs(team_id: str, n: int) -> list[str]:
    """`n` jobs ended by the lifecycle as workers and the API end them, in turn: succeeded,
    failed, cancelled. -> the job ids."""
    from control import lifecycle
    from control.db.models import Job
    from control.db.session import session_scope

    ids = []
    for i in range(n):
        job_id = running_job(team_id)
        if i % 3 == 0:
            values = {"fine_tuned_model": f"ft:{i}", "final_checkpoint": "/c", "trained_tokens": 8}
            lifecycle.succeed(job_id, "w1", values, summary={})
        elif i % 3 == 1:
            error = {"code": "internal_error", "message": "boom", "param": None}
            lifecycle.fail(job_id, error, "tb", owner="w1")
        else:
            with session_scope() as session:
                lifecycle.cancel(session, session.scalar(select(Job).where(Job.id == job_id)))
                session.commit()
        ids.append(job_id)
    return ids


def deliveries(webhook_id: str) -> list[Any]:
    from control.db.models import WebhookDelivery
    from control.db.session import session_scope

    with session_scope() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
        return list(session.scalars(query.order_by(WebhookDelivery.pk)))


def send_until(done: Callable[[], bool], timeout: float = 30) -> int:
    """Run the sender's rounds (as the maintenance process does) until `done()`; -> rounds."""
    from worker.webhooks import send_due

    deadline, rounds = time.monotonic() + timeout, 0
    while not done():
        assert time.monotonic() < deadline, "deliveries not done in time"
        send_due()
        rounds += 1
        time.sleep(0.05)
    return rounds


# ---------------------------------------------------------------------------- the tests
def test_a_signed_event_reaches_the_receiver_and_is_logged_delivered(database):
    team = new_team(database, "signed")
    receiver, hook = subscribed_receiver(team)
    receiver.start()
    try:
        [job_id] = finish_jobs(team, 1)
        send_until(lambda: deliveries(hook["id"])[0].status == "delivered")
    finally:
        receiver.stop()

    assert receiver.refused == []
    [event] = receiver.received
    [row] = deliveries(hook["id"])
    assert event["id"] == row.event_id and event["type"] == "fine_tuning.job.succeeded"
    assert event["data"]["id"] == job_id and event["data"]["fine_tuned_model"] == "ft:0"
    headers = receiver.headers[0]
    assert headers["webhook-id"] == row.event_id and headers["content-type"] == "application/json"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert (row.attempts, row.last_status_code, row.last_error) == (1, 204, None)
    assert row.delivered_at is not None

    # the same request under another secret, or with its body changed, does not verify
    other = Verifier(subscribe(team, receiver.url)["secret"])
    body = json.dumps(event, separators=(",", ":"))
    assert body == row.payload  # the body as signed, kept for every attempt
    with pytest.raises(WebhookVerificationError):
        other.verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(hook["secret"]).verify(body.replace("ft:0", "ft:1"), headers)


def test_a_receiver_on_an_address_no_longer_allowed_gets_nothing(database, settings):
    # a webhook made while its host was allowed, whose host now resolves somewhere refused (as
    # DNS rebinding would make it): the sender checks before every attempt, sends nothing and
    # retries; allowed again, the same event goes through, to the name the webhook was given
    team = new_team(database, "refused")
    receiver, hook = subscribed_receiver(team, host="localhost")
    receiver.start()
    try:
        settings(webhook_allowed_networks=[])
        finish_jobs(team, 1)
        send_until(lambda: deliveries(hook["id"])[0].attempts >= 2)
        [row] = deliveries(hook["id"])
        assert row.status == "pending" and row.last_status_code is None
        assert "not a public address" in row.last_error and "127.0.0.1" in row.last_error
        assert receiver.received == [] and receiver.refused == []

        settings(webhook_allowed_networks=LOOPBACK)
        send_until(lambda: deliveries(hook["id"])[0].status == "delivered")
    finally:
        receiver.stop()
    [event] = receiver.received
    assert event["id"] == row.event_id
    assert receiver.headers[0]["host"] == f"localhost:{receiver.port}"  # the name, not the address


def set_enabled(webhook_id: str, enabled: bool) -> None:
    """PATCH {"enabled": ...}, through the API's own service function."""
    from api.schemas.webhooks import WebhookUpdate
    from api.services.webhooks import update_webhook
    from control.db.models import Webhook
    from control.db.session import session_scope
    from control.settings import get_settings

    with session_scope() as session:
        hook = session.scalar(select(Webhook).where(Webhook.id == webhook_id))
        body = WebhookUpdate(enabled=enabled)
        update_webhook(session=session, hook=hook, body=body, settings=get_settings())


def test_a_disabled_webhooks_pending_deliveries_wait_for_it(database):
    from worker.webhooks import send_due

    team = new_team(database, "paused")
    receiver, hook = subscribed_receiver(team)
    receiver.start()
    try:
        finish_jobs(team, 1)  # recorded while enabled
        set_enabled(hook["id"], False)
        finish_jobs(team, 1)  # recorded nothing
        assert [send_due() for _ in range(3)] == [0, 0, 0]  # nothing claimed
        [row] = deliveries(hook["id"])
        assert (row.status, row.attempts) == ("pending", 0) and receiver.received == []
        set_enabled(hook["id"], True)
        send_until(lambda: deliveries(hook["id"])[0].status == "delivered")
    finally:
        receiver.stop()
    assert [e["id"] for e in receiver.received] == [row.event_id]


def test_a_receiver_down_for_a_while_gets_every_event_exactly_once(database):
    team = new_team(database, "down")
    receiver, hook = subscribed_receiver(team)  # nothing listens there yet
    finish_jobs(team, 6)
    expected = {row.event_id for row in deliveries(hook["id"])}
    assert len(expected) == 6

    # down: every attempt fails, and is retried later (the delay doubling)
    from worker.webhooks import send_due

    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        send_due()
        time.sleep(0.05)
    rows = deliveries(hook["id"])
    assert {r.status for r in rows} == {"pending"}, [(r.status, r.last_error) for r in rows]
    assert all(r.attempts >= 2 and "ConnectError" in r.last_error for r in rows), [
        (r.attempts, r.last_error) for r in rows
    ]
    assert all(r.last_status_code is None and r.next_attempt_at > time.time() - 1 for r in rows)

    # then up, answering 503 to the first two requests: those are retried too
    receiver.answers = [503, 503]
    receiver.start()
    try:
        send_until(lambda: all(r.status == "delivered" for r in deliveries(hook["id"])))
    finally:
        receiver.stop()
    assert receiver.refused == [] and receiver.answers == []
    got = receiver.ids()
    assert set(got) == expected, (got, expected)
    assert all(count == 1 for count in got.values()), got  # no 2xx was lost, so none twice
    assert sum(r.last_status_code == 204 for r in deliveries(hook["id"])) == 6


def test_several_senders_at_once_send_each_event_once(database):
    team = new_team(database, "many")
    receiver, hook = subscribed_receiver(team)
    finish_jobs(team, 30)
    receiver.start()
    try:
        threads = [threading.Thread(target=send_until, args=(_all_sent(hook),)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        receiver.stop()
    got = receiver.ids()
    assert len(got) == 30 and set(got.values()) == {1}, got
    assert {r.attempts for r in deliveries(hook["id"])} == {1}


def _all_sent(hook):
    return lambda: all(r.status == "delivered" for r in deliveries(hook["id"]))


def test_a_delivery_gives_up_after_the_retry_period_and_can_be_redelivered(database, settings):
    from api.services.webhooks import redeliver
    from control.db.models import Webhook
    from control.db.session import session_scope

    settings(webhook_retry_for=0.5)
    team = new_team(database, "gives-up")
    receiver, hook = subscribed_receiver(team, events=["fine_tuning.job.failed"])
    finish_jobs(team, 3)  # only the failed one is subscribed to
    [row] = deliveries(hook["id"])
    assert row.event_type == "fine_tuning.job.failed"
    send_until(lambda: deliveries(hook["id"])[0].status == "failed", timeout=10)
    failed = deliveries(hook["id"])[0]
    assert failed.attempts >= 2 and failed.delivered_at is None, failed.attempts

    receiver.start()
    try:
        with session_scope() as session:  # the dashboard's Redeliver button
            hook_row = session.scalar(select(Webhook).where(Webhook.id == hook["id"]))
            redeliver(session=session, hook=hook_row, delivery_id=failed.id)
        send_until(lambda: deliveries(hook["id"])[0].status == "delivered", timeout=10)
    finally:
        receiver.stop()
    assert [e["id"] for e in receiver.received] == [failed.event_id]  # the same webhook-id
    assert deliveries(hook["id"])[0].attempts == failed.attempts + 1


def test_a_failing_receiver_does_not_hold_up_another_teams(database, settings):
    """A receiver that never answers costs its own deliveries the timeout, in parallel with the
    others, which arrive meanwhile."""
    settings(webhook_timeout=3.0)
    silent_port = free_port()
    silent = socket.socket()  # accepts connections (the backlog) and never answers
    silent.bind(("127.0.0.1", silent_port))
    silent.listen(16)
    try:
        slow_team, fast_team = new_team(database, "slow"), new_team(database, "fast")
        slow_hook = subscribe(slow_team, f"http://127.0.0.1:{silent_port}/")
        receiver, hook = subscribed_receiver(fast_team)
        finish_jobs(slow_team, 3)
        finish_jobs(fast_team, 3)
        receiver.start()
        from worker.webhooks import send_due

        started = time.monotonic()
        send_due()
        took = time.monotonic() - started
    finally:
        silent.close()
        receiver.stop()
    assert len(receiver.ids()) == 3
    assert took < 3.0 * 2, took  # one timeout, not one per silent delivery
    slow_rows = deliveries(slow_hook["id"])
    assert [(r.status, r.last_error) for r in slow_rows] == [
        ("pending", "No answer within 3 s.")
    ] * 3


def test_a_state_change_rolled_back_records_no_delivery(database):
    from control import lifecycle
    from control.db.models import Job, WebhookDelivery
    from control.db.session import session_scope

    team = new_team(database, "rollback")
    hook = subscribe(team, "http://127.0.0.1:9/")
    job_id = running_job(team)
    with session_scope() as session:
        lifecycle.cancel(session, session.scalar(select(Job).where(Job.id == job_id)))
        assert session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook["id"])
        ).all()  # recorded in the transaction...
        session.rollback()  # ...which did not commit (a request or a process that died)
    assert deliveries(hook["id"]) == []
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running"))
        session.commit()


def test_members_finishing_at_once_complete_their_sweep_exactly_once(database):
    """Two workers end a sweep's last two members at the same moment, many times over: each
    sweep gets one `sweep.completed`, never none (both reading the other as still running) and
    never two."""
    from control import lifecycle
    from control.db.models import Sweep, SweepMember, WebhookDelivery
    from control.db.session import session_scope

    team = new_team(database, "race")
    hook = subscribe(team, "http://127.0.0.1:9/", events=["sweep.completed"])
    sweeps = []
    for _ in range(15):
        pair = [running_job(team), running_job(team)]
        with session_scope() as session:
            sweep = Sweep(
                team_id=team,
                model="replayft/llama-tiny",
                training_file="file-x",
                replay_fractions=[0, 0.25],
                reference_subsets=[1.0],
                request={},
            )
            session.add(sweep)
            session.flush()
            for job_id, r in zip(pair, (0.0, 0.25), strict=True):
                session.add(SweepMember(sweep_id=sweep.id, job_id=job_id, replay_fraction=r))
            session.commit()
            sweeps.append((sweep.id, pair))

    outcome = {"fine_tuned_model": "ft:r", "final_checkpoint": "/c", "trained_tokens": 1}
    for _sweep_id, pair in sweeps:
        start = threading.Barrier(2)

        def finish(job_id: str, start=start) -> None:
            start.wait()
            lifecycle.succeed(job_id, "w1", outcome, summary={})

        threads = [threading.Thread(target=finish, args=(job_id,)) for job_id in pair]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    with session_scope() as session:
        completed = Counter(
            json.loads(payload)["data"]["id"]
            for payload in session.scalars(
                select(WebhookDelivery.payload).where(WebhookDelivery.webhook_id == hook["id"])
            )
        )
    assert completed == {sweep_id: 1 for sweep_id, _ in sweeps}, completed


def test_a_cancel_racing_a_workers_succeed_leaves_one_final_status_and_one_event(database):
    """The API's cancel locks the job's row before it looks at its status
    (api.services.jobs._transition), so a worker's succeed at the same moment waits for it and
    then finds the job cancelled: the job is not `succeeded` over `cancelled` (or the reverse),
    and only the cancelled event is recorded."""
    from api.errors import APIError
    from api.services.jobs import cancel_job
    from control import lifecycle
    from control.db.models import Job, WebhookDelivery
    from control.db.session import session_scope

    team_id = new_team(database, "cancel-race")
    hook = subscribe(team_id, "http://127.0.0.1:9/never")
    job_id = running_job(team_id)
    values = {"fine_tuned_model": "ft:x", "final_checkpoint": "/c", "trained_tokens": 8}

    api_session = session_scope().__enter__()
    job = api_session.scalar(select(Job).where(Job.id == job_id))
    api_session.refresh(job, with_for_update=True)  # what cancel_job does first: the lock
    worker = threading.Thread(target=lifecycle.succeed, args=(job_id, "w1", values, {}))
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive(), "the worker's succeed must wait for the API's lock"
    cancel_job(session=api_session, job=job)  # commits: the lock is released
    api_session.close()
    worker.join(timeout=30)
    with session_scope() as session:
        row = session.scalar(select(Job).where(Job.id == job_id))
        assert (row.status, row.fine_tuned_model) == ("cancelled", None)
        events = session.scalars(
            select(WebhookDelivery.event_type).where(WebhookDelivery.webhook_id == hook["id"])
        ).all()
    assert events == ["fine_tuning.job.cancelled"], events

    # the other order: the API read the job while it ran, the worker committed its succeed
    # before the cancel: the cancel reads the row again, answers 409 and changes nothing
    done = running_job(team_id)
    with session_scope() as session:
        job = session.scalar(select(Job).where(Job.id == done))
        assert job.status == "running"
        session.commit()  # as a request whose read transaction ended before the cancel
        lifecycle.succeed(done, "w1", values, {})
        with pytest.raises(APIError) as refused:
            cancel_job(session=session, job=job)
    assert refused.value.status_code == 409
    with session_scope() as session:
        assert session.scalar(select(Job.status).where(Job.id == done)) == "succeeded"


def test_https_goes_to_the_checked_address_and_verifies_the_certificate_by_name(database):
    # The sender connects to the address it checked, not to a second DNS answer, and still
    # verifies TLS against the URL's name: the certificate names `localhost` only, no address.
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx
    import trustme

    from worker.webhooks import Attempt, post

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            hosts.append(self.headers["host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    def attempt(host: str) -> Attempt:
        return Attempt(
            1, 0.0, f"https://{host}:{port}/hook", "whsec_" + "A" * 43, "evt_1", "{}", 0, 0.0
        )

    try:
        with httpx.Client(verify=client_context, timeout=5) as client:
            by_name = post(client, attempt("localhost"))
            by_address = post(client, attempt("127.0.0.1"))  # the certificate does not name it
    finally:
        server.shutdown()
        server.server_close()
    assert (by_name.status_code, by_name.error) == (204, None)
    assert hosts == [f"localhost:{port}"]
    assert by_address.status_code is None and "CERTIFICATE_VERIFY_FAILED" in by_address.error
