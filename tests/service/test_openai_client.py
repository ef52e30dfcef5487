"""The official `openai` Python package drives the server unchanged (base URL + key)."""

import openai
import pytest
from servicekit import JOB_TIMEOUT_S, TINY, Team


def test_official_openai_client(service, serving, team: Team, target_jsonl, replay_jsonl):
    client = openai.OpenAI(
        base_url=f"{service.url}/v1", api_key=team.key, max_retries=0, timeout=60
    )
    with open(target_jsonl, "rb") as f:
        target = client.files.create(file=f, purpose="fine-tune")
    with open(replay_jsonl, "rb") as f:
        replay = client.files.create(file=f, purpose="replay")  # a ReplayFT purpose
    assert target.id.startswith("file-") and target.object == "file"
    for file_id in (target.id, replay.id):
        team.poll(
            lambda fid=file_id: client.files.retrieve(fid).model_dump(),
            lambda f: f["status"] in ("processed", "error"),
            90,
            f"{file_id} to be validated",
        )
        assert client.files.retrieve(file_id).status == "processed"
    assert {target.id, replay.id} <= {f.id for f in client.files.list()}

    with pytest.raises(openai.BadRequestError) as bad:
        client.fine_tuning.jobs.create(model="replayft/no-such-model", training_file=target.id)
    assert bad.value.param == "model", bad.value.body

    job = client.fine_tuning.jobs.create(
        model=TINY,
        training_file=target.id,
        seed=3,
        suffix="sdk",
        metadata={"client": "openai"},
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "n_epochs": 0.25,  # ~9 steps
                    "batch_size": 4,
                    "seq_len": 64,
                    "eval_sequences": 4,
                }
            },
        },
        extra_body={"replay": {"dataset": replay.id, "fraction": 0.25}},
    )
    team.job_ids.append(job.id)  # cancelled at teardown if something below fails
    assert job.object == "fine_tuning.job" and job.id.startswith("ftjob-")
    assert job.model_extra["replay"]["fraction"] == 0.25, job.model_extra

    job = team.poll(
        lambda: client.fine_tuning.jobs.retrieve(job.id),
        lambda j: j.status in ("succeeded", "failed", "cancelled"),
        JOB_TIMEOUT_S,
        f"{job.id} to finish",
    )
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model and job.trained_tokens and job.trained_tokens > 0
    progress = job.model_extra["progress"]
    assert progress["total_steps"] and progress["step"] == progress["total_steps"], progress
    assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=10)]

    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert events and all(e.object == "fine_tuning.job.event" for e in events)
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and max(c.step_number for c in checkpoints) == progress["step"]
    assert all(c.fine_tuning_job_id == job.id for c in checkpoints)
    assert job.fine_tuned_model in {m.id for m in client.models.list()}

    # the fine-tuned model answers at once, streaming, as does each of its checkpoints
    stream = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "What is 2 + 3?"}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    chunks = [c for c in stream if c.choices]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.model == job.fine_tuned_model for c in chunks)
    first = min(checkpoints, key=lambda c: c.step_number)
    answer = client.completions.create(
        model=first.fine_tuned_model_checkpoint, prompt="Question: 2 + 3?\nAnswer:", max_tokens=4
    )
    assert answer.usage.completion_tokens <= 4 and answer.choices[0].finish_reason
