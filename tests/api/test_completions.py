"""`/v1/chat/completions` and `/v1/completions` with the model-serving process faked at its
interface (`FakeInference`): OpenAI's shapes, streaming as SSE, what is forwarded, which model
ids a team may use (404s, the job still running), and request validation (400 naming the field).
The serving process itself is tested in tests/test_inference_server.py, and with the openai SDK
in tests/service/."""

import json

import pytest
from appkit import set_job, tiny_job
from servicekit import TINY, assert_error

from control.inference import HttpInference, InferenceError

CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
HI = [{"role": "user", "content": "Hi"}]


def sse(resp) -> list:
    """The `data:` payloads of an SSE body, JSON-decoded except the final [DONE]."""
    assert resp.headers["content-type"].startswith("text/event-stream"), resp.headers
    events = [line[len("data: ") :] for line in resp.text.split("\n\n") if line]
    assert events[-1] == "[DONE]", events[-3:]
    return [json.loads(e) for e in events[:-1]]


def test_a_chat_completion_in_openais_shape(team, inference):
    body = {
        "model": TINY,
        "messages": [{"role": "developer", "content": "Be brief."}, *HI],
        "stop": "\n",
        "seed": 4,
        "temperature": 0,
    }
    out = team.ok(team.post(CHAT, json=body))
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    assert out["model"] == TINY
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello world", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    [sent] = inference.requests
    assert sent == {
        "model": TINY,  # a preset is loaded by name
        "gguf_file": None,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": None,  # the serving process gives it what the context leaves
        "temperature": 0.0,
        "top_p": 1.0,
        "stop": ["\n"],
        "seed": 4,
        "n": 1,
        "logprobs": None,
    }


