"""`/v1/files`: upload, list, retrieve, content, preview, delete; auth; upload refusals."""

import json

import httpx
import pytest
from appkit import (
    FILES,
    JOBS,
    MAX_UPLOAD_BYTES,
    VALIDATE_FILE,
    outbox_rows,
    set_job,
    stored_files,
    target_lines,
    tiny_job,
)
from servicekit import assert_error, multipart


def test_upload_answers_a_file_object_and_enqueues_its_validation(deployment, team, queue):
    content = target_lines(5)
    file = team.ok(team.upload(content, "fine-tune", "train.jsonl"))
    assert file["object"] == "file" and file["id"].startswith("file-"), file
    assert file["bytes"] == len(content) and file["filename"] == "train.jsonl", file
    assert file["purpose"] == "fine-tune" and file["status"] == "uploaded", file
    assert isinstance(file["created_at"], int), file
    assert queue.enqueued == [(VALIDATE_FILE, (file["id"],))]
    assert outbox_rows(file["id"]) == [], "the route enqueues through the queue it is given"

    assert team.ok(team.get(f"{FILES}/{file['id']}")) == file
    content_resp = team.get(f"{FILES}/{file['id']}/content")
    assert content_resp.status_code == 200 and content_resp.content == content


def test_a_download_link_opens_that_files_content_without_the_key(client, team, other_team):
    content = target_lines(4)
    file = team.ok(team.upload(content, "fine-tune", "train.jsonl"))
    second = team.ok(team.upload(target_lines(2), "fine-tune", "second.jsonl"))
    link = team.ok(team.post(f"{FILES}/{file['id']}/download_link"))
    assert link["object"] == "file.download_link" and team.key not in link["url"], link
    url = httpx.URL(link["url"])
    assert url.path == f"{FILES}/{file['id']}/content" and 0 < link["expires_at"], link

    # no Authorization header, as a browser's download manager asks: the content, named
    resp = client.get(url.path, params=dict(url.params))
    assert resp.status_code == 200 and resp.content == content, resp.text[:300]
    assert 'filename="train.jsonl"' in resp.headers["content-disposition"]

    token = url.params["token"]
    key_id, expires_at, sig = token.split(".")
    second_path = f"{FILES}/{second['id']}/content"
    assert_error(client.get(second_path, params={"token": token}), 401, "token")  # that file only
    tampered = f"{key_id}.{int(expires_at) + 3600}.{sig}"
    assert_error(client.get(url.path, params={"token": tampered}), 401, "token")
    assert_error(client.get(url.path), 401)
    assert_error(other_team.post(f"{FILES}/{file['id']}/download_link"), 404)
    team.ok(team.delete(f"{FILES}/{file['id']}"))
    assert_error(client.get(url.path, params={"token": token}), 404)  # gone is gone


def test_without_an_override_the_upload_writes_an_outbox_row(deployment, team):
    from api.deps import get_queue

    deployment.app.dependency_overrides.pop(get_queue)  # the production queue: the outbox
    file = team.ok(team.upload(target_lines(3), "replay"))
    assert outbox_rows(file["id"]) == [(VALIDATE_FILE, [file["id"]])]


def test_validation_by_the_worker_function_fills_status_and_stats(team, processed_file):
    file = processed_file(team, target_lines(12), "fine-tune")
    assert file["status"] == "processed" and file["status_details"] is None, file
    assert file["stats"]["examples"] == 12 and file["stats"]["tokens"] > 0, file


def test_a_malformed_file_ends_in_error_naming_every_bad_line(team, processed_file):
    bad = (
        b'{"prompt": "1 + 1 =", "completion": " 2"}\n'
        b'{"prompt": "2 + 2 =", "completion": \n'
        b'{"prompt": "3 + 3 =", "completion": 6}\n'
    )
    file = processed_file(team, bad, "fine-tune", "bad.jsonl")
    assert file["status"] == "error", file
    details = file["status_details"]
    assert details.startswith("2 bad lines: line 2: invalid JSON"), details
    assert "line 3: 'completion' must be a string, got a number" in details, details
    assert "bad.jsonl" not in details, "no server paths or names in the details"


