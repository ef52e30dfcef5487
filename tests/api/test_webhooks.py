"""`/v1/webhooks`: subscriptions (the secret shown once), validation naming the field, other
teams' webhooks as 404, and the delivery log: the events that job and sweep state changes record
in their own transaction (API cancels here; the worker's succeed and fail called in-process on
rows set as a worker would have them), and redelivery. Sending them is tested against a real
receiver in tests/test_webhook_delivery.py."""

import json

import pytest
from appkit import JOBS, SWEEPS, set_job, tiny_job
from servicekit import assert_error, sweep_body
from sqlalchemy import update
from standardwebhooks import Webhook as Verifier

from control import lifecycle
from control.db.models import WebhookDelivery
from control.db.session import session_scope

HOOKS = "/v1/webhooks"
ALL_EVENTS = [
    "fine_tuning.job.succeeded",
    "fine_tuning.job.failed",
    "fine_tuning.job.cancelled",
    "fine_tuning.job.checkpoint.created",
    "sweep.completed",
]


def make_hook(team, **body):
    body = {"url": "https://hooks.example.com/replayft", "events": ALL_EVENTS, **body}
    return team.ok(team.post(HOOKS, json=body))


def deliveries(team, hook_id, **params):
    return team.list_all(f"{HOOKS}/{hook_id}/deliveries", **params)


def test_create_shows_the_secret_once_and_lists_without_it(team):
    made = make_hook(team, description="CI notifications", events=["sweep.completed"] * 2)
    assert made["id"].startswith("wh-") and made["object"] == "webhook", made
    assert made["events"] == ["sweep.completed"] and made["enabled"] is True, made
    assert made["description"] == "CI notifications"
    secret = made["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40, secret
    Verifier(secret)  # the receivers' library reads it

    public = {k: v for k, v in made.items() if k != "secret"}
    assert team.ok(team.get(f"{HOOKS}/{made['id']}")) == public
    listed = team.ok(team.get(HOOKS))
    assert listed["data"] == [public] and listed["has_more"] is False
    assert secret not in json.dumps(listed)

    second = make_hook(team, enabled=False)
    assert second["secret"] != secret and second["enabled"] is False
    assert [h["id"] for h in team.list_all(HOOKS, limit=1)] == [second["id"], made["id"]]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "example.com/hook"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "http://exa mple.com/"}, "url"),
        ({"url": "https://example.com:99999/"}, "url"),
        ({"url": "https://example.com/" + "x" * 2100}, "url"),
        ({"events": ["fine_tuning.job.succeeded", "job.done"]}, "events[1]"),
        ({"events": ["FINE_TUNING.JOB.FAILED"]}, "events[0]"),
        ({"events": []}, "events"),
        ({"description": "x" * 501}, "description"),
        ({"secret": "whsec_mine"}, "secret"),  # chosen by the server, never by the request
    ],
)
def test_bad_input_is_a_400_naming_the_field(team, body, param):
    good = {"url": "https://hooks.example.com/x", "events": ["sweep.completed"]}
    assert_error(team.post(HOOKS, json={**good, **body}), 400, param)
    assert team.ok(team.get(HOOKS))["data"] == []


@pytest.mark.parametrize(
    "url, address",
    [
        ("http://127.0.0.1:8000/hook", "127.0.0.1"),  # the service's own API
        ("http://localhost/hook", "127.0.0.1"),  # a name, resolved
        ("http://10.1.2.3/hook", "10.1.2.3"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),  # a cloud's metadata
        ("http://100.64.0.1/", "100.64.0.1"),  # shared (carrier-grade NAT)
        ("http://0.0.0.0:6379/", "0.0.0.0"),
        ("http://[::1]/hook", "::1"),
        ("http://[::ffff:10.0.0.1]/hook", "::ffff:10.0.0.1"),  # IPv4 behind an IPv6 address
        ("http://224.0.0.1/", "224.0.0.1"),  # multicast
    ],
)
def test_a_receiver_outside_the_public_internet_is_refused_naming_the_url(team, url, address):
    err = assert_error(team.post(HOOKS, json={"url": url, "events": ALL_EVENTS}), 400, "url")
    assert address in err["message"] and "webhook_allowed_networks" in err["message"], err
    assert team.ok(team.get(HOOKS))["data"] == []


def test_allowed_networks_let_internal_receivers_in_and_no_others(team, monkeypatch):
    from control.settings import get_settings

    monkeypatch.setattr(get_settings(), "webhook_allowed_networks", ["10.0.0.0/8", "::1/128"])
    for url in ("http://10.1.2.3:9000/hook", "http://[::1]/hook"):
        assert make_hook(team, url=url)["url"] == url
    assert_error(team.post(HOOKS, json={"url": "http://192.168.1.5/", "events": ALL_EVENTS}), 400)
    # public addresses, and names that do not resolve yet (the sender checks each attempt)
    for url in ("https://93.184.216.34/hook", "https://hooks.example.invalid/x"):
        assert make_hook(team, url=url)["url"] == url


