"""Schedule math: the paper's formulas as tables and invariants, and the LR curves."""

import math

import pytest

from replay_engine.schedule import lr_at, resolve_plan
from replay_engine.spec import LRSchedulerSpec, SpecError, parse_spec


def make_spec(**overrides):
    data = {
        "model": "replayft/llama-tiny",
        "training_file": "t.jsonl",
        "replay": {"dataset": "g.txt"},
        "batch_size": 8,
        "n_epochs": 1,
    }
    replay = overrides.pop("replay", {})
    data.update(overrides)
    data["replay"] = {**data["replay"], **replay}
    return parse_spec(data)


def check_identity(plan):
    g, r, d = plan.target_fraction, plan.replay_fraction, plan.stage2_duration
    w1 = plan.stages[0].target_weight if len(plan.stages) == 2 else 0.0
    assert w1 * (1 - d) + (1 - r) * d == pytest.approx(g, abs=1e-9)


def test_finetune_steps_follow_data_and_replay_adds_steps():
    # N_ft = epochs * target_batches / (1 - r)
    for r, expected in [(0.0, 100), (0.25, 134), (0.5, 200), (0.75, 400)]:
        plan = resolve_plan(make_spec(n_epochs=4, replay={"fraction": r}), 200, 10_000)
        assert plan.total_steps == expected
        assert plan.mode == "finetune" and len(plan.stages) == 1
        assert plan.stages[0].target_weight == 1 - r
        # the whole target budget is consumed: 4 epochs of 200 sequences
        assert plan.target_sequences_used >= 800
        assert plan.target_sequences_used - 800 < 8


@pytest.mark.parametrize(
    "given, derived",
    [
        ({"fraction": 0.5, "target_stage2_allocation": 0.5}, "stage2_duration"),
        ({"fraction": 0.5, "stage2_duration": 0.05}, "target_stage2_allocation"),
        ({"target_stage2_allocation": 0.5, "stage2_duration": 0.4}, "fraction"),
    ],
)
def test_any_two_fix_the_third(given, derived):
    # g = 1 epoch * 400 seqs / (500 steps * 8) = 0.1
    plan = resolve_plan(make_spec(total_steps=500, replay=given), 400, 100_000)
    assert plan.target_fraction == pytest.approx(0.1)
    r, a, d = plan.replay_fraction, plan.target_stage2_allocation, plan.stage2_duration
    assert d == pytest.approx(0.1 * a / (1 - r))
    check_identity(plan)
    assert plan.stages[1].start_step == math.floor((1 - d) * 500)
    assert plan.stages[1].target_weight == pytest.approx(1 - r)


def test_paper_grid_identity_holds():
    for r in (0, 0.25, 0.5, 0.75, 0.875):
        for a in (1, 0.5, 0.25, 0.125):
            plan = resolve_plan(
                make_spec(total_steps=1000, replay={"fraction": r, "target_stage2_allocation": a}),
                500,
                1_000_000,
            )
            check_identity(plan)
            assert 0 <= plan.stages[0].target_weight <= 1


def test_midtraining_without_total_steps():
    plan = resolve_plan(
        make_spec(
            n_epochs=2,
            replay={"fraction": 0.25, "target_stage2_allocation": 1, "stage2_duration": 0.5},
        ),
        300,
        10_000,
    )
    # stage 2 holds a * E * T = 600 target sequences at 0.75 * 8 = 6 per step -> 100 steps = half of N
    assert plan.total_steps == 200
    assert [(s.start_step, s.end_step) for s in plan.stages] == [(0, 100), (100, 200)]
    assert plan.stages[0].target_weight == 0.0
    check_identity(plan)


def test_fixed_compute_fills_with_replay():
    plan = resolve_plan(make_spec(total_steps=100), 400, 10_000)  # g = 0.5
    assert plan.replay_fraction == pytest.approx(0.5)
    assert len(plan.stages) == 1


def test_pretraining_is_generic_only():
    spec = parse_spec(
        {"model": "replayft/llama-tiny", "replay": {"dataset": "g.txt"}, "total_steps": 50}
    )
    plan = resolve_plan(spec, 0, 1000)
    assert plan.mode == "pretrain" and plan.target_sequences_used == 0
    assert plan.generic_sequences_used == 400


