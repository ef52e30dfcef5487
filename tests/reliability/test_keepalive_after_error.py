"""Issue 11, item 5: after a 500 the next request on the same kept-alive connection was reset
("Exception in ASGI application"): the catch-all handler answered, then Starlette re-raised and
uvicorn closed the connection. A 500 now leaves the connection usable."""

import http.client
import json


def test_the_connection_serves_the_next_request_after_a_500(service, team, target_jsonl):
    file = team.ok(team.upload(target_jsonl, "fine-tune"))
    # a real server-side failure: the stored content is gone from disk under the API
    (service.data_dir / "files" / f"{file['id']}.jsonl").unlink()

    log_before = service.api.log_path.stat().st_size
    host, port = service.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {team.key}"}
    try:
        conn.request("GET", f"/v1/files/{file['id']}/content", headers=headers)
        first = conn.getresponse()
        body = json.loads(first.read())
        assert first.status == 500, body
        assert body["error"]["message"] == "Internal server error.", body  # no details leak
        socket_used = conn.sock
        assert socket_used is not None, "the server asked to close the connection"

        for _ in range(3):  # the same connection keeps serving
            conn.request("GET", f"/v1/files/{file['id']}", headers=headers)
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            assert json.loads(resp.read())["id"] == file["id"]
            assert conn.sock is socket_used, "a new connection was opened"
    finally:
        conn.close()
    with open(service.api.log_path, "rb") as log:  # only what these requests logged
        log.seek(log_before)
        assert b"Exception in ASGI application" not in log.read()
