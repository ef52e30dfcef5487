"""Issue 11, item 5, the streamed case: a checkpoint download (a tar.gz streamed from a producer
thread) swallowed a failure mid-archive, e.g. the folder pruned under it, and ended the body as
if complete: a short archive the client took for the whole checkpoint. The failure now reaches
the response, which aborts the connection (the only way HTTP can say a body is incomplete); and a
download the client abandons no longer leaves its producer thread blocked for good."""

import os
import shutil
import threading
import time

import pytest

from api.routes.fine_tuning_jobs import _tar_stream


def checkpoint_folder(root, files: int = 4, mib: int = 2):
    folder = root / "step-5"
    folder.mkdir()
    for i in range(files):  # random bytes: gzip cannot shrink them into the queue's slack
        (folder / f"part-{i}.bin").write_bytes(os.urandom(mib << 20))
    return folder


def test_a_folder_removed_mid_download_fails_the_stream(tmp_path):
    folder = checkpoint_folder(tmp_path)
    stream = _tar_stream(folder, "ckpt")
    next(stream)  # headers are out: the response has started
    shutil.rmtree(folder)
    with pytest.raises(RuntimeError, match="archiving"):
        for _ in stream:
            pass


@pytest.mark.slow
def test_an_abandoned_download_ends_its_producer(tmp_path):
    folder = checkpoint_folder(tmp_path)
    before = threading.active_count()
    stream = _tar_stream(folder, "ckpt")
    next(stream)
    stream.close()  # what the server does when the client goes away
    deadline = time.monotonic() + 15
    while threading.active_count() > before:
        assert time.monotonic() < deadline, "the tar producer is still blocked"
        time.sleep(0.1)
