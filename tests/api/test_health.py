"""`/healthz`, `/readyz` (no key needed) and the error shape of what no route answers."""

from servicekit import assert_error


def test_liveness_and_readiness_need_no_key(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ok" and body["checks"]["database"] == "ok", body


def test_unknown_paths_and_methods_answer_in_the_error_shape(client, team):
    assert_error(team.get("/v1/no-such-thing"), 404)
    resp = team.request("PUT", "/v1/files")
    assert_error(resp, 405)
    assert set(resp.headers["Allow"].split(", ")) >= {"GET", "POST"}, resp.headers
