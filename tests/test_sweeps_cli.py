"""`replayft sweeps submit`'s reading of a sweep file (no server needed): an engine spec plus a
`sweep:` section, with the fields a sweep sets per member refused in the spec."""

import pytest
import yaml

from client.http import CLIError
from client.sweeps import load_sweep_file


def write(tmp_path, data):
    (tmp_path / "target.jsonl").write_text('{"prompt": "1+1=", "completion": " 2"}\n')
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"model": "replayft/llama-tiny", **data}))
    return path


def test_sweep_section_is_split_off_and_paths_resolve(tmp_path):
    path = write(
        tmp_path,
        {"training_file": "target.jsonl", "sweep": {"replay_fractions": [0, 0.5]}},
    )
    spec, sweep = load_sweep_file(path)
    assert spec.training_file == [str(tmp_path / "target.jsonl")]
    assert sweep == {"replay_fractions": [0, 0.5]}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"replay": {"fraction": 0.25}}, "replay.fraction: set by the sweep"),
        ({"target_subset_fraction": 0.5}, "target_subset_fraction: set by the sweep"),
        ({"replay": {"stage2_duration": 0.5}}, "replay.stage2_duration"),
        ({"sweep": {"replay_fraction": [0.1]}}, "sweep.replay_fraction: unknown"),
        ({"sweep": [0.1]}, "sweep: must be a mapping"),
        ({"n_epochs": -1}, "n_epochs"),
    ],
)
def test_bad_sweep_files_are_refused_naming_the_field(tmp_path, data, message):
    path = write(tmp_path, {"training_file": "target.jsonl", **data})
    with pytest.raises(CLIError) as info:
        load_sweep_file(path)
    assert info.value.exit_code == 2 and message in str(info.value), str(info.value)
