"""The one declared mapping between the API's job request and the engine's `JobSpec`.

Every spec field is in exactly one of these:
- `HYPERPARAMETERS`: set as `hyperparameters.<name>` (or `method.supervised.hyperparameters`),
  under the spec's own name, with the spec's own type, bounds and description: the API's
  `Hyperparameters` schema is built from this list (api.schemas.jobs), the server copies them into
  the spec (api.services.jobs.build_spec), shows them on the job, and the command line maps a YAML
  spec onto a request (client.submit) by the same list;
- `REQUEST_FIELDS`: set elsewhere in the request (the path a client writes);
- `SERVER_FIELDS`: chosen by the server for every job, never by a request.
tests/test_fields.py fails when a spec field is in none of them, or names a request path that the
API's schema does not have. Adding a hyperparameter: the field in `replay_engine/spec.py`, its name
here, and a test of what it does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from control.db.models import Job

# OpenAI's hyperparameters, where "auto" means the engine's default
AUTO = ("n_epochs", "batch_size")

HYPERPARAMETERS = (
    "n_epochs",
    "batch_size",
    "learning_rate",
    "lr_scheduler",
    "seq_len",
    "packing_attention",
    "total_steps",
    "optimizer_state",
    "micro_batch_size",
    "eval_interval",
    "checkpoint_interval",
    "keep_checkpoints",
    "eval_sequences",
    "val_fraction",
    "target_subset_fraction",
    "weight_decay",
    "adam_betas",
    "adam_eps",
    "grad_clip",
    "activation_checkpointing",
    "compile",
    "distributed",
)

# spec field -> the request field that sets it
REQUEST_FIELDS = {
    "model": "model",
    "gguf_file": "model",  # a registered model (`replayft models add --gguf-file`) names its file
    "training_file": "training_file",
    "validation_file": "validation_file",
    "seed": "seed",
    "replay": "replay",  # replay.<name> -> replay.<name>
    "evals": "evals",  # evals[i].<name> -> evals[i].<name>, its file an `evals` file id
    "method": "hyperparameters.adapter",  # flat: method.lora.r -> hyperparameters.adapter.r
}

# spec field -> why the server decides it
SERVER_FIELDS = {
    "cache_dir": "the worker's tokenized-data cache",
    "device": "the worker's device",
    "peak_flops": "the worker's GPU (for the mfu metric)",
}


def api_param(spec_path: str) -> str:
    """Engine field path (as a SpecError names it) -> the request field a client sets."""
    parts = spec_path.split(".")
    head = parts[0]
    if head in HYPERPARAMETERS:
        return f"hyperparameters.{spec_path}"
    if head == "method":  # method.lora.r -> hyperparameters.adapter.r
        rest = parts[2:] if parts[1:2] == ["lora"] else parts[1:]
        return ".".join(["hyperparameters", "adapter", *rest])
    if head in REQUEST_FIELDS and head != "replay":
        return ".".join([REQUEST_FIELDS[head], *parts[1:]])
    return spec_path


def job_files(job: Job) -> list[tuple[str, str]]:
    """(request field, file id) of every uploaded file the job's request names (not corpus
    names): what the job needs until it ends."""
    replay = job.replay_request or {}
    dataset = replay.get("dataset") or []
    named = [("training_file", job.training_file), ("validation_file", job.validation_file)]
    named += [("replay.dataset", d) for d in ([dataset] if isinstance(dataset, str) else dataset)]
    named.append(("replay.validation_dataset", replay.get("validation_dataset")))
    named += [(f"evals[{i}].file", e.get("file")) for i, e in enumerate(job.evals_request or [])]
    return [(param, f) for param, f in named if f and f.startswith("file-")]


def file_field(job: Job, path: str) -> str | None:
    """The request field that names the stored file at `path` (its name is the file id and a
    suffix), for an error about its data; None for data the request does not name by file id
    (a registered corpus)."""
    from pathlib import Path

    stored_id = Path(path).name.split(".")[0]
    return next((param for param, file_id in job_files(job) if file_id == stored_id), None)