def test_errors_name_the_field():
    cases = [
        (make_spec(total_steps=10), "total_steps"),  # 400 target seqs cannot fit in 80 slots
        (make_spec(total_steps=100, replay={"fraction": 0.8}), "replay.stage2_duration"),  # d = 2.5
        (
            make_spec(
                total_steps=500,
                replay={"fraction": 0.5, "target_stage2_allocation": 0.5, "stage2_duration": 0.9},
            ),
            "replay.stage2_duration",
        ),
        (
            make_spec(
                total_steps=500, replay={"target_stage2_allocation": 0.1, "stage2_duration": 0.01}
            ),
            "replay.fraction",
        ),
    ]
    for spec, param in cases:
        with pytest.raises(SpecError) as info:
            resolve_plan(spec, 400, 10_000)
        assert info.value.param == param, str(info.value)


def test_stage1_weight_above_one_is_rejected():
    # N = a*T/(d*B) = 40 steps, g = 1.25, so stage 1 would need w1 = g(1-a)/(1-d) = 1.5
    spec = make_spec(
        replay={"fraction": 0.0, "target_stage2_allocation": 0.4, "stage2_duration": 0.5}
    )
    with pytest.raises(SpecError) as info:
        resolve_plan(spec, 400, 10_000)
    assert info.value.param == "replay.stage2_duration"


def test_empty_data_sources():
    with pytest.raises(SpecError) as info:
        resolve_plan(make_spec(), 0, 100)
    assert info.value.param == "training_file"


# ---------------------------------------------------------------------------- LR
def test_warmup_is_floor_of_ratio():
    sched = LRSchedulerSpec(type="constant", warmup_ratio=0.01)
    assert [lr_at(s, 99, 1.0, sched) for s in range(3)] == [1.0, 1.0, 1.0]  # floor(0.99) = 0
    sched = LRSchedulerSpec(type="constant", warmup_ratio=0.1)
    assert [lr_at(s, 50, 1.0, sched) for s in range(6)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd(shape):
    sched = LRSchedulerSpec(
        type="wsd", warmup_ratio=0.1, decay_ratio=0.2, decay_shape=shape, min_lr_ratio=0.1
    )
    N, peak = 100, 2.0
    lrs = [lr_at(s, N, peak, sched) for s in range(N + 1)]
    assert lrs[9] == peak and all(lr == peak for lr in lrs[10:80])
    assert all(a >= b for a, b in zip(lrs[80:], lrs[81:], strict=False))  # monotone decay
    assert lrs[N] == pytest.approx(0.2)  # min_lr reached at step N
    mid = {"linear": 0.5, "cosine": 0.5, "1-sqrt": 1 - math.sqrt(0.5)}[shape]
    assert lrs[90] == pytest.approx(0.2 + 1.8 * mid)


def test_a_short_wsd_run_still_decays():
    # 15 steps at decay_ratio 0.1: floor(1.5) = 1 decay step, which sits at the peak; the
    # decay gets 2, so the last step trained is below the peak
    sched = LRSchedulerSpec(type="wsd", warmup_ratio=0.0, decay_ratio=0.1)
    lrs = [lr_at(s, 15, 1.0, sched) for s in range(15)]
    assert lrs[:14] == [1.0] * 14 and lrs[14] == pytest.approx(0.5), lrs
    assert lr_at(15, 15, 1.0, sched) == 0.0
    # no decay asked for, or no steps left after the warmup: the schedule is left alone
    flat = LRSchedulerSpec(type="wsd", warmup_ratio=0.0, decay_ratio=0.0)
    assert [lr_at(s, 15, 1.0, flat) for s in range(16)] == [1.0] * 16
    assert lr_at(0, 1, 1.0, sched) == 1.0


def test_cosine_and_linear():
    cos = LRSchedulerSpec(type="cosine", warmup_ratio=0.0)
    lin = LRSchedulerSpec(type="linear", warmup_ratio=0.0)
    assert lr_at(0, 100, 1.0, cos) == 1.0 and lr_at(50, 100, 1.0, cos) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, cos) == pytest.approx(0.0)
    assert lr_at(25, 100, 1.0, lin) == pytest.approx(0.75)


def test_plan_summary_reports_boundaries():
    plan = resolve_plan(
        make_spec(total_steps=500, replay={"fraction": 0.5, "target_stage2_allocation": 0.5}),
        400,
        10_000,
    )
    summary = plan.summary()
    assert summary["transition_step"] == plan.stages[1].start_step
    assert sum(s["target_tokens"] for s in summary["stages"]) == summary["target_tokens"]
    assert summary["target_tokens"] + summary["generic_tokens"] == 500 * 8 * plan.seq_len
    assert summary["stages"][1]["lr_at_end"] == plan.lr_at(499)
