"""LoRA through the HTTP API (`hyperparameters.adapter`, a ReplayFT extra) on PostgreSQL + Redis
with a real Celery worker: both exports end in a downloadable checkpoint of the promised shape,
an adapter-only job's model is the base of a next job, and a bad adapter field is a 400 naming
it, with no job created."""

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from servicekit import JOBS, TINY, Team, assert_error, train_records
from transformers import AutoModelForCausalLM

from replay_engine.models import load_model

IDS = torch.tensor([[1, 2, 3, 4, 5, 6]])


def lora_job(team: Team, training_file: str, **adapter) -> dict:
    body = team.tiny_job(training_file, n_epochs=0.2, seed=7)  # ~5 steps
    body["method"]["supervised"]["hyperparameters"]["adapter"] = {"type": "lora", **adapter}
    return body


def final_checkpoint(team: Team, job: dict, into: Path) -> Path:
    """Download the job's last checkpoint (tar.gz) and return its extracted folder."""
    final = team.checkpoints(job["id"])[-1]
    assert final["step_number"] == job["progress"]["total_steps"], final
    download = team.get(f"{JOBS}/{job['id']}/checkpoints/{final['id']}/download")
    assert download.status_code == 200, download.text[:500]
    with tarfile.open(fileobj=io.BytesIO(download.content), mode="r:gz") as tar:
        tar.extractall(into, filter="data")
    (folder,) = into.iterdir()
    return folder


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


def base_model():
    """The job's base: the preset initialised from the job's seed, as the worker built it."""
    return load_model(TINY, seed=7, device=torch.device("cpu"))


@pytest.mark.parametrize("export", ["merged", "adapter"])
def test_lora_job_checkpoint_is_what_its_export_says(team: Team, team_files, tmp_path, export):
    target, _ = team_files
    job = team.create_job(lora_job(team, target, r=4, alpha=8, export=export))
    expected = {
        "type": "lora",
        "r": 4,
        "alpha": 8.0,
        "dropout": 0.0,
        "target_modules": "all-linear",
        "export": export,
    }
    assert job["hyperparameters"]["adapter"] == expected, job["hyperparameters"]
    assert job["method"]["supervised"]["hyperparameters"]["adapter"] == expected, job["method"]
    job = team.wait_job(job["id"], "succeeded")
    assert job["hyperparameters"]["adapter"] == expected, job["hyperparameters"]

    folder = final_checkpoint(team, job, tmp_path / "ckpt")
    base_logits = logits(base_model())
    if export == "merged":
        # a plain HF model folder with the adapter folded in, plus the adapter for resuming
        merged = AutoModelForCausalLM.from_pretrained(folder)
        assert not any("lora_" in name for name, _ in merged.named_parameters())
        with_adapter = PeftModel.from_pretrained(base_model(), folder / "adapter")
        assert torch.allclose(logits(merged), logits(with_adapter), atol=1e-4)
        trained = logits(merged)
    else:
        # the peft adapter alone: no full model folder, loads onto the base
        assert not (folder / "config.json").exists(), sorted(p.name for p in folder.iterdir())
        assert (folder / "adapter_model.safetensors").is_file(), list(folder.iterdir())
        config = json.loads((folder / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"]) == (4, 8.0), config
        trained = logits(PeftModel.from_pretrained(base_model(), folder))
    assert torch.isfinite(trained).all()
    assert (trained - base_logits).abs().max() > 1e-3, "the adapter did not change the model"


def test_adapter_only_model_is_the_base_of_a_next_job(team: Team, team_files):
    target, _ = team_files
    first = team.create_job(lora_job(team, target, r=4, alpha=8, export="adapter"))
    first = team.wait_job(first["id"], "succeeded")
    model = first["fine_tuned_model"]
    model_ids = [m["id"] for m in team.ok(team.get("/v1/models"))["data"]]
    assert model in model_ids, model_ids

    # a full fine-tune of it: same seed, data and eval set as the first job
    body = team.tiny_job(target, n_epochs=0.2, seed=7, model=model)
    second = team.wait_job(team.create_job(body)["id"], "succeeded")
    assert second["model"] == model, second
    assert second["fine_tuned_model"].startswith(f"ft:{TINY}:"), second["fine_tuned_model"]

    # it starts from the first job's final model, adapter included: its step-0 eval is the first
    # job's last eval (taken on the final checkpoint), not the bare base's
    def evals(job):
        return {
            r["step"]: r["val_loss_target"]
            for r in team.metrics(job["id"])
            if r.get("val_loss_target") is not None
        }

    first_evals, second_evals = evals(first), evals(second)
    last = first["progress"]["total_steps"]
    assert second_evals[0] == pytest.approx(first_evals[last], rel=1e-5), (
        first_evals,
        second_evals,
    )
    assert abs(first_evals[0] - first_evals[last]) > 1e-3, first_evals
    assert len(train_records(team.metrics(second["id"]))) == second["progress"]["total_steps"]
    model_ids = [m["id"] for m in team.ok(team.get("/v1/models"))["data"]]
    assert {model, second["fine_tuned_model"]} <= set(model_ids), model_ids


@pytest.mark.parametrize(
    ("adapter", "param"),
    [
        # request schema: unknown, missing and mistyped keys, at the path the client used
        ({"type": "lora", "rank": 4}, "method.supervised.hyperparameters.adapter.rank"),
        ({"r": 4}, "method.supervised.hyperparameters.adapter.type"),
        ({"type": "dora"}, "method.supervised.hyperparameters.adapter.type"),
        ({"type": "lora", "export": "gguf"}, "method.supervised.hyperparameters.adapter.export"),
        # the spec's own bounds, which the request schema carries
        ({"type": "lora", "r": 0}, "method.supervised.hyperparameters.adapter.r"),
        ({"type": "lora", "dropout": 1.5}, "method.supervised.hyperparameters.adapter.dropout"),
        # the engine's checks across fields (method.export, ...) mapped back to the API field
        ({"type": "qlora"}, "hyperparameters.adapter.export"),
        # checked against the model's layers (its config on the meta device) before queueing
        (
            {"type": "lora", "target_modules": ["q_proj", "qkv"]},
            "hyperparameters.adapter.target_modules",
        ),
    ],
)
def test_bad_adapter_field_is_a_400_naming_it(team: Team, team_files, adapter, param):
    target, _ = team_files
    body = team.tiny_job(target, n_epochs=0.2)
    body["method"]["supervised"]["hyperparameters"]["adapter"] = adapter
    assert_error(team.post(JOBS, json=body), 400, param)
    assert team.list_all(JOBS) == []


def test_adapter_in_the_deprecated_form_and_with_carried_optimizer_state(team: Team, team_files):
    target, _ = team_files
    body = team.tiny_job(target, n_epochs=0.2)
    del body["method"]
    body["hyperparameters"] = {"adapter": {"type": "lora", "alpha": 8, "bogus": 1}}
    assert_error(team.post(JOBS, json=body), 400, "hyperparameters.adapter.bogus")
    body = lora_job(team, target)
    body["method"]["supervised"]["hyperparameters"]["optimizer_state"] = "carry"
    err = assert_error(team.post(JOBS, json=body), 400, "hyperparameters.optimizer_state")
    assert "LoRA" in err["message"], err
    assert team.list_all(JOBS) == []
