"""The model-serving process's app (inference/server.py) and pool, in-process on the tiny preset:
its event stream, its refusals, batching of requests that arrive together (or are announced, or
come back from the last batch), and unloading the least recently used model past the memory
budget."""

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from inference.pool import Job, ModelPool
from inference.server import create_app
from replay_engine.generation import Request, SamplingParams, encode_text, load_for_generation

TINY = "replayft/llama-tiny"
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def pool():
    pool = ModelPool(1 << 30, device="cpu", window_s=0.2, max_batch=8)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def serving(pool):
    with TestClient(create_app(pool=pool)) as client:
        yield client


def events(resp) -> list[dict]:
    assert resp.status_code == 200, resp.text
    return [json.loads(line) for line in resp.text.splitlines()]


def test_a_request_streams_start_chunks_and_end(serving):
    body = {"model": TINY, "messages": HI, "max_tokens": 6, "temperature": 0, "n": 2}
    out = events(serving.post("/generate", json=body))
    assert out[0] == {"type": "start", "prompt_tokens": 12}  # ChatML around "Hi"
    assert out[-1] == {"type": "end", "error": None}
    chunks = out[1:-1]
    assert {c["type"] for c in chunks} == {"chunk"}
    for index in (0, 1):
        mine = [c for c in chunks if c["index"] == index]
        assert mine[-1]["finish_reason"] == "length" and mine[-1]["completion_tokens"] == 6
    texts = ["".join(c["text"] for c in chunks if c["index"] == i) for i in (0, 1)]
    assert texts[0] == texts[1]  # greedy: both choices alike


def test_what_does_not_fit_or_load_is_refused_naming_the_field(serving):
    resp = serving.post("/generate", json={"model": TINY, "prompt": "x", "max_tokens": 1024})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "max_tokens"
    resp = serving.post("/generate", json={"model": TINY, "messages": HI * 200, "max_tokens": 1})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages"
    resp = serving.post("/generate", json={"model": "/no/such/folder", "prompt": "x"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "model"


def test_requests_arriving_together_run_as_one_batch(pool):
    served = pool.get(TINY)
    prompt = encode_text(served.loaded, "Once upon a time")
    before = pool.stats.as_dict()
    finished = threading.Semaphore(0)
    texts = [""] * 4

    def job(i: int) -> Job:
        def emit(chunk, i=i):
            texts[i] += chunk.text

        params = SamplingParams(max_tokens=8, temperature=0)
        return Job(Request(prompt, params, emit=emit), done=lambda error: finished.release())

    for i in range(4):  # well inside the 0.2 s window
        assert served.submit(job(i))
    for _ in range(4):
        assert finished.acquire(timeout=60)
    after = pool.stats.as_dict()
    assert after["batches"] - before["batches"] == 1 and after["largest_batch"] == 4
    assert len(set(texts)) == 1 and texts[0]


def test_a_batch_waits_for_announced_requests_and_for_the_last_batchs_clients():
    """Past the 10 ms window, a batch still waits (up to the regroup time) for requests the
    server has received but is still preparing, and, after a batch of k, for k requests: the
    clients of that batch coming back. Without either, each part below would run as two
    batches."""
    pool = ModelPool(1 << 30, device="cpu", window_s=0.01, regroup_s=3.0, max_batch=8)
    try:
        served = pool.get(TINY)
        prompt = encode_text(served.loaded, "Once upon a time")
        finished = threading.Semaphore(0)

        def job() -> Job:
            params = SamplingParams(max_tokens=4, temperature=0)
            return Job(Request(prompt, params), done=lambda error: finished.release())

        def batches_of(submit_late: int, announce: bool) -> int:
            before = pool.stats.as_dict()["batches"]
            for _ in range(1 + submit_late if announce else 0):
                served.arriving()
            assert served.submit(job(), announced=announce)
            time.sleep(0.3)  # 30 windows
            for _ in range(submit_late):
                assert served.submit(job(), announced=announce)
            for _ in range(1 + submit_late):
                assert finished.acquire(timeout=60)
            return pool.stats.as_dict()["batches"] - before

        assert batches_of(2, announce=True) == 1  # three announced: one batch of three
        assert pool.stats.as_dict()["largest_batch"] == 3
        assert batches_of(2, announce=False) == 1  # after a batch of three, three regroup
    finally:
        pool.close()


def test_the_least_recently_used_model_is_unloaded_past_the_budget(tmp_path):
    tiny = load_for_generation(TINY, device="cpu")
    folders = []
    for name in ("a", "b"):  # two checkpoint-like folders of the tiny model
        tiny.model.save_pretrained(tmp_path / name)
        tiny.tokenizer.save_pretrained(tmp_path / name)
        folders.append(str(tmp_path / name))
    pool = ModelPool(int(tiny.memory_bytes * 2.5), device="cpu", window_s=0)
    try:
        for model in (TINY, folders[0], TINY, folders[1]):  # folders[0] is now the oldest
            pool.get(model)
        assert [m["model"] for m in pool.loaded()] == [TINY, folders[1]]
        assert pool.stats.as_dict()["loads"] == 3 and pool.stats.as_dict()["evictions"] == 1
        assert pool.memory_bytes() <= pool.budget_bytes
    finally:
        pool.close()