def test_a_streamed_chat_completion_is_openais_chunks_then_done(team, inference):
    body = {"model": TINY, "messages": HI, "stream": True, "n": 2}
    body |= {"stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 1}
    chunks = sse(team.post(CHAT, json=body))
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    for index in (0, 1):
        mine = [
            c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == index
        ]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert "".join(c["delta"].get("content", "") for c in mine) == "Hello world"
        assert [c["finish_reason"] for c in mine] == [None, None, None, "stop"]
        top = mine[1]["logprobs"]["content"][0]
        assert top["token"] == "Hello" and top["top_logprobs"][0]["logprob"] == -0.5
        assert top["bytes"] == list(b"Hello")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert inference.requests[0]["logprobs"] == 1 and inference.closed == 1


def test_a_text_completion_with_several_prompts(team, inference):
    body = {"model": TINY, "prompt": ["a", "b"], "n": 2, "logprobs": 0, "max_tokens": 5}
    out = team.ok(team.post(TEXT, json=body))
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    assert {c["text"] for c in out["choices"]} == {"Hello world"}
    assert out["choices"][0]["logprobs"] == {
        "tokens": ["Hello", " world"],
        "token_logprobs": [-0.5, -0.5],
        "top_logprobs": [{"Hello": -0.5}, {" world": -0.5}],
        "text_offset": [0, 5],
    }
    assert out["usage"] == {"prompt_tokens": 6, "completion_tokens": 8, "total_tokens": 14}
    assert [r["prompt"] for r in inference.requests] == ["a", "b"]
    assert {r["max_tokens"] for r in inference.requests} == {5}

    chunks = sse(team.post(TEXT, json={"model": TINY, "prompt": "a", "stream": True}))
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Hello world"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert inference.requests[-1]["max_tokens"] == 16  # OpenAI's default for completions


def test_unknown_and_other_teams_models_are_404(team, other_team, team_files, inference):
    err = assert_error(team.post(CHAT, json={"model": "replayft/nope", "messages": HI}), 404)
    assert err["param"] == "model" and err["code"] == "model_not_found"
    job = team.create_job(tiny_job(team_files[0]))["id"]
    name = f"ft:{TINY}:{team.name}::{job}"
    set_job(job, status="running")
    for model in (name, f"{name}:ckpt-step-2"):
        err = assert_error(team.post(TEXT, json={"model": model, "prompt": "x"}), 404, "model")
        assert f"job {job} is still running" in err["message"] and err["code"] == "model_not_ready"
        # another team learns nothing about the job
        err = assert_error(other_team.post(TEXT, json={"model": model, "prompt": "x"}), 404)
        assert job not in err["message"].replace(model, "") and err["code"] == "model_not_found"
    set_job(job, status="failed")
    err = assert_error(team.post(TEXT, json={"model": name, "prompt": "x"}), 404, "model")
    assert "ended failed" in err["message"]
    assert inference.requests == []


def test_a_fine_tuned_model_and_its_checkpoints_are_served_from_their_folders(
    deployment, team, other_team, team_files, inference
):
    from appkit import add_rows

    from control.db.models import Checkpoint

    job = team.create_job(tiny_job(team_files[0]))["id"]
    name = f"ft:{TINY}:{team.name}::{job}"
    folders = {}
    for step in (2, 4):
        folders[step] = deployment.data_dir / "jobs" / job / "checkpoints" / f"step-{step}"
        folders[step].mkdir(parents=True)
        ckpt = f"{name}:ckpt-step-{step}"
        add_rows(
            Checkpoint(
                job_id=job,
                step_number=step,
                path=str(folders[step]),
                fine_tuned_model_checkpoint=ckpt,
            )
        )
    # a checkpoint is usable while its job still runs
    set_job(job, status="running")
    team.ok(team.post(TEXT, json={"model": f"{name}:ckpt-step-2", "prompt": "x"}))
    assert inference.requests[-1]["model"] == str(folders[2])
    set_job(job, status="succeeded", fine_tuned_model=name, final_checkpoint=str(folders[4]))
    out = team.ok(team.post(CHAT, json={"model": name, "messages": HI}))
    assert out["model"] == name and inference.requests[-1]["model"] == str(folders[4])
    assert_error(other_team.post(CHAT, json={"model": name, "messages": HI}), 404, "model")
    assert_error(other_team.post(TEXT, json={"model": f"{name}:ckpt-step-2", "prompt": "x"}), 404)


def test_what_the_serving_process_refuses_is_a_400_naming_the_field(team, inference):
    message = "max_tokens is 5000, but the prompt's 3 tokens leave 1021 of this model's context"
    inference.refusal = InferenceError(400, message, "max_tokens")
    body = {"model": TINY, "messages": HI, "max_tokens": 5000}
    err = assert_error(team.post(CHAT, json=body), 400, "max_tokens")
    assert err["message"] == message
    body = {"model": TINY, "messages": HI, "max_completion_tokens": 5000, "stream": True}
    err = assert_error(team.post(CHAT, json=body), 400, "max_completion_tokens")
    assert err["message"].startswith("max_completion_tokens is 5000")


def test_no_serving_process_is_a_503_saying_how_to_start_one(deployment, team):
    from servicekit import free_port

    from api.deps import get_inference

    deployment.app.dependency_overrides[get_inference] = lambda: HttpInference(
        f"http://127.0.0.1:{free_port()}"
    )
    try:
        resp = team.post(CHAT, json={"model": TINY, "messages": HI})
    finally:
        deployment.app.dependency_overrides.pop(get_inference)
    err = assert_error(resp, 503)
    assert "replayft inference" in err["message"] and resp.headers["Retry-After"]


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        (CHAT, {"temperature": 2.5}, "temperature"),
        (CHAT, {"top_p": 0}, "top_p"),
        (CHAT, {"n": 0}, "n"),
        (CHAT, {"max_tokens": 0}, "max_tokens"),
        (CHAT, {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        (CHAT, {"top_logprobs": 2}, None),  # needs logprobs: true
        (CHAT, {"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        (CHAT, {"messages": []}, "messages"),
        (CHAT, {"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
        (CHAT, {"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        (CHAT, {"tools": [{"type": "function"}]}, "tools"),
        (CHAT, {"presence_penalty": 0.5}, "presence_penalty"),
        (TEXT, {"logprobs": 6}, "logprobs"),
        (TEXT, {"echo": True}, "echo"),
        (TEXT, {"best_of": 3}, "best_of"),
        (TEXT, {"prompt": []}, "prompt"),
        (TEXT, {"model": None}, "model"),
    ],
)
def test_bad_requests_are_400_naming_the_field(team, inference, path, extra, param):
    body = {"model": TINY, **({"messages": HI} if path == CHAT else {"prompt": "x"}), **extra}
    err = assert_error(team.post(path, json=body), 400, param)
    assert err["type"] == "invalid_request_error"
    assert inference.requests == []


def test_completions_need_a_key(client, inference):
    assert_error(client.post(CHAT, json={"model": TINY, "messages": HI}), 401)
    assert_error(client.post(TEXT, json={"model": TINY, "prompt": "x"}), 401)