def test_list_is_newest_first_with_cursor_pagination_and_a_purpose_filter(team, other_team):
    ids = [
        team.ok(team.upload(b'{"text": "x"}\n', p))["id"] for p in ["replay"] * 3 + ["fine-tune"]
    ]
    other_team.ok(other_team.upload(b'{"text": "y"}\n', "replay"))

    page = team.ok(team.get(FILES, params={"limit": 2}))
    assert page["object"] == "list" and page["has_more"] is True, page
    assert [f["id"] for f in page["data"]] == ids[::-1][:2]
    rest = team.ok(team.get(FILES, params={"limit": 2, "after": page["data"][-1]["id"]}))
    assert [f["id"] for f in rest["data"]] == ids[::-1][2:] and rest["has_more"] is False, rest
    assert [f["id"] for f in team.list_all(FILES, purpose="replay")] == ids[2::-1]

    assert_error(team.get(FILES, params={"after": "file-unknown"}), 400, "after")
    assert_error(team.get(FILES, params={"limit": 0}), 400, "limit")
    assert_error(
        team.get(FILES, params={"after": other_team.list_all(FILES)[0]["id"]}), 400, "after"
    )


def test_delete_removes_the_row_and_the_stored_file(deployment, team):
    file = team.ok(team.upload(b'{"text": "x"}\n', "replay"))
    before = stored_files(deployment.data_dir)
    deleted = team.ok(team.delete(f"{FILES}/{file['id']}"))
    assert deleted == {"id": file["id"], "object": "file", "deleted": True}
    assert len(stored_files(deployment.data_dir)) == len(before) - 1
    assert_error(team.get(f"{FILES}/{file['id']}"), 404, "file_id")
    assert_error(team.delete(f"{FILES}/{file['id']}"), 404, "file_id")


def test_a_file_in_use_by_an_active_job_cannot_be_deleted(team, team_files):
    target, replay = team_files
    job = team.create_job(tiny_job(target, replay))
    for file_id, field in ((target, "training_file"), (replay, "replay.dataset")):
        err = assert_error(team.delete(f"{FILES}/{file_id}"), 409, "file_id")
        assert f"as its {field}" in err["message"], err
    # a paused job resumes later, and needs its data then
    set_job(job["id"], status="paused")
    assert_error(team.delete(f"{FILES}/{replay}"), 409, "file_id")
    team.ok(team.post(f"{JOBS}/{job['id']}/cancel"))
    team.ok(team.delete(f"{FILES}/{replay}"))
    team.ok(team.delete(f"{FILES}/{target}"))


REFUSED_UPLOADS = {
    "unknown purpose": (*multipart(b"a.jsonl", b"assistants"), 400, "purpose"),
    "no purpose": (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        b'{"text": "x"}\n\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
        400,
        "purpose",
    ),
    "no file part": (
        b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nreplay\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
        400,
        "file",
    ),
    "not multipart": (b'{"purpose": "replay"}', "application/json", 400, "file"),
    "malformed multipart": (b"not multipart", "multipart/form-data; boundary=xyz", 400, "file"),
    "nul in file name": (*multipart(b"a\x00b.jsonl"), 400, "file"),
    "501-character file name": (*multipart(b"a" * 497 + b".txt"), 400, "file"),
    "oversize": (
        *multipart(b"big.jsonl"),
        413,
        "file",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_UPLOADS))
