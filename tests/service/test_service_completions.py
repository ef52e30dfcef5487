"""Completions on the real deployment: the API forwarding to a real `replayft inference`
process. The official `openai` package streams a chat completion unchanged; a client that goes
away mid-stream stops its generation; requests that arrive together are batched. (The
fine-tuned model's turn is in test_openai_client.py, on the job that test trains.)"""

import concurrent.futures
import time

import httpx
import openai
import pytest
from servicekit import TINY, Team


@pytest.fixture
def sdk(serving, service, team: Team) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key=team.key, max_retries=0, timeout=60)


def test_the_openai_package_streams_a_chat_completion(sdk):
    messages = [{"role": "user", "content": "Say hello"}]
    stream = sdk.chat.completions.create(
        model=TINY,
        messages=messages,
        max_tokens=12,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["length"] and chunks[-1].usage.completion_tokens == 12
    assert chunks[0].choices[0].delta.role == "assistant"
    whole = sdk.chat.completions.create(model=TINY, messages=messages, max_tokens=12, seed=3)
    assert whole.choices[0].message.content == text and text  # the same seed, the same text
    assert whole.usage.prompt_tokens == chunks[-1].usage.prompt_tokens > 0

    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model=TINY, messages=messages, max_tokens=5000)
    assert bad.value.param == "max_tokens"
    with pytest.raises(openai.NotFoundError):
        sdk.completions.create(model="replayft/no-such-model", prompt="x")


def test_a_client_that_goes_away_stops_its_generation(service, serving, team: Team):
    before = service.inference_stats()
    body = {"model": TINY, "prompt": "Once", "max_tokens": 1000, "temperature": 0, "stream": True}
    with team.http.stream("POST", "/v1/completions", json=body) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                break  # one chunk, then hang up
    deadline = time.monotonic() + 30
    while (stats := service.inference_stats())["cancelled"] == before["cancelled"]:
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)
    time.sleep(1)  # the generation has had time to notice the flag
    generated = stats["generated_tokens"] - before["generated_tokens"]
    assert generated < 1000, stats  # it stopped long before max_tokens
    assert service.inference_stats()["generated_tokens"] == stats["generated_tokens"]


def test_requests_that_arrive_together_are_batched(service, serving, team: Team):
    body = {"model": TINY, "prompt": "Hello", "max_tokens": 32, "temperature": 0}
    team.ok(team.post("/v1/completions", json=body))  # the model is loaded
    before = service.inference_stats()

    def one(_):
        with httpx.Client(base_url=service.url, headers=team.http.headers, timeout=60) as http:
            return team.ok(http.post("/v1/completions", json=body))["choices"][0]["text"]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        texts = list(pool.map(one, range(6)))
    after = service.inference_stats()
    assert len(set(texts)) == 1  # greedy: a batch gives each what it gets alone
    assert after["requests"] - before["requests"] == 6
    assert after["batches"] - before["batches"] < 6 and after["largest_batch"] > 1, after
