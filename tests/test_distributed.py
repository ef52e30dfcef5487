"""Multi-process training on CPU: 2 gloo ranks launched by torchrun against 1 in-process run.

The core claims: the same global batch gives the same losses on 1 or 2 processes (DDP and FSDP2),
a checkpoint written by 2 sharded ranks resumes in 1 process (and back), and the launcher drives
the caller's hooks (metrics, checkpoints, stop) from rank 0 exactly as an in-process run does.
"""

import json
import shutil
import socket
import threading
import time

import pytest
import torch

from replay_engine.launcher import (
    NodesMissing,
    RankFailed,
    Rendezvous,
    join,
    launch,
    launch_command,
)
from replay_engine.spec import SpecError, parse_spec
from replay_engine.trainer import train

pytestmark = pytest.mark.slow  # every test here trains or launches torchrun


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared_data, gsm8k_file):
    root = tmp_path_factory.mktemp("dist-data")
    generic = root / "generic.jsonl"
    lines = (shared_data / "c4_sample" / "c4_demo.jsonl").read_text().splitlines()[:60]
    generic.write_text("\n".join(lines) + "\n")
    target = gsm8k_file(root / "target.jsonl", n=40)
    return {"target": str(target), "generic": str(generic), "cache": str(root / "cache")}


def make_spec(data, **overrides):
    spec = {
        "model": "replayft/llama-tiny",
        "training_file": data["target"],
        "replay": {"dataset": data["generic"], "fraction": 0.25},
        "n_epochs": 0.2,  # 5 steps
        "batch_size": 8,
        "micro_batch_size": 2,  # 2 micro-batches per rank on 2 ranks: accumulation + no_sync
        "seq_len": 64,
        "learning_rate": 1e-3,
        "eval_sequences": 8,
        "checkpoint_interval": 2,
        "keep_checkpoints": 5,
        "device": "cpu",
        "cache_dir": data["cache"],
    }
    spec.update(overrides)
    return parse_spec(spec)


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a, b, *, rel=1e-5):
    """Same records; losses equal to float noise. The grad norm is a sum of ~2M squares added
    in another order (per shard under FSDP), so it gets a looser bound."""
    ra, rb = records(a), records(b)
    assert [(r["type"], r["step"]) for r in ra] == [(r["type"], r["step"]) for r in rb]
    for x, y in zip(ra, rb, strict=True):
        for key in ("train_loss", "train_loss_target", "train_loss_generic"):
            if x.get(key) is not None:
                assert y[key] == pytest.approx(x[key], rel=rel), (key, x["step"])
        for key in ("val_loss_target", "val_loss_generic"):
            if x.get(key) is not None:
                assert y[key] == pytest.approx(x[key], rel=rel), (key, x["step"])
        if "grad_norm" in x:
            assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-3)
            assert y["target_sequences"] == x["target_sequences"]


class Recorder:
    def __init__(self, stop_at=None):
        self.metrics, self.checkpoints, self.stop_at = [], [], stop_at

    def on_metrics(self, record):
        self.metrics.append(record)

    def on_checkpoint(self, path, step):
        self.checkpoints.append((step, path.name, path.is_dir()))

    def should_stop(self, step):
        return self.stop_at is not None and step >= self.stop_at


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    train(make_spec(data), out)
    return out


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(strategy, data, one_process, tmp_path):
    spec = make_spec(data, distributed={"strategy": strategy, "gpus_per_node": 2})
    hooks = Recorder()
    result = launch(spec, tmp_path / "run", hooks)

    assert not result.stopped and result.steps_completed == result.total_steps == 5
    assert_same_run(one_process, tmp_path / "run")
    # rank 0 alone reported, every record once and in order, checkpoints after their metrics
    assert hooks.metrics == records(tmp_path / "run")
    assert [s for s, _, _ in hooks.checkpoints] == [2, 4, 5]
    assert all(exists for _, _, exists in hooks.checkpoints)
    # the final weights are the same model as the one-process run's
    a = torch.load(one_process / "checkpoints/step-5/optimizer.pt", weights_only=True)
    b = torch.load(tmp_path / "run/checkpoints/step-5/optimizer.pt", weights_only=True)
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for i, state in a["state"].items():
        torch.testing.assert_close(
            b["state"][i]["exp_avg_sq"], state["exp_avg_sq"], rtol=1e-3, atol=1e-9
        )


