"""`/metrics`: Prometheus text that its own parser reads, requests counted by route template
(never by raw path), and the database-backed gauges following the rows they count."""

import time

from appkit import set_job, tiny_job
from prometheus_client.parser import text_string_to_metric_families

from control.db.models import OutboxMessage
from control.db.session import session_scope

JOB_ROUTE = "/v1/fine_tuning/jobs/{job_id}"


def scrape(client) -> dict[tuple[str, tuple], float]:
    resp = client.get("/metrics")  # no key: scrapers send none
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain"), resp.headers
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def delta(before, after, name, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_requests_are_counted_and_timed_by_route_template(client, team, team_files):
    job = team.create_job(tiny_job(team_files[0]))
    before = scrape(client)
    for _ in range(3):
        assert team.get(f"/v1/fine_tuning/jobs/{job['id']}").status_code == 200
    assert team.get("/v1/fine_tuning/jobs/ftjob-nope").status_code == 404
    after = scrape(client)

    counted = "replayft_http_requests_total"
    assert delta(before, after, counted, method="GET", route=JOB_ROUTE, status="200") == 3
    assert delta(before, after, counted, method="GET", route=JOB_ROUTE, status="404") == 1
    timed = "replayft_http_request_duration_seconds_count"
    assert delta(before, after, timed, method="GET", route=JOB_ROUTE) == 4
    assert not any(job["id"] in str(key) for key in after)  # ids never become label values

    client.get(f"/jobs/{job['id']}")  # a dashboard deep link: one route, whatever the path
    client.get("/v1/no-such-route")
    later = scrape(client)
    assert not any(job["id"] in str(key) for key in later)
    assert delta(after, later, counted, method="GET", route="unmatched", status="404") == 1
    assert not any(team.id in str(key) for key in after)


def test_jobs_queue_depth_heartbeats_and_tokens_follow_the_database(client, team, team_files):
    before = scrape(client)
    first = team.create_job(tiny_job(team_files[0]))
    second = team.create_job(tiny_job(team_files[0]))
    set_job(first["id"], status="queued")
    set_job(second["id"], status="running", heartbeat_at=time.time() - 30)
    with session_scope() as session:
        session.add(OutboxMessage(task="replayft.validate_file", args=["f"], subject="file-x"))
        session.commit()
    after = scrape(client)

    assert delta(before, after, "replayft_jobs", status="queued") == 1
    assert delta(before, after, "replayft_jobs", status="running") == 1
    assert ("replayft_jobs", (("status", "paused"),)) in after  # zeros are there too
    queue = "replayft_queue_depth"
    assert delta(before, after, queue, queue="training", task="replayft.run_job") == 1
    assert delta(before, after, queue, queue="outbox", task="replayft.validate_file") == 1
    age = after[("replayft_running_job_heartbeat_age_seconds", ())]
    assert 30 <= age < 120, age

    set_job(second["id"], status="succeeded", heartbeat_at=None, trained_tokens=12345)
    done = scrape(client)
    assert delta(after, done, "replayft_trained_tokens_total") == 12345
    assert done[("replayft_running_job_heartbeat_age_seconds", ())] == 0  # none running now


WORKER_SERIES = ("replayft_worker_", "replayft_gpu_")


def test_the_grafana_dashboard_queries_only_series_the_service_exports(client, team):
    import json
    import re
    from pathlib import Path

    board = json.loads(
        (Path(__file__).parents[2] / "deploy" / "grafana-dashboard.json").read_text()
    )
    exprs = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    queried = {
        re.sub(r"_(bucket|count|sum)$", "", m)
        for e in exprs
        for m in re.findall(r"replayft_\w+", e)
    }
    # the workers' own series are checked against a worker's scrape (test_service_fair_share)
    queried = {name for name in queried if not name.startswith(WORKER_SERIES)}
    team.get("/v1/files")  # so the labelled request series have a child to export
    exported = {name for name, _ in scrape(client)}
    exported |= {re.sub(r"_(bucket|count|sum|created)$", "", n) for n in exported}
    assert queried and queried <= exported, queried - exported
