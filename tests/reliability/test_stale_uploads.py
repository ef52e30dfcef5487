"""Issue 11, item 8: an API killed mid-upload left its partial `.upload-*` file (142 MB there) for
good. Partial uploads nobody writes any more are removed at start-up and on a schedule."""

import os
import threading
import time

import httpx
import pytest
from api_only import api_deployment

STALE_S = 2


@pytest.mark.slow
def test_a_partial_upload_of_a_killed_api_is_gone_after_restart(tmp_path):
    with api_deployment(tmp_path, REPLAYFT_UPLOAD_STALE_SECONDS=str(STALE_S)) as svc:
        team = svc.team("killed-upload")
        files_dir = svc.data_dir / "files"
        stop = threading.Event()

        def endless_body():
            yield (
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
            )
            while not stop.is_set():
                yield b'{"text": "' + b"x" * 60_000 + b'"}\n'
                time.sleep(0.05)

        def upload() -> None:
            try:
                httpx.post(
                    f"{svc.url}/v1/files",
                    content=endless_body(),
                    headers={
                        "Authorization": f"Bearer {team.key}",
                        "Content-Type": "multipart/form-data; boundary=b",
                    },
                    timeout=60,
                )
            except httpx.HTTPError:
                pass  # the server dies under it

        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        deadline = time.monotonic() + 30
        while not [p for p in files_dir.glob(".upload-*") if p.stat().st_size > 500_000]:
            assert time.monotonic() < deadline, f"no partial upload appeared\n{svc.diagnostics()}"
            time.sleep(0.1)
        svc.api.kill()  # SIGKILL mid-upload: no cleanup code runs
        stop.set()
        sender.join(30)
        partial = list(files_dir.glob(".upload-*"))
        assert partial, "the killed API should have left its partial upload"

        time.sleep(STALE_S + 0.5)  # older than any live upload could be
        svc.start_api()
        assert not [p for p in partial if p.exists()], "partial upload survived a restart"

        # and on a schedule, without a restart: a partial file that stops growing goes too
        orphan = files_dir / ".upload-orphan"
        orphan.write_bytes(b"partial")
        deadline = time.monotonic() + 30
        while orphan.exists():
            assert time.monotonic() < deadline, "the periodic check did not remove the orphan"
            time.sleep(0.2)
        # a fresh one (a live upload writes its file all the time) is left alone meanwhile
        live = files_dir / ".upload-live"
        live.write_bytes(b"partial")
        for _ in range(int(STALE_S / 0.2)):
            os.utime(live)
            time.sleep(0.2)
        assert live.exists()