def test_sharded_checkpoint_resumes_in_one_process_and_back(data, one_process, tmp_path):
    two = make_spec(data, distributed={"strategy": "fsdp", "gpus_per_node": 2})
    # 2 FSDP ranks are asked to stop at once (they stop after their first step or so, having
    # checkpointed it), then 1 process finishes the run
    result = launch(two, tmp_path / "a", Recorder(stop_at=0))
    assert result.stopped and 1 <= result.steps_completed < 5
    train(make_spec(data), tmp_path / "a")
    assert_same_run(one_process, tmp_path / "a")

    # and the other way: 1 process wrote step 2, 2 FSDP ranks load it (set_optimizer_state_dict)
    (tmp_path / "b/checkpoints").mkdir(parents=True)
    shutil.copytree(one_process / "checkpoints/step-2", tmp_path / "b/checkpoints/step-2")
    # the whole metrics file: the resumed run cuts it back to step 2 itself
    shutil.copy(one_process / "metrics.jsonl", tmp_path / "b/metrics.jsonl")
    launch(two, tmp_path / "b")
    assert_same_run(one_process, tmp_path / "b")


def test_rank_errors_come_back_readable(data, tmp_path):
    spec = make_spec(data, distributed={"gpus_per_node": 2}, learning_rate=1e6, grad_clip=0)
    from replay_engine.trainer import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="diverged at step"):
        launch(spec, tmp_path / "run")


def test_spec_checks_the_split_over_processes(data):
    with pytest.raises(SpecError) as err:
        make_spec(data, batch_size=6, micro_batch_size=None, distributed={"gpus_per_node": 4})
    assert err.value.param == "batch_size"
    with pytest.raises(SpecError) as err:
        make_spec(data, batch_size=8, micro_batch_size=4, distributed={"gpus_per_node": 4})
    assert err.value.param == "micro_batch_size"
    with pytest.raises(SpecError) as err:
        make_spec(data, distributed={"strategy": "zero3"})
    assert err.value.param == "distributed.strategy"


def test_launch_command(tmp_path):
    cmd = launch_command(tmp_path / "s.json", tmp_path, tmp_path / "c", gpus_per_node=8)
    assert cmd[1:4] == ["-m", "replay_engine.launcher", "agent"]
    assert "--nproc-per-node=8" in cmd and "--standalone" in cmd
    assert cmd[-5:-3] == ["replay_engine.launcher", "run"]
    with pytest.raises(SpecError) as err:  # several machines need to know where they meet
        launch_command(tmp_path / "s.json", tmp_path, tmp_path / "c", gpus_per_node=8, nodes=2)
    assert err.value.param == "distributed.nodes"
    meet = Rendezvous(node_rank=1, master="node0.example:29400", timeout=30)
    cmd = launch_command(
        tmp_path / "s.json", tmp_path, tmp_path / "c", gpus_per_node=8, nodes=2, rendezvous=meet
    )
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=node0.example"} <= set(cmd)
    assert {"--master-port=29400", "--rdzv-conf=timeout=30"} <= set(cmd)
    assert "--standalone" not in cmd


def free_master() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_two_machines_match_one(data, one_process, tmp_path):
    """Two 'machines' (two torchrun agents meeting at a static rendezvous, one process each)
    train the same run as one process; node 0 alone reports, node 1 just trains."""
    spec = make_spec(data, distributed={"gpus_per_node": 1, "nodes": 2})
    out, master = tmp_path / "run", free_master()
    hooks = Recorder()
    joined: dict[str, int] = {}

    def second_machine():
        time.sleep(2)  # the leader starts first in the worker too; order must not matter
        joined["rc"] = join(spec, out, Rendezvous(1, master, 120))

    node1 = threading.Thread(target=second_machine)
    node1.start()
    result = launch(spec, out, hooks, rendezvous=Rendezvous(0, master, 120))
    node1.join(timeout=120)

    assert joined == {"rc": 0}
    assert not result.stopped and result.steps_completed == result.total_steps == 5
    assert_same_run(one_process, out)
    assert hooks.metrics == records(out)
    assert [s for s, _, _ in hooks.checkpoints] == [2, 4, 5]


