"""The example specs stay valid: they parse, their paths resolve, and the self-contained ones plan."""

from pathlib import Path

import pytest

from replay_engine.evals import load_eval_set
from replay_engine.spec import load_spec
from replay_engine.trainer import prepare

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
# laptop-sized service examples: their data are the files `replayft serve --demo` registers
QUICKSTARTS = [EXAMPLES_DIR / "quickstart.yaml", EXAMPLES_DIR / "sweeps" / "quickstart-sweep.yaml"]
EXAMPLES = sorted(set(EXAMPLES_DIR.glob("*.yaml")) - set(QUICKSTARTS))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses_and_names_its_command(path, shared_data):
    spec = load_spec(path)
    text = path.read_text()
    assert f"replayft train examples/{path.name}" in text
    assert text.startswith("# GPU-sized: "), "say that it is too big for a laptop CPU"
    for data_file in [*spec.training_file, *spec.validation_file, *spec.replay.dataset]:
        assert Path(data_file).is_file(), data_file
    for one in spec.evals:  # shipped in examples/evals, and of the kind the spec says
        assert load_eval_set(one.file, one.kind), one.file


@pytest.mark.parametrize("path", QUICKSTARTS, ids=lambda p: p.name)
def test_quickstarts_use_the_demo_files(path):
    from api.services.registry import DEMO_FILES
    from client.sweeps import load_sweep_file

    command = "sweeps" if path.parent.name == "sweeps" else "jobs"
    relative = path.relative_to(EXAMPLES_DIR.parent)
    assert f"replayft {command} submit {relative} --wait" in path.read_text()
    spec = load_sweep_file(path)[0] if command == "sweeps" else load_spec(path)
    assert spec.training_file and spec.replay.dataset
    for value in [*spec.training_file, *spec.replay.dataset]:
        assert value in DEMO_FILES, f"{value}: not a file `replayft serve --demo` registers"


@pytest.mark.slow
def test_midtraining_example_plans(shared_data, cache_dir, monkeypatch):
    monkeypatch.setenv("REPLAYFT_CACHE_DIR", str(cache_dir))
    plan = prepare(
        load_spec(EXAMPLES[[p.name for p in EXAMPLES].index("midtrain-basque.yaml")])
    ).plan
    summary = plan.summary()
    assert summary["mode"] == "midtrain" and summary["target_epochs"] == pytest.approx(2, abs=0.01)
    assert summary["stages"][1]["target_weight"] == 0.75


@pytest.mark.parametrize(
    "path",
    sorted(set(EXAMPLES_DIR.glob("sweeps/*.yaml")) - set(QUICKSTARTS)),
    ids=lambda p: p.name,
)
def test_sweep_example_parses(path, shared_data):
    from client.sweeps import load_sweep_file

    spec, sweep = load_sweep_file(path)
    assert f"replayft sweeps submit examples/sweeps/{path.name}" in path.read_text()
    assert spec.replay.fraction is None and sweep["replay_fractions"]
    for data_file in [*spec.training_file, *spec.replay.dataset]:
        assert Path(data_file).is_file(), data_file
