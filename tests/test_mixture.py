"""The deterministic mixture: exact counts, fixed target order, no generic repeats, pure function."""

import math

import numpy as np
import pytest

from replay_engine.mixture import GENERIC, TARGET, Mixture
from replay_engine.schedule import resolve_plan
from replay_engine.spec import parse_spec


def make_plan(r=0.25, seed=0, **replay):
    spec = parse_spec(
        {
            "model": "replayft/llama-tiny",
            "training_file": "t",
            "batch_size": 8,
            "n_epochs": 3,
            "seed": seed,
            "replay": {"dataset": "g", "fraction": r, **replay},
        }
    )
    return resolve_plan(spec, target_sequences=37, generic_sequences=50)


def test_exact_counts_and_no_drift():
    plan = make_plan(r=0.3)  # 5.6 target sequences per batch
    mix = Mixture(plan)
    running = 0
    for step in range(plan.total_steps):
        n_target = sum(s.source == TARGET for s in mix.batch(step))
        assert n_target in (5, 6)
        running += n_target
        assert abs(running - 0.7 * 8 * (step + 1)) <= 0.5  # the error is carried, never accumulated


def test_target_cycles_in_fixed_order_each_epoch():
    plan = make_plan()
    mix = Mixture(plan)
    order = [
        s.index for step in range(plan.total_steps) for s in mix.batch(step) if s.source == TARGET
    ]
    epoch = order[:37]
    assert sorted(epoch) == list(range(37))
    assert order[37:74] == epoch and order[74:111] == epoch


def test_generic_does_not_repeat_while_data_remains():
    plan = make_plan(r=0.75)
    mix = Mixture(plan)
    seen = [mix.generic_index(k) for k in range(100)]
    assert sorted(seen[:50]) == list(range(50))
    assert sorted(seen[50:]) == list(range(50))
    assert seen[:50] != seen[50:]  # each pass gets a new order


def test_batch_is_a_pure_function_of_plan_and_step():
    plan = make_plan()
    first = Mixture(plan)
    forward = [first.batch(s) for s in range(plan.total_steps)]
    fresh = Mixture(plan)
    for step in reversed(range(plan.total_steps)):  # any order, any instance
        assert fresh.batch(step) == forward[step]


def test_ranks_take_disjoint_slots_of_the_same_batch():
    plan = make_plan()
    mix = Mixture(plan)
    for step in (0, 7, plan.total_steps - 1):
        full = mix.batch(step)
        world = 4
        parts = [mix.batch(step, slots=range(rank, 8, world)) for rank in range(world)]
        rebuilt = [None] * 8
        for rank, part in enumerate(parts):
            for i, slot in zip(range(rank, 8, world), part, strict=False):
                rebuilt[i] = slot
        assert rebuilt == full


def test_sources_are_interleaved_within_batches_and_seed_matters():
    plan = make_plan(r=0.5)
    masks = [tuple(Mixture(plan).is_target(s)) for s in range(10)]
    assert len(set(masks)) > 1  # slot positions shuffle per step
    other = Mixture(make_plan(r=0.5, seed=1))
    assert [other.batch(s) for s in range(3)] != [Mixture(plan).batch(s) for s in range(3)]


def test_two_stage_counts_follow_stage_weights():
    spec = parse_spec(
        {
            "model": "m",
            "training_file": "t",
            "batch_size": 10,
            "total_steps": 100,
            "replay": {"dataset": "g", "fraction": 0.5, "target_stage2_allocation": 0.5},
        }
    )
    plan = resolve_plan(spec, target_sequences=200, generic_sequences=5000)  # g = 0.2, d = 0.2
    mix = Mixture(plan)
    transition = plan.stages[1].start_step
    assert transition == 80
    stage1 = sum(s.source == TARGET for step in range(80) for s in mix.batch(step))
    stage2 = sum(s.source == TARGET for step in range(80, 100) for s in mix.batch(step))
    assert stage1 == pytest.approx(0.125 * 800, abs=0.5)  # w1 = 0.2 * 0.5 / 0.8
    assert stage2 == 100  # (1 - r) * 20 steps * 10
    assert stage1 + stage2 == plan.target_sequences_used
    assert plan.target_sequences_used == pytest.approx(0.2 * 1000, abs=1)
    assert all(s.source in (TARGET, GENERIC) for s in mix.batch(0))
    assert math.isclose(np.mean([plan.target_count_at(s) for s in range(80)]), 1.25)