def test_a_machine_that_never_comes_fails_the_launch_readably(data, tmp_path):
    spec = make_spec(data, distributed={"gpus_per_node": 1, "nodes": 2})
    began = time.monotonic()
    with pytest.raises(NodesMissing, match="did not all join within 3s"):
        launch(spec, tmp_path / "run", rendezvous=Rendezvous(0, free_master(), 3))
    assert time.monotonic() - began < 60
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_stop_while_waiting_for_machines_ends_at_once(data, tmp_path):
    spec = make_spec(data, distributed={"gpus_per_node": 1, "nodes": 2})
    hooks = Recorder(stop_at=0)
    began = time.monotonic()
    result = launch(spec, tmp_path / "run", hooks, rendezvous=Rendezvous(0, free_master(), 300))
    assert result.stopped and result.steps_completed == 0 and result.final_checkpoint is None
    assert time.monotonic() - began < 60  # not the 300 s rendezvous timeout
    assert hooks.metrics == []


def test_ranks_die_with_a_killed_launcher(data, tmp_path):
    """A worker killed with SIGKILL must not leave training processes behind (they would hold
    the GPUs): torchrun's agent gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and stops them."""
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = make_spec(data, n_epochs=20, distributed={"gpus_per_node": 2})  # long enough
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    out = tmp_path / "run"
    code = (
        "import sys; from pathlib import Path; from replay_engine.spec import JobSpec; "
        "from replay_engine.launcher import launch; "
        "launch(JobSpec.model_validate_json(Path(sys.argv[1]).read_text()), sys.argv[2])"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "spec.json"), str(out)])

    def ranks() -> list[int]:  # processes whose command line names this run's folder
        found = []
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != launcher.pid:
                try:
                    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
                except OSError:
                    continue
                if f"--out={out}" in cmdline:
                    found.append(int(pid))
        return found

    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() or len(ranks()) < 3:  # agent + 2 ranks
        assert time.monotonic() < deadline and launcher.poll() is None, "never started"
        time.sleep(0.5)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 60
    while ranks() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = ranks()
    for pid in left:  # do not leak them into the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived their launcher: {left}"


def test_a_rank_killed_without_a_word_is_reported_with_torchruns_account(data, tmp_path):
    """Ranks that die by a signal write no error record (a lone survivor may record only "peer
    lost", so both are killed here); the error then carries the end of launch.log, where
    torchrun names the failed rank and the signal, for the server's logs."""
    import os
    import signal

    out = tmp_path / "run"

    def rank_pid(rank: int) -> int | None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if f"--out={out}".encode() in cmdline and f"RANK={rank}".encode() in environ:
                return int(pid)
        return None

    class KillBothRanks(Recorder):
        def on_metrics(self, record):
            super().on_metrics(record)
            if len(self.metrics) == 1:
                pids = [rank_pid(0), rank_pid(1)]
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)

    spec = make_spec(data, n_epochs=20, distributed={"gpus_per_node": 2})  # long enough
    with pytest.raises(RankFailed, match="exited with status 1") as failed:
        launch(spec, out, KillBothRanks())
    assert not list((out / ".launch").glob("error-*.json"))
    note = "\n".join(failed.value.__notes__)
    assert "launch.log" in note and "SIGKILL" in note, note
    assert str(out) not in str(failed.value)  # the client's message names no server path


def test_lora_on_two_ddp_processes_matches_one(data, tmp_path):
    lora = {"type": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}
    one = make_spec(data, method=lora, learning_rate=1e-2)
    two = make_spec(data, method=lora, learning_rate=1e-2, distributed={"gpus_per_node": 2})
    train(one, tmp_path / "one")
    launch(two, tmp_path / "two")
    assert_same_run(tmp_path / "one", tmp_path / "two")
    assert (tmp_path / "two/checkpoints/step-5/adapter/adapter_config.json").is_file()
