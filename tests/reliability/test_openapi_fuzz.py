"""schemathesis over the live `/openapi.json` of the real deployment (issue 11, item 9): for every
operation a bounded number of generated requests, valid and invalid by the schema, with a valid
team key. No request may get a 5xx, every status must be one the operation documents, and every
documented body must match its schema.

One test per operation (listed from the app's own schema, so collection needs no server); each
loads the live schema from the running API and drives schemathesis's strategies with Hypothesis
itself (`schemathesis.pytest.from_fixture` breaks on pytest 9: it reads `Function._nodeid`).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from api.main import create_app

EXAMPLES = int(os.environ.get("REPLAYFT_FUZZ_EXAMPLES", "30"))  # per operation and mode
# the same requests on every run unless asked for new ones (a longer hunt by hand)
RANDOM = os.environ.get("REPLAYFT_FUZZ_RANDOM") == "1"

CONFIG = {
    "generation": {
        # the key is ours (below): generating Authorization values would test only the 401 path
        "with-security-parameters": False,
    },
}
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]

APP_SCHEMA = create_app().openapi()
OPERATIONS = [
    (method.upper(), path, mode)
    for path, operations in APP_SCHEMA["paths"].items()
    for method, operation in operations.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # an operation whose only input is a string path parameter has no invalid request to make
    if mode == GenerationMode.POSITIVE
    or "requestBody" in operation
    or any(p["in"] != "path" for p in operation.get("parameters", []))
]


@pytest.fixture(scope="module")
def fuzz_team(service):
    t = service.team("fuzz")
    yield t
    t.close()


@pytest.fixture(scope="module")
def live_schema(service):
    config = SchemathesisConfig.from_dict(CONFIG)
    return schemathesis.openapi.from_url(f"{service.url}/openapi.json", config=config)


@pytest.mark.parametrize(
    ("method", "path", "mode"), OPERATIONS, ids=[f"{o}-{m} {p}" for m, p, o in OPERATIONS]
)
def test_live_schema(live_schema, fuzz_team, method, path, mode):
    operation = live_schema[path][method]
    headers = {"Authorization": f"Bearer {fuzz_team.key}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
