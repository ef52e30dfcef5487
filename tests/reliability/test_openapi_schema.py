"""The OpenAPI document tells the truth (issue 11, item 9): the statuses the API answers, with
the error envelope, never FastAPI's 422 (request validation answers 400 here); `OPTIONS` lists
every method of a path; a sweep body the schema accepts is not refused for a reason the schema
could have said. schemathesis over the same live schema: test_openapi_fuzz.py."""

from __future__ import annotations

import httpx
import jsonschema_rs
import pytest
from servicekit import assert_error

ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture(scope="module")
def live(service) -> dict:
    resp = httpx.get(f"{service.url}/openapi.json", timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _operations(live: dict):
    for path, operations in live["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", path, operation


def test_every_operation_documents_its_real_errors(live):
    envelope = live["components"]["schemas"]["ErrorResponse"]
    detail = live["components"]["schemas"]["ErrorDetail"]
    assert envelope["required"] == ["error"], envelope
    assert set(detail["properties"]) == {"message", "type", "param", "code"}, detail
    for label, path, operation in _operations(live):
        responses = operation["responses"]
        assert "422" not in responses, f"{label} documents a 422, which the API never answers"
        if not path.startswith("/v1/"):
            continue
        assert {"401", "503"} <= set(responses), f"{label}: {sorted(responses)}"
        takes_input = "requestBody" in operation or operation.get("parameters")
        if takes_input:
            assert "400" in responses, f"{label} validates input but documents no 400"
        if "{" in path:
            assert "404" in responses, f"{label} names an object but documents no 404"
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": ERROR_REF}, f"{label} {status}: {response}"
    statuses = {label: set(op["responses"]) for label, _, op in _operations(live)}
    assert "413" in statuses["POST /v1/files"]
    assert "409" in statuses["DELETE /v1/files/{file_id}"]
    assert "409" in statuses["POST /v1/fine_tuning/jobs"]  # a reused Idempotency-Key
    assert "409" in statuses["POST /v1/fine_tuning/jobs/{job_id}/cancel"]
    assert "403" in statuses["GET /v1/admin/keys"]


def test_options_lists_every_method_of_a_path(service, team):
    def allow(resp: httpx.Response) -> set[str]:
        return {m.strip() for m in resp.headers.get("allow", "").split(",") if m.strip()}

    resp = httpx.options(f"{service.url}/v1/files/file-0123", timeout=30)
    assert resp.status_code in (200, 204), resp.text
    assert {"GET", "DELETE", "OPTIONS"} <= allow(resp), resp.headers
    assert "POST" not in allow(resp)
    resp = httpx.options(f"{service.url}/v1/files", timeout=30)
    assert {"GET", "POST"} <= allow(resp) and "DELETE" not in allow(resp), resp.headers
    # a method the path lacks: 405, and its Allow names all the path's methods too
    resp = team.http.put("/v1/files/file-0123")
    assert_error(resp, 405)
    assert {"GET", "DELETE"} <= allow(resp), resp.headers
    assert_error(httpx.options(f"{service.url}/v1/no-such-thing", timeout=30), 404)


def test_sweep_bodies_the_service_refuses_are_invalid_by_the_schema(live, team, team_files):
    """Each body here is refused for its shape alone (not for the data it names): the schema
    must refuse it as well, so that a client (or schemathesis) can know it in advance."""
    target, replay = team_files
    validator = jsonschema_rs.Draft202012Validator(
        {"$ref": "#/components/schemas/SweepCreate", "components": live["components"]}
    )
    base = {"training_file": target, "replay": {"dataset": replay}}
    refused = [
        ({"replay_fractions": []}, "replay_fractions"),
        ({"replay_fractions": [1.0]}, "replay_fractions.0"),
        ({"replay_fractions": [-0.5]}, "replay_fractions.0"),
        ({"replay_fractions": [0.1, 0.1]}, "replay_fractions"),
        ({"reference_subsets": [0.0, 0.5]}, "reference_subsets.0"),
        ({"reference_subsets": [0.5]}, "reference_subsets"),
        ({"target_stage2_allocations": []}, "target_stage2_allocations"),
        ({"target_stage2_allocations": [1.5]}, "target_stage2_allocations.0"),
        (
            {"hyperparameters": {"target_subset_fraction": 0.5}},
            "hyperparameters.target_subset_fraction",
        ),
        (
            {"method": {"supervised": {"hyperparameters": {"target_subset_fraction": 0.5}}}},
            "method.supervised.hyperparameters.target_subset_fraction",
        ),
    ]
    for change, param in refused:
        body = {**base, **change}
        assert not validator.is_valid(body), f"the schema accepts {change}"
        assert_error(team.post("/v1/sweeps", json=body), 400, param=param)
    assert validator.is_valid(base)