def test_another_teams_webhook_is_a_404(team, other_team):
    made = make_hook(team)
    mine = f"{HOOKS}/{made['id']}"
    assert_error(other_team.get(mine), 404, "webhook_id")
    assert_error(other_team.delete(mine), 404, "webhook_id")
    assert_error(other_team.get(f"{mine}/deliveries"), 404, "webhook_id")
    assert_error(other_team.post(f"{mine}/deliveries/whdel-x/redeliver"), 404, "webhook_id")
    assert other_team.ok(other_team.get(HOOKS))["data"] == []
    assert team.ok(team.get(mine))["id"] == made["id"]


def test_patch_changes_what_it_names_and_checks_it_as_create_does(team, other_team, team_files):
    made = make_hook(team, description="CI", events=["fine_tuning.job.succeeded"])
    hook = f"{HOOKS}/{made['id']}"
    changed = team.ok(team.patch(hook, json={"events": ALL_EVENTS, "description": None}))
    assert changed["events"] == ALL_EVENTS and changed["description"] is None
    assert changed["url"] == made["url"] and "secret" not in changed  # the secret stays
    assert team.ok(team.get(hook)) == changed

    # disabled: a new event records nothing for it; enabled again, the next one does
    assert team.ok(team.patch(hook, json={"enabled": False}))["enabled"] is False
    first = team.create_job(tiny_job(team_files[0]))
    team.ok(team.post(f"{JOBS}/{first['id']}/cancel"))
    assert deliveries(team, made["id"]) == []
    assert team.ok(team.patch(hook, json={"enabled": True}))["enabled"] is True
    second = team.create_job(tiny_job(team_files[0]))
    team.ok(team.post(f"{JOBS}/{second['id']}/cancel"))
    [delivery] = deliveries(team, made["id"])
    assert delivery["payload"]["data"]["id"] == second["id"]

    for body, param in [
        ({"url": "http://10.0.0.7/hook"}, "url"),  # checked as on create
        ({"url": "ftp://example.com/"}, "url"),
        ({"url": None}, "url"),
        ({"events": ["job.done"]}, "events[0]"),
        ({"events": []}, "events"),
        ({"enabled": None}, "enabled"),
        ({"secret": "whsec_mine"}, "secret"),
    ]:
        assert_error(team.patch(hook, json=body), 400, param)
    assert team.ok(team.get(hook))["url"] == made["url"]  # a refused change changes nothing
    moved = team.ok(team.patch(hook, json={"url": "https://hooks.example.com/v2"}))
    assert moved["url"] == "https://hooks.example.com/v2"
    assert_error(other_team.patch(hook, json={"enabled": False}), 404)


def test_delete_removes_the_webhook_and_its_log(team, team_files):
    made = make_hook(team)
    job = team.create_job(tiny_job(team_files[0]))
    team.ok(team.post(f"{JOBS}/{job['id']}/cancel"))
    assert len(deliveries(team, made["id"])) == 1
    gone = team.ok(team.delete(f"{HOOKS}/{made['id']}"))
    assert gone == {"id": made["id"], "object": "webhook", "deleted": True}
    assert_error(team.get(f"{HOOKS}/{made['id']}"), 404, "webhook_id")
    assert_error(team.delete(f"{HOOKS}/{made['id']}"), 404, "webhook_id")
    with session_scope() as session:
        rows = session.query(WebhookDelivery).filter_by(webhook_id=made["id"]).count()
    assert rows == 0


def test_a_cancel_records_the_event_for_each_subscribed_enabled_webhook(
    team, other_team, team_files
):
    both = make_hook(team)
    only_success = make_hook(team, events=["fine_tuning.job.succeeded"])
    disabled = make_hook(team, enabled=False)
    theirs = make_hook(other_team)
    job = team.create_job(tiny_job(team_files[0], metadata={"run": "a"}))
    team.ok(team.post(f"{JOBS}/{job['id']}/cancel"))

    [delivery] = deliveries(team, both["id"])
    assert delivery["id"].startswith("whdel-") and delivery["object"] == "webhook.delivery"
    assert delivery["status"] == "pending" and delivery["attempts"] == 0, delivery
    assert delivery["event_type"] == "fine_tuning.job.cancelled"
    assert delivery["next_attempt_at"] is not None and delivery["last_error"] is None
    event = delivery["payload"]
    assert event["id"] == delivery["event_id"] and event["id"].startswith("evt-"), event
    assert event["object"] == "event" and event["type"] == "fine_tuning.job.cancelled"
    data = event["data"]
    assert (data["id"], data["object"], data["status"]) == (
        job["id"],
        "fine_tuning.job",
        "cancelled",
    )
    assert data["metadata"] == {"run": "a"} and data["finished_at"] is not None, data
    for nobody in (only_success, disabled):
        assert deliveries(team, nobody["id"]) == []
    assert deliveries(other_team, theirs["id"]) == []

    # a refused transition (already cancelled: 409) records nothing
    assert_error(team.post(f"{JOBS}/{job['id']}/cancel"), 409)
    assert len(deliveries(team, both["id"])) == 1


