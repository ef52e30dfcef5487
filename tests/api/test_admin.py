"""`/v1/admin`: keys and teams, for admin keys only (403 to every other key); a revoked or
rotated-away key is a 401 on its next request; listings never show a secret."""

import pytest
from appkit import FILES, TeamClient
from servicekit import assert_error

ADMIN_ROUTES = [
    ("GET", "/v1/admin/keys", None),
    ("POST", "/v1/admin/keys", {"team": "someone-else"}),
    ("DELETE", "/v1/admin/keys/key-0", None),
    ("POST", "/v1/admin/keys/key-0/rotate", None),
    ("GET", "/v1/admin/teams", None),
    ("POST", "/v1/admin/teams", {"name": "someone-else"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_admin_routes_refuse_a_team_key_and_no_key(client, team, method, path, body):
    err = assert_error(team.request(method, path, json=body), 403)
    assert err["type"] == "permission_error" and err["code"] == "admin_key_required", err
    assert_error(client.request(method, path, json=body), 401)


def _as(admin: TeamClient, key: str) -> TeamClient:
    return TeamClient(admin.client, key, "?", "?")


def test_admin_creates_lists_rotates_and_revokes_keys(admin):
    made = admin.ok(admin.post("/v1/admin/keys", json={"team": "keyed-team", "name": "ci"}))
    key = made["key"]
    assert made["object"] == "api_key" and key.startswith("rft-") and made["prefix"] == key[:12]
    assert made["team"] == "keyed-team" and made["admin"] is False and made["revoked_at"] is None
    assert made["last_used_at"] is None

    holder = _as(admin, key)
    assert holder.get(FILES).status_code == 200
    listed = admin.ok(admin.get("/v1/admin/keys", params={"team": "keyed-team"}))["data"]
    assert [k["id"] for k in listed] == [made["id"]]
    assert listed[0]["last_used_at"] is not None, "the request above was recorded"
    assert "key" not in listed[0] and key not in str(listed)

    rotated = admin.ok(admin.post(f"/v1/admin/keys/{made['id']}/rotate"))
    assert (
        rotated["id"] != made["id"] and rotated["team"] == "keyed-team" and rotated["name"] == "ci"
    )
    assert_error(holder.get(FILES), 401)
    assert _as(admin, rotated["key"]).get(FILES).status_code == 200
    err = assert_error(admin.post(f"/v1/admin/keys/{made['id']}/rotate"), 409, "key_id")
    assert err["code"] == "key_revoked", err

    revoked = admin.ok(admin.delete(f"/v1/admin/keys/{rotated['id']}"))
    assert revoked["revoked_at"] is not None
    assert_error(_as(admin, rotated["key"]).get(FILES), 401)
    again = admin.ok(admin.delete(f"/v1/admin/keys/{rotated['id']}"))
    assert again["revoked_at"] == revoked["revoked_at"], "revoking twice keeps the first time"
    assert_error(admin.delete("/v1/admin/keys/key-missing"), 404, "key_id")
    assert_error(admin.post("/v1/admin/keys/key-missing/rotate"), 404, "key_id")


def test_a_rotated_admin_key_stays_admin(admin):
    made = admin.ok(admin.post("/v1/admin/keys", json={"team": admin.name, "admin": True}))
    rotated = admin.ok(admin.post(f"/v1/admin/keys/{made['id']}/rotate"))
    assert rotated["admin"] is True
    _as(admin, rotated["key"]).ok(_as(admin, rotated["key"]).get("/v1/admin/teams"))


def test_admin_creates_and_lists_teams(admin):
    created = admin.ok(admin.post("/v1/admin/teams", json={"name": "team-made-by-admin"}))
    assert created["object"] == "team" and created["id"].startswith("org-"), created
    assert "team-made-by-admin" in {
        t["name"] for t in admin.ok(admin.get("/v1/admin/teams"))["data"]
    }
    err = assert_error(
        admin.post("/v1/admin/teams", json={"name": "team-made-by-admin"}), 409, "name"
    )
    assert err["code"] == "team_exists", err
    assert_error(admin.post("/v1/admin/teams", json={"name": ""}), 400, "name")
    assert_error(admin.post("/v1/admin/teams", json={"name": "a\x00b"}), 400, "name")
    assert_error(admin.post("/v1/admin/keys", json={"team": "x" * 201}), 400, "team")
    assert_error(admin.post("/v1/admin/keys", json={}), 400, "team")
