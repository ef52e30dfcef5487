"""Bad input gets the right 4xx with `param` naming the field, and leaves nothing behind."""

import httpx
from servicekit import JOBS, MAX_UPLOAD_BYTES, Team, assert_error, files_under


def test_health_needs_no_key_and_the_api_needs_a_valid_one(service):
    assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
    for headers in ({}, {"Authorization": "Bearer rft-not-a-key"}, {"Authorization": "Basic eDp5"}):
        for path in ("/v1/files", JOBS, "/v1/models"):
            resp = httpx.get(f"{service.url}{path}", headers=headers, timeout=10)
            assert_error(resp, 401)
    resp = httpx.post(f"{service.url}{JOBS}", json={"training_file": "file-x"}, timeout=10)
    assert_error(resp, 401)


def test_malformed_jsonl_ends_in_error_naming_every_bad_line(team: Team, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "1 + 1 =", "completion": " 2"}\n'
        '{"prompt": "2 + 2 =", "completion": " 4"}\n'
        '{"prompt": "3 + 3 =", "completion": \n'
        '{"prompt": "4 + 4 =", "completion": " 8"}\n'
        '{"prompt": "5 + 5 =", "completion": 10}\n'
    )
    uploaded = team.ok(team.upload(bad, "fine-tune"))
    file = team.wait_file(uploaded["id"])
    assert file["status"] == "error", file
    details = file["status_details"] or ""
    assert details.startswith("2 bad lines: line 3: invalid JSON"), details
    assert "line 5: 'completion' must be a string, got a number" in details, details
    assert str(tmp_path) not in details and "bad.jsonl" not in details  # no paths

    resp = team.post(JOBS, json=team.tiny_job(file["id"], n_epochs=0.1))
    assert_error(resp, 400, "training_file")
    assert team.list_all(JOBS) == []


def test_upload_with_an_unknown_purpose_stores_nothing(service, team: Team, target_jsonl):
    before = files_under(service.data_dir) | files_under(service.tmp_dir)
    assert_error(team.upload(target_jsonl, "assistants"), 400, "purpose")
    assert team.file_ids() == []
    assert _new_upload_files(before, service) == set()


def test_oversize_upload_is_413_and_stores_nothing(service, team: Team, tmp_path):
    marker = "oversize-marker-7f3a9c"
    line = '{"text": "' + marker + " " + "x" * 200 + '"}\n'
    big = tmp_path / "big.jsonl"
    big.write_text(line * (MAX_UPLOAD_BYTES * 3 // 2 // len(line) + 1))
    assert big.stat().st_size > MAX_UPLOAD_BYTES
    before = files_under(service.data_dir) | files_under(service.tmp_dir)
    assert_error(team.upload(big, "replay"), 413, "file")
    assert team.file_ids() == []
    new = _new_upload_files(before, service)
    assert new == set(), new
    for path in files_under(service.data_dir) | files_under(service.tmp_dir):
        if path.stat().st_size < 4 * MAX_UPLOAD_BYTES:
            assert marker.encode() not in path.read_bytes(), f"{path} holds part of the upload"


def _new_upload_files(before, service) -> set:
    """Files created since `before`, except job artifacts (under an ftjob-... folder)."""
    after = files_under(service.data_dir) | files_under(service.tmp_dir)
    return {p for p in after - before if not any(part.startswith("ftjob-") for part in p.parts)}


def test_job_create_errors_name_the_field(team: Team, team_files):
    target, replay = team_files
    cases = [
        ({"model": "replayft/no-such-model"}, "model"),
        ({"replay": {"dataset": replay, "fraction": 1.0}}, "replay.fraction"),
        ({"training_file": replay}, "training_file"),  # a replay file is not target data
        ({"replay": {"dataset": target, "fraction": 0.25}}, "replay.dataset"),  # nor the reverse
        (
            {"hyperparameters": {"packing_attention": "bidirectional"}},
            "hyperparameters.packing_attention",
        ),
    ]
    for change, param in cases:
        body = {**team.tiny_job(target, replay, n_epochs=0.1), **change}
        assert_error(team.post(JOBS, json=body), 400, param)
    missing = team.post(JOBS, json=team.tiny_job("file-doesnotexist", n_epochs=0.1))
    if missing.status_code == 404:
        assert_error(missing, 404)
    else:
        assert_error(missing, 400, "training_file")
    assert team.list_all(JOBS) == [], "a rejected create must not leave a job"


def test_a_plan_needs_its_file_validated(team: Team, target_jsonl):
    """A job may name a file still being validated (it waits: test_pending_files.py); a plan
    needs the file's tokens now, so it is refused until the file is processed."""
    fresh = team.ok(team.upload(target_jsonl, "fine-tune", filename="fresh.jsonl"))
    before = team.ok(team.get(f"/v1/files/{fresh['id']}"))["status"]
    resp = team.post("/v1/fine_tuning/plan", json=team.tiny_job(fresh["id"], n_epochs=0.1))
    after = team.ok(team.get(f"/v1/files/{fresh['id']}"))["status"]
    if before == "processed" or (resp.status_code == 200 and after == "processed"):
        return  # validation won the race (it takes seconds); nothing to check
    err = assert_error(resp, 400, "training_file")
    assert err["code"] == "file_not_ready", err
    assert team.list_all(JOBS) == []


def test_another_teams_ids_are_404_and_do_not_leak(team: Team, other_team: Team, target_jsonl):
    secret_name = "secret-plans-e41b.jsonl"
    uploaded = team.ok(team.upload(target_jsonl, "fine-tune", filename=secret_name))
    file = team.wait_file(uploaded["id"])
    assert file["status"] == "processed", file
    job = team.create_job(team.tiny_job(file["id"], n_epochs=0.1))
    fid, jid = file["id"], job["id"]

    for method, path in [
        ("GET", f"/v1/files/{fid}"),
        ("GET", f"/v1/files/{fid}/content"),
        ("DELETE", f"/v1/files/{fid}"),
        ("GET", f"{JOBS}/{jid}"),
        ("GET", f"{JOBS}/{jid}/events"),
        ("GET", f"{JOBS}/{jid}/checkpoints"),
        ("GET", f"{JOBS}/{jid}/metrics"),
        ("POST", f"{JOBS}/{jid}/cancel"),
        ("POST", f"{JOBS}/{jid}/pause"),
        ("POST", f"{JOBS}/{jid}/resume"),
    ]:
        resp = other_team.http.request(method, path)
        assert_error(resp, 404)
        assert secret_name not in resp.text and team.name not in resp.text, resp.text

    resp = other_team.post(JOBS, json=other_team.tiny_job(fid, n_epochs=0.1))
    if resp.status_code == 404:
        assert_error(resp, 404)
    else:
        assert_error(resp, 400, "training_file")
    assert secret_name not in resp.text and team.name not in resp.text, resp.text
    assert other_team.file_ids() == [] and other_team.list_all(JOBS) == []

    # the owner still has both, untouched
    assert team.ok(team.get(f"/v1/files/{fid}"))["filename"] == secret_name
    assert team.job(jid)["status"] != "cancelled"
