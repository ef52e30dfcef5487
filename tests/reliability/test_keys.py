"""Keys (issue 11, item 10): list, revoke and rotate keys, by the CLI and by admin-only
endpoints that every other key is refused (403); a revoked key is a 401 on its next request;
`last_used_at` is recorded."""

from __future__ import annotations

import secrets

import httpx
import pytest
from servicekit import Team, assert_error

ADMIN_ROUTES = [
    ("GET", "/v1/admin/keys", None),
    ("POST", "/v1/admin/keys", {"team": "someone-else"}),
    ("DELETE", "/v1/admin/keys/key-0", None),
    ("POST", "/v1/admin/keys/key-0/rotate", None),
    ("GET", "/v1/admin/teams", None),
    ("POST", "/v1/admin/teams", {"name": "someone-else"}),
]


def _key_team(service, key: str, label: str) -> Team:
    return Team(service.url, key, label, service.diagnostics)


@pytest.fixture
def admin(service):
    """A team holding an admin key, minted the way an operator does: `replayft keys create --admin`."""
    name = "admin-" + secrets.token_hex(3)
    result = service.cli("keys", "create", "--team", name, "--admin")
    assert result.returncode == 0, result.stderr
    t = _key_team(service, result.stdout.strip(), name)
    yield t
    t.close()


def _status(key: str, url: str) -> int:
    return httpx.get(
        f"{url}/v1/files", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ).status_code


def _listed(admin: Team, team: str) -> dict[str, dict]:
    keys = admin.ok(admin.get("/v1/admin/keys", params={"team": team}))["data"]
    return {k["id"]: k for k in keys}


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_admin_routes_refuse_a_team_key(team, method, path, body):
    resp = team.http.request(method, path, json=body)
    err = assert_error(resp, 403)
    assert err["type"] == "permission_error", err


def test_admin_creates_lists_revokes_and_rotates_keys(service, admin):
    name = "keyed-" + secrets.token_hex(3)
    made = admin.ok(admin.post("/v1/admin/keys", json={"team": name, "name": "ci"}))
    key = made["key"]
    assert key.startswith("rft-") and made["prefix"] == key[:12], made
    assert made["team"] == name and made["admin"] is False and made["revoked_at"] is None

    assert _status(key, service.url) == 200
    listed = _listed(admin, name)
    assert list(listed) == [made["id"]]
    entry = listed[made["id"]]
    assert entry["last_used_at"] is not None, entry  # the request above was recorded
    assert "key" not in entry and key not in str(listed), "a listing must never show the secret"

    # rotate: the old key stops working at once, the new one works, for the same team
    rotated = admin.ok(admin.post(f"/v1/admin/keys/{made['id']}/rotate"))
    assert rotated["id"] != made["id"] and rotated["team"] == name and rotated["name"] == "ci"
    assert _status(key, service.url) == 401
    assert_error(
        httpx.get(f"{service.url}/v1/files", headers={"Authorization": f"Bearer {key}"}), 401
    )
    assert _status(rotated["key"], service.url) == 200
    assert_error(admin.post(f"/v1/admin/keys/{made['id']}/rotate"), 409, param="key_id")

    # revoke: the next request is a 401; revoking again is harmless
    revoked = admin.ok(admin.delete(f"/v1/admin/keys/{rotated['id']}"))
    assert revoked["revoked_at"] is not None
    assert _status(rotated["key"], service.url) == 401
    assert (
        admin.ok(admin.delete(f"/v1/admin/keys/{rotated['id']}"))["revoked_at"]
        == revoked["revoked_at"]
    )
    assert {k["id"]: k["revoked_at"] is not None for k in _listed(admin, name).values()} == {
        made["id"]: True,
        rotated["id"]: True,
    }
    assert_error(admin.delete("/v1/admin/keys/key-missing"), 404, param="key_id")


def test_rotating_an_admin_key_keeps_it_admin(service, admin):
    made = admin.ok(admin.post("/v1/admin/keys", json={"team": admin.name, "admin": True}))
    rotated = admin.ok(admin.post(f"/v1/admin/keys/{made['id']}/rotate"))
    assert rotated["admin"] is True
    new_admin = _key_team(service, rotated["key"], admin.name)
    try:
        new_admin.ok(new_admin.get("/v1/admin/teams"))
    finally:
        new_admin.close()


def test_admin_creates_and_lists_teams(admin):
    name = "team-" + secrets.token_hex(3)
    created = admin.ok(admin.post("/v1/admin/teams", json={"name": name}))
    assert created["name"] == name and created["id"].startswith("org-")
    assert name in {t["name"] for t in admin.ok(admin.get("/v1/admin/teams"))["data"]}
    assert_error(admin.post("/v1/admin/teams", json={"name": name}), 409, param="name")
    assert_error(admin.post("/v1/admin/teams", json={"name": ""}), 400, param="name")


def test_cli_lists_revokes_and_rotates_keys(service, team):
    listing = service.cli("keys", "list", "--team", team.name)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "TEAM", "PREFIX", "ADMIN"], listing.stdout
    assert len(lines) == 2, listing.stdout
    key_id, team_name, prefix, is_admin = lines[1].split()[:4]
    assert team_name == team.name and prefix == team.key[:12] and is_admin == "no"
    assert team.key not in listing.stdout

    rotated = service.cli("keys", "rotate", key_id)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip()
    assert new_key.startswith("rft-") and len(new_key.split()) == 1
    assert _status(team.key, service.url) == 401
    assert _status(new_key, service.url) == 200

    listing = service.cli("keys", "list", "--team", team.name).stdout.splitlines()[1:]
    new_id = next(line.split()[0] for line in listing if line.split()[0] != key_id)
    revoked = service.cli("keys", "revoke", new_id)
    assert revoked.returncode == 0, revoked.stderr
    assert _status(new_key, service.url) == 401
    missing = service.cli("keys", "revoke", "key-missing")
    assert missing.returncode == 1 and "key-missing" in missing.stderr