def test_a_refused_upload_names_the_field_and_stores_nothing(deployment, team, queue, case):
    content, content_type, status, param = REFUSED_UPLOADS[case]
    if case == "oversize":
        line = b'{"text": "' + b"x" * 1000 + b'"}\n'
        content = content.replace(
            b'{"text": "hello"}\n', line * (MAX_UPLOAD_BYTES // len(line) + 2)
        )
    before = stored_files(deployment.data_dir)
    resp = team.post(FILES, content=content, headers={"Content-Type": content_type})
    assert_error(resp, status, param)
    assert stored_files(deployment.data_dir) == before, "no upload, partial or whole, stays"
    assert team.list_all(FILES) == [] and queue.enqueued == []


def test_a_500_character_file_name_is_kept_whole(team):
    name = "b" * 494 + ".jsonl"
    content, content_type = multipart(name.encode())
    file = team.ok(team.post(FILES, content=content, headers={"Content-Type": content_type}))
    assert file["filename"] == name


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer rft-not-a-key"},
        {"Authorization": "Basic eDp5"},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "unknown", "not bearer", "empty bearer"],
)
def test_every_files_route_needs_a_valid_key(client, team, headers, queue):
    file = team.ok(team.upload(b'{"text": "x"}\n', "replay"))
    queue.clear()
    for method, path in [
        ("GET", FILES),
        ("GET", f"{FILES}/{file['id']}"),
        ("GET", f"{FILES}/{file['id']}/content"),
        ("GET", f"{FILES}/{file['id']}/preview"),
        ("DELETE", f"{FILES}/{file['id']}"),
    ]:
        resp = client.request(method, path, headers=headers)
        err = assert_error(resp, 401)
        assert (
            err["type"] == "authentication_error" and resp.headers["WWW-Authenticate"] == "Bearer"
        )
    resp = client.post(
        FILES, files={"file": ("a.jsonl", b"{}\n")}, data={"purpose": "replay"}, headers=headers
    )
    assert_error(resp, 401)
    assert queue.enqueued == [] and len(team.list_all(FILES)) == 1


def test_a_revoked_key_is_refused_on_its_next_request(team, admin):
    assert team.get(FILES).status_code == 200
    key_id = admin.ok(admin.get("/v1/admin/keys", params={"team": team.name}))["data"][0]["id"]
    admin.ok(admin.delete(f"/v1/admin/keys/{key_id}"))
    err = assert_error(team.get(FILES), 401)
    assert "revoked" in err["message"], err
    assert_error(team.upload(b'{"text": "x"}\n', "replay"), 401)


def test_another_teams_file_is_404_and_does_not_leak(team, other_team):
    secret = "secret-plans-e41b.jsonl"
    file = team.ok(team.upload(b'{"text": "x"}\n', "replay", secret))
    for method, path in [
        ("GET", f"{FILES}/{file['id']}"),
        ("GET", f"{FILES}/{file['id']}/content"),
        ("GET", f"{FILES}/{file['id']}/preview"),
        ("DELETE", f"{FILES}/{file['id']}"),
    ]:
        resp = other_team.request(method, path)
        assert_error(resp, 404, "file_id")
        assert secret not in resp.text and team.name not in resp.text, resp.text
    assert other_team.list_all(FILES) == []
    assert team.ok(team.get(f"{FILES}/{file['id']}"))["filename"] == secret


@pytest.mark.parametrize(
    ("path", "param"),
    [("/v1/files/file-%00x", "file_id"), ("/v1/files/" + "f" * 65, "file_id")],
)
def test_a_bad_file_id_is_a_400(team, path, param):
    assert_error(team.get(path), 400, param)


def test_preview_shows_the_first_records_with_long_strings_cut(team):
    records = [
        {"prompt": f"question {i}", "completion": "x" * (600 if i == 1 else 3)} for i in range(8)
    ]
    content = "".join(json.dumps(r) + "\n" for r in records).encode()
    file = team.ok(team.upload(content, "fine-tune", "qa.jsonl"))
    preview = team.ok(team.get(f"{FILES}/{file['id']}/preview", params={"limit": 3}))
    assert preview["object"] == "file.preview" and preview["filename"] == "qa.jsonl"
    assert [r["prompt"] for r in preview["rows"]] == ["question 0", "question 1", "question 2"]
    assert preview["rows"][1]["completion"] == "x" * 500 + "…"
    assert preview["truncated"] is True
    whole = team.ok(team.get(f"{FILES}/{file['id']}/preview", params={"limit": 50}))
    assert len(whole["rows"]) == 8 and whole["truncated"] is False
    assert_error(team.get(f"{FILES}/{file['id']}/preview", params={"limit": 51}), 400, "limit")


def test_preview_of_text_and_of_a_bad_line(team):
    text = team.ok(team.upload(b"first line\n\nsecond line\n", "replay", "corpus.txt"))
    assert team.ok(team.get(f"{FILES}/{text['id']}/preview"))["rows"] == [
        "first line",
        "second line",
    ]
    bad = team.ok(team.upload(b'{"text": "ok"}\n{not json\n', "replay", "b.jsonl"))
    assert team.ok(team.get(f"{FILES}/{bad['id']}/preview"))["rows"] == [
        {"text": "ok"},
        "{not json",
    ]
