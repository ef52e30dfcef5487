"""The sweep report (api.services.sweep_report.build_report, the function GET
/v1/sweeps/{id}/report serves) on the paper's own losses, and on partial and failed sweeps."""

import pytest

from api.services.sweep_report import MemberResult, build_report, sweep_status

# science.md: reference losses at x = 16, 8, 4, 2, 1 units (no replay)
FINEMATH_REFERENCE = [2.99478, 3.16164, 3.39593, 3.49087, 3.62532]
FLAN_REFERENCE = [3.2712, 3.27876, 3.37226, 3.41444, 3.54749]
UNITS = [16, 8, 4, 2, 1]


def references(losses, status="succeeded"):
    """Reference members on nested subsets 1, 1/2, ... 1/16, measured in target sequences."""
    return [
        MemberResult(
            job_id=f"ftjob-ref-{units}",
            status=status,
            replay_fraction=0.0,
            target_stage2_allocation=None,
            target_subset_fraction=units / 16,
            is_configuration=False,
            is_reference=True,
            target_sequences=units * 100,
            final_val_loss_target=loss,
            final_val_loss_generic=3.0,
        )
        for units, loss in zip(UNITS, losses, strict=True)
    ]


def configuration(r, loss, status="succeeded", a=None, **kw):
    return MemberResult(
        job_id=f"ftjob-r{r}-a{a}",
        status=status,
        replay_fraction=r,
        target_stage2_allocation=a,
        target_subset_fraction=1.0,
        is_configuration=True,
        is_reference=False,
        target_sequences=1600,
        final_val_loss_target=loss,
        final_val_loss_generic=3.1,
        **kw,
    )


def row(report, r):
    return next(c for c in report["configurations"] if c["replay_fraction"] == r)


@pytest.mark.parametrize(
    "reference, baseline, candidate, expected, method",
    [
        (FINEMATH_REFERENCE, 3.99417, 3.90261, 1.49, "log-linear"),  # fine-tuning, FineMath
        (FLAN_REFERENCE, 3.65354, 3.51, 1.87, "power"),  # fine-tuning, Flan
    ],
)
def test_report_reproduces_the_papers_fine_tuning_multipliers(
    reference, baseline, candidate, expected, method
):
    spike = {"height": 0.42, "peak_step": 3, "duration": 9}
    members = [
        *references(reference),
        configuration(0.0, baseline),
        configuration(0.25, candidate, loss_spike=spike),
    ]
    report = build_report("sweep-paper", members)

    assert report["status"] == "complete" and report["sweep_status"] == "succeeded"
    fit = report["reference"]["fit"]
    assert fit["method"] == method and fit["degenerate"] == (method != "power")
    assert [p["x"] for p in report["reference"]["points"]] == [u / 16 for u in UNITS[::-1]]
    assert report["baseline"]["job_id"] == "ftjob-r0.0-aNone"
    assert row(report, 0.0)["multiplier"] == pytest.approx(1.0)
    replay = row(report, 0.25)
    assert round(replay["multiplier"], 2) == expected, replay
    assert replay["loss_spike_height"] == 0.42 and replay["final_val_loss_generic"] == 3.1
    rec = report["recommendation"]
    assert rec["replay_fraction"] == 0.25 and not rec["provisional"]
    assert (
        f"{expected:.2f}x" in rec["reason"]
        and "lowest final target validation loss" in rec["reason"]
    )


def test_report_reproduces_the_papers_mid_training_multiplier():
    members = [
        *references(FLAN_REFERENCE),
        configuration(0.0, 3.44407, a=1.0),
        configuration(0.5, 3.35773, a=1.0),
    ]
    report = build_report("sweep-mid", members)
    assert report["baseline"]["job_id"] == "ftjob-r0.0-a1.0"
    assert round(row(report, 0.5)["multiplier"], 2) == 2.06


def test_partial_report_while_members_run():
    refs = references(FLAN_REFERENCE)
    refs[0:3] = [
        MemberResult(**{**m.__dict__, "status": "running", "final_val_loss_target": None})
        for m in refs[0:3]
    ]
    running = configuration(0.25, None, status="running", progress={"step": 5, "total_steps": 9})
    report = build_report("sweep-partial", [*refs, configuration(0.0, 3.65354), running])
    assert report["status"] == "partial" and report["sweep_status"] == "running"
    assert report["reference"]["fit"] is None
    assert "2 of 5 reference runs" in report["reference"]["fit_error"]
    assert row(report, 0.25)["progress"] == {"step": 5, "total_steps": 9}
    assert row(report, 0.0)["multiplier"] is None
    # no winner is named while a configuration it compares may still beat it
    assert report["recommendation"] is None
    assert any("waits for the 1 configuration run(s) still going" in n for n in report["notes"])
    assert report["counts"] == {
        "total": 7,
        "succeeded": 3,
        "failed": 0,
        "cancelled": 0,
        "unfinished": 4,
    }


