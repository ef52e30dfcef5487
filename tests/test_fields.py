"""The declared mapping between API request fields and engine spec fields (control.fields): every
spec field has a home, every request path it names exists, and a spec's hyperparameters survive
the trip the command line and the server make (spec -> request -> spec)."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from api.schemas.jobs import JobCreate
from client.submit import build_submission
from control import fields
from replay_engine.spec import JobSpec, parse_spec


def _models_in(annotation: typing.Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def request_has(path: str) -> bool:
    """Whether JobCreate has the dotted field `path` (through optional and union types)."""
    models: list[type[BaseModel]] = [JobCreate]
    for part in path.split("."):
        found = [m.model_fields[part] for m in models if part in m.model_fields]
        if not found:
            return False
        models = [m for info in found for m in _models_in(info.annotation)]
    return True


def spec_paths(model: type[BaseModel] = JobSpec, prefix: str = "") -> list[str]:
    """Every field path of the spec, nested models' fields included."""
    paths = []
    for name, info in model.model_fields.items():
        paths.append(prefix + name)
        for nested in _models_in(info.annotation):
            paths.extend(spec_paths(nested, f"{prefix}{name}."))
    return paths


def test_every_spec_field_has_exactly_one_home():
    homes = [set(fields.HYPERPARAMETERS), set(fields.REQUEST_FIELDS), set(fields.SERVER_FIELDS)]
    for name in JobSpec.model_fields:
        assert sum(name in home for home in homes) == 1, (
            f"spec field {name!r} must be in exactly one of control.fields' HYPERPARAMETERS, "
            f"REQUEST_FIELDS or SERVER_FIELDS"
        )
    named = set().union(*homes)
    assert named <= set(JobSpec.model_fields), named - set(JobSpec.model_fields)


@pytest.mark.parametrize("path", spec_paths())
def test_every_spec_path_maps_to_a_request_field(path):
    head = path.split(".")[0]
    if head in fields.SERVER_FIELDS:
        return
    param = fields.api_param(path)
    if path in ("method", "method.lora"):  # the adapter as a whole (it is flat in the request)
        assert param == "hyperparameters.adapter"
        return
    assert request_has(param), f"spec field {path} maps to {param}, which the request lacks"
    if head in fields.HYPERPARAMETERS:
        assert param == f"hyperparameters.{path}"
        method_form = f"method.supervised.{param}"
        assert request_has(method_form), f"{method_form} missing from the method form"


def test_request_bounds_are_the_specs():
    """The API's schema shows the engine's bounds (a client sees them in /openapi.json)."""
    schema = JobCreate.model_json_schema()
    hyper = schema["$defs"]["Hyperparameters"]["properties"]
    assert {"exclusiveMinimum": 0, "maximum": 10_000, "type": "number"} in hyper["n_epochs"][
        "anyOf"
    ]
    replay = schema["$defs"]["Replay"]["properties"]["fraction"]["anyOf"][0]
    assert (replay["minimum"], replay["exclusiveMaximum"]) == (0, 1)


def test_a_specs_hyperparameters_survive_the_trip_through_a_request(tmp_path):
    """What `replayft jobs submit` sends is what the server puts back into the spec: every
    hyperparameter set to a value other than its default comes back unchanged."""
    data = tmp_path / "t.jsonl"
    data.write_text('{"text": "x"}\n')
    changed = dict(
        n_epochs=2.5,
        batch_size=16,
        learning_rate=1e-4,
        seq_len=256,
        packing_attention="causal",
        total_steps=40,
        optimizer_state="carry",
        micro_batch_size=4,
        eval_interval=5,
        checkpoint_interval=10,
        keep_checkpoints=3,
        eval_sequences=8,
        val_fraction=0.1,
        target_subset_fraction=0.5,
        weight_decay=0.01,
        adam_betas=[0.8, 0.9],
        adam_eps=1e-6,
        grad_clip=0.5,
        activation_checkpointing=True,
        compile=True,
        lr_scheduler={"type": "wsd", "warmup_ratio": 0.2, "decay_shape": "cosine"},
        distributed={"strategy": "fsdp", "gpus_per_node": 2},
    )
    assert set(changed) == set(fields.HYPERPARAMETERS), "give the new hyperparameter a value here"
    spec = parse_spec({"model": "replayft/llama-tiny", "training_file": [str(data)], **changed})
    body = build_submission(spec).body
    request = JobCreate.model_validate({**body, "training_file": "file-x"})
    sent = request.method.supervised.hyperparameters.model_dump(exclude_none=True)
    back = parse_spec({"model": "replayft/llama-tiny", "training_file": [str(data)], **sent})
    for name in fields.HYPERPARAMETERS:
        assert getattr(back, name) == getattr(spec, name), name


def test_a_stored_files_error_names_the_request_field_that_named_it():
    from control.db.models import Job
    from control.fields import file_field

    job = Job(
        training_file="file-aaa",
        validation_file="file-bbb",
        replay_request={"dataset": ["file-ccc", "file-ddd"], "validation_dataset": "file-eee"},
        evals_request=[{"name": "x", "file": "file-fff"}],
    )
    where = {
        "/data/files/file-aaa.jsonl": "training_file",
        "/data/files/file-bbb": "validation_file",
        "/data/files/file-ddd.parquet": "replay.dataset",
        "/data/files/file-eee.jsonl": "replay.validation_dataset",
        "/data/files/file-fff.jsonl": "evals[0].file",
        "/data/corpora/c4/shard-0.parquet": None,  # a registered corpus: no file id
    }
    assert {path: file_field(job, path) for path in where} == where
