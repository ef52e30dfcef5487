"""Issue 11, item 11: with the database down, `/v1` answered 500. It must answer 503 with
Retry-After, as `/readyz` does, and serve again once the database is back."""

import time

import httpx
import pytest
from api_only import api_deployment
from servicekit import assert_error, throwaway_postgres


@pytest.mark.slow
def test_database_down_is_503_with_retry_after_and_service_resumes(tmp_path):
    with throwaway_postgres() as pg, api_deployment(tmp_path, database_url=pg.url) as svc:
        team = svc.team("outage")
        assert team.get("/v1/files").status_code == 200  # the pool now holds live connections

        pg.stop()
        for path in ("/v1/files", "/v1/fine_tuning/jobs", "/v1/models"):
            resp = team.get(path)
            assert_error(resp, 503)
            assert resp.json()["error"]["code"] == "database_unavailable", resp.text
            assert int(resp.headers["Retry-After"]) > 0, resp.headers
        ready = httpx.get(f"{svc.url}/readyz", timeout=30)
        assert ready.status_code == 503 and "Retry-After" in ready.headers

        pg.start()
        deadline = time.monotonic() + 30
        while (resp := team.get("/v1/files")).status_code != 200:
            assert resp.status_code == 503, resp.text  # never a 500, also while reconnecting
            assert time.monotonic() < deadline, f"still {resp.status_code} after restart"
            time.sleep(0.5)
        assert team.get("/v1/fine_tuning/jobs").status_code == 200
        assert " 500 " not in svc.api.log_path.read_text(), svc.diagnostics()