def test_a_failed_member_is_reported_not_hidden():
    error = {"code": "training_diverged", "message": "training diverged at step 3", "param": None}
    failed = configuration(0.5, None, status="failed", error=error)
    members = [*references(FLAN_REFERENCE), configuration(0.0, 3.65354), failed]
    report = build_report("sweep-failed", [*members, configuration(0.25, 3.51)])
    assert report["status"] == "incomplete" and report["sweep_status"] == "failed"
    assert row(report, 0.5)["status"] == "failed" and row(report, 0.5)["error"] == error
    assert any("training diverged at step 3" in note for note in report["notes"])
    assert report["recommendation"]["replay_fraction"] == 0.25  # from the finished ones


def test_a_curve_that_does_not_fall_gives_no_fit_but_a_reason():
    flat = [3.5, 3.5, 3.5, 3.5, 3.5]
    report = build_report("sweep-flat", [*references(flat), configuration(0.25, 3.4)])
    assert report["reference"]["fit"] is None
    assert "do not decrease" in report["reference"]["fit_error"]
    assert row(report, 0.25)["multiplier"] is None
    # the reference run on all the data stands in as the baseline when r = 0 is not swept
    assert report["baseline"]["job_id"] == "ftjob-ref-16"


def test_sweep_status():
    assert sweep_status(["queued", "validating_files"]) == "queued"
    assert sweep_status(["succeeded", "running"]) == "running"
    assert sweep_status(["succeeded", "paused"]) == "running"
    assert sweep_status(["succeeded", "succeeded"]) == "succeeded"
    assert sweep_status(["succeeded", "cancelled", "failed"]) == "failed"
    assert sweep_status(["succeeded", "cancelled"]) == "cancelled"


def test_a_multiplier_comes_with_its_spread_and_a_degenerate_flag():
    members = [*references(FLAN_REFERENCE), configuration(0.0, 3.65354), configuration(0.5, 3.55)]
    report = build_report("sweep-spread", members)
    best = row(report, 0.5)
    spread = best["multiplier_interval"]
    assert spread["resamples"] > 300 and spread["level"] == 0.9
    assert spread["low"] <= best["multiplier"] <= spread["high"]
    assert spread["high"] > spread["low"]  # the reference points scatter around the fit
    assert best["multiplier_degenerate"] is (best["multiplier_method"] != "power")
    assert row(report, 0.0)["multiplier_interval"] is None  # the baseline is 1 by definition
    assert "refits" in report["recommendation"]["reason"]
    assert set(report["explain"]) >= {"x_eq", "multiplier", "loss_spike_height"}


def test_spread_of_a_curve_through_every_point_is_zero_width():
    """3 points, 3 parameters: the fit passes through them and has no scatter to resample."""
    from replay_engine.efficiency import efficiency_multiplier, fit_reference, multiplier_spread

    xs, losses = [0.25, 0.5, 1.0], [3.4, 3.2, 3.1]
    value = efficiency_multiplier(fit_reference(xs, losses), 3.05, 3.1)
    spread = multiplier_spread(xs, losses, 3.05, 3.1)
    assert spread.low == pytest.approx(value) and spread.high == pytest.approx(value)
    assert multiplier_spread(xs, losses, 3.05, 3.1, seed=0) == spread  # deterministic


def test_each_configuration_carries_its_eval_scores_and_generic_change():
    members = [
        *references(FLAN_REFERENCE),
        configuration(0.0, 3.65354, generic_change=0.42, eval_scores={"gsm8k": 0.1, "mc": 0.5}),
        configuration(0.25, 3.51, generic_change=0.08, eval_scores={"gsm8k": 0.2, "mc": 0.625}),
        configuration(0.5, 3.55),  # a run without evals (or a summary from before them)
    ]
    report = build_report("sweep-evals", members)
    assert report["eval_names"] == ["gsm8k", "mc"]
    assert row(report, 0.0)["generic_change"] == 0.42
    assert row(report, 0.0)["eval_scores"] == {"gsm8k": 0.1, "mc": 0.5}
    assert row(report, 0.25)["generic_change"] == 0.08
    assert row(report, 0.25)["eval_scores"] == {"gsm8k": 0.2, "mc": 0.625}
    assert row(report, 0.5)["generic_change"] is None and row(report, 0.5)["eval_scores"] == {}
    # the multiplier sits beside them, as before
    assert row(report, 0.25)["multiplier"] == pytest.approx(1.87, abs=0.01)
    assert "generic_change" in report["explain"] and "eval_scores" in report["explain"]
