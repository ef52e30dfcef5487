"""The job spec: YAML loading and validation messages that name the field."""

import pytest

from replay_engine.spec import JobSpec, SpecError, load_spec, parse_spec

BASE = {"model": "replayft/llama-tiny", "training_file": "t.jsonl", "replay": {"dataset": "g.txt"}}


def errors_of(data: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return dict(info.value.errors)


def test_minimal_spec_defaults():
    spec = parse_spec({"model": "replayft/llama-tiny", "training_file": "t.jsonl"})
    assert spec.training_file == ["t.jsonl"]
    assert spec.mode == "finetune"
    assert spec.lr_scheduler.type == "wsd"
    assert spec.adam_betas == (0.9, 0.95)


@pytest.mark.parametrize("r", [1.0, -0.1, 1.5])
def test_replay_fraction_outside_range_names_the_field(r):
    errors = errors_of({**BASE, "replay": {"dataset": "g.txt", "fraction": r}})
    assert "replay.fraction" in errors and "[0, 1)" in errors["replay.fraction"]


def test_all_problems_reported_at_once():
    errors = errors_of(
        {**BASE, "batch_size": 0, "learning_rate": -1, "lr_scheduler": {"warmup_ratio": 2}}
    )
    assert {"batch_size", "learning_rate", "lr_scheduler.warmup_ratio"} <= set(errors)


def test_unknown_field_is_an_error():
    errors = errors_of({**BASE, "n_epoch": 3})
    assert "n_epoch" in errors


def test_type_errors_name_nested_field():
    errors = errors_of({**BASE, "replay": {"dataset": "g.txt", "fraction": "lots"}})
    assert "replay.fraction" in errors


def test_no_data_and_pretraining_needs_steps():
    errors = errors_of({"model": "replayft/llama-tiny"})
    assert "training_file" in errors and "total_steps" in errors


def test_replay_without_dataset():
    errors = errors_of({"model": "m", "training_file": "t.jsonl", "replay": {"fraction": 0.25}})
    assert "replay.dataset" in errors


def test_allocation_below_one_with_full_duration():
    errors = errors_of(
        {**BASE, "replay": {"dataset": "g", "target_stage2_allocation": 0.5, "stage2_duration": 1}}
    )
    assert "replay.target_stage2_allocation" in errors


def test_micro_batch_must_divide():
    errors = errors_of({**BASE, "batch_size": 8, "micro_batch_size": 3})
    assert "micro_batch_size" in errors
    assert parse_spec({**BASE, "batch_size": 8, "micro_batch_size": 4}).grad_accum_steps == 2


def test_load_yaml_resolves_relative_paths(tmp_path):
    (tmp_path / "target.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "spec.yaml").write_text(
        "model: replayft/llama-tiny\ntraining_file: target.jsonl\nreplay:\n  dataset: missing.txt\n"
    )
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.training_file == [str(tmp_path / "target.jsonl")]
    assert spec.replay.dataset == ["missing.txt"]  # left alone: it does not exist there


def test_bad_yaml(tmp_path):
    (tmp_path / "spec.yaml").write_text("model: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "spec.yaml")
    assert info.value.param == "spec"


def test_modes():
    assert JobSpec(model="m", replay={"dataset": "g"}, total_steps=5).mode == "pretrain"
    mid = JobSpec(model="m", training_file="t", replay={"dataset": "g", "stage2_duration": 0.3})
    assert mid.mode == "midtrain"


def test_set_overrides_fields_nested_ones_and_says_what_is_wrong():
    from replay_engine.spec import apply_overrides

    data = {"model": "m", "replay": {"fraction": 0.25}, "n_epochs": 4}
    got = apply_overrides(
        data, ["n_epochs=0.1", "replay.fraction=0.5", "lr_scheduler={type: cosine}"]
    )
    assert got == {
        "model": "m",
        "replay": {"fraction": 0.5},
        "n_epochs": 0.1,
        "lr_scheduler": {"type": "cosine"},
    }
    assert data["replay"]["fraction"] == 0.25 and data["n_epochs"] == 4  # the input is untouched
    for bad, path in (("n_epochs", "--set"), ("=1", "--set"), ("n_epochs.x=1", "n_epochs.x")):
        with pytest.raises(SpecError) as info:
            apply_overrides(data, [bad])
        assert info.value.errors[0][0] == path, info.value.errors
