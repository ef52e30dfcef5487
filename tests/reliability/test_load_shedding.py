"""Issue 11, item 2: under load the pool ran dry and requests failed with 500 (`QueuePool limit
... overflow`, raised in the auth dependency) after waiting 30 s. Now a deployment whose pool is
tiny answers every request 200 or 503 with Retry-After, never 500, also while slow uploads are
reading their bodies (which used to hold a connection each all along)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from api_only import api_deployment

BOUNDARY = "replayft-test-boundary"
UPLOADS = 32  # more than the old pool's 10 + 20, so held connections starved everyone else
REQUESTS = 30


def slow_upload(url: str, key: str, release: threading.Event) -> httpx.Response:
    """A multipart upload that sends its first line, then waits for `release` to finish."""

    def body():
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nreplay\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="slow.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        yield b'{"text": "a line sent early"}\n'
        release.wait(120)
        yield f'{{"text": "a line sent late"}}\n\r\n--{BOUNDARY}--\r\n'.encode()

    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }
    return httpx.post(f"{url}/v1/files", content=body(), headers=headers, timeout=180)


def test_a_tiny_pool_sheds_load_with_503_never_500(tmp_path):
    settings = {
        "REPLAYFT_DB_POOL_SIZE": "1",
        "REPLAYFT_DB_MAX_OVERFLOW": "0",
        "REPLAYFT_DB_POOL_TIMEOUT": "0.2",  # short, so the burst is shed in part
    }
    with api_deployment(tmp_path, **settings) as svc:
        team = svc.team("shedding")
        release = threading.Event()
        with ThreadPoolExecutor(UPLOADS + REQUESTS) as pool:
            uploads = [pool.submit(slow_upload, svc.url, team.key, release) for _ in range(UPLOADS)]
            # the uploads have started and are reading their bodies; now a burst of requests
            threading.Event().wait(3)
            with httpx.Client(
                base_url=svc.url, headers={"Authorization": f"Bearer {team.key}"}, timeout=120
            ) as client:
                answers = list(pool.map(lambda _: client.get("/v1/files"), range(REQUESTS)))
            release.set()
            answers += [u.result() for u in uploads]
        statuses = [r.status_code for r in answers]
        assert set(statuses) <= {200, 503}, (statuses, svc.diagnostics())
        for resp in answers:
            if resp.status_code == 503:
                assert int(resp.headers["Retry-After"]) > 0, resp.headers
                assert resp.json()["error"]["code"] == "server_busy", resp.text
        # both paths were taken: requests were served, and the surplus was shed
        assert 200 in statuses and 503 in statuses, statuses
        # refused or stored, no upload leaves a partial file behind
        assert not list((svc.data_dir / "files").glob(".upload-*"))