def test_worker_transitions_record_their_events(team, team_files):
    made = make_hook(team)
    ok, bad = (team.create_job(tiny_job(team_files[0])) for _ in range(2))
    for job in (ok, bad):
        set_job(job["id"], status="running", lease_owner="w1", heartbeat_at=0.0)
    outcome = {"fine_tuned_model": "ft:x", "final_checkpoint": "/c", "trained_tokens": 640}
    lifecycle.succeed(ok["id"], "w1", outcome, summary={})
    lifecycle.succeed(ok["id"], "w1", outcome, summary={})  # no longer running: no second event
    error = {"code": "internal_error", "message": "Training failed: boom", "param": None}
    lifecycle.fail(bad["id"], error, "Traceback ...", owner="w2")  # not its lease: nothing
    lifecycle.fail(bad["id"], error, "Traceback ...", owner="w1")

    got = {d["event_type"]: d["payload"]["data"] for d in deliveries(team, made["id"])}
    assert set(got) == {"fine_tuning.job.succeeded", "fine_tuning.job.failed"}, got
    assert got["fine_tuning.job.succeeded"]["id"] == ok["id"]
    assert got["fine_tuning.job.succeeded"]["fine_tuned_model"] == "ft:x"
    assert got["fine_tuning.job.succeeded"]["trained_tokens"] == 640
    assert got["fine_tuning.job.failed"]["error"] == error
    assert "Traceback" not in json.dumps(got)  # the traceback stays in the job's own events


def test_a_sweep_completes_once_when_its_last_member_finishes(team, team_files):
    made = make_hook(team, events=["sweep.completed"])
    target, replay = team_files
    sweep = team.ok(team.post(SWEEPS, json=sweep_body(target, replay)))
    jobs = [m["job_id"] for m in sweep["members"]]
    outcome = {"fine_tuned_model": "ft:y", "final_checkpoint": "/c", "trained_tokens": 1}
    for job_id in jobs[:2]:
        set_job(job_id, status="running", lease_owner="w1", heartbeat_at=0.0)
        lifecycle.succeed(job_id, "w1", outcome, summary={})
    assert deliveries(team, made["id"]) == []  # two members left

    team.ok(team.post(f"{SWEEPS}/{sweep['id']}/cancel"))  # the last two, in one transaction
    [delivery] = deliveries(team, made["id"])
    data = delivery["payload"]["data"]
    assert (data["id"], data["object"], data["status"]) == (sweep["id"], "sweep", "cancelled")
    assert data["counts"] == {"total": 4, "succeeded": 2, "failed": 0, "cancelled": 2}, data
    assert sorted(data["member_job_ids"]) == sorted(jobs)


def test_redeliver_makes_a_delivery_due_now_with_the_same_event_id(team, team_files):
    made = make_hook(team)
    job = team.create_job(tiny_job(team_files[0]))
    team.ok(team.post(f"{JOBS}/{job['id']}/cancel"))
    [before] = deliveries(team, made["id"])
    with session_scope() as session:  # as the sender leaves it after a day of failures
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == before["id"])
            .values(status="failed", attempts=17, last_error="HTTP 503", next_attempt_at=0.0)
        )
        session.commit()
    assert [d["id"] for d in deliveries(team, made["id"], status="failed")] == [before["id"]]
    assert deliveries(team, made["id"], status="pending") == []

    again = team.ok(team.post(f"{HOOKS}/{made['id']}/deliveries/{before['id']}/redeliver"))
    assert again["status"] == "pending" and again["event_id"] == before["event_id"], again
    assert again["payload"] == before["payload"] and again["attempts"] == 17
    assert again["next_attempt_at"] >= before["created_at"]
    assert_error(
        team.post(f"{HOOKS}/{made['id']}/deliveries/whdel-nope/redeliver"), 404, "delivery_id"
    )
    assert_error(team.get(f"{HOOKS}/{made['id']}/deliveries", params={"status": "x"}), 400)
