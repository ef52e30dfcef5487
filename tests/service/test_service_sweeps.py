"""Sweeps on the real deployment (PostgreSQL, Redis, uvicorn, Celery workers): bad requests are
400s naming the field and create nothing; a small sweep submitted with `replayft sweeps submit
--wait` runs its members in parallel on two training workers to a complete data-efficiency
report; cancelling a sweep cancels every unfinished member."""

import json
import logging
import os
import time
from pathlib import Path

import pytest
import yaml
from servicekit import (
    JOBS,
    TERMINAL,
    TINY,
    Team,
    assert_error,
    cli,
    dashboard_browser,
    service_env,
    sweep_body,
)

log = logging.getLogger(__name__)

SWEEPS = "/v1/sweeps"
SWEEP_TIMEOUT_S = 900  # five tiny jobs on a busy 2-core machine


def test_bad_sweep_requests_name_the_field_and_create_nothing(team: Team, team_files):
    target, replay = team_files
    cases = [
        ({"replay_fractions": [0, 1.0]}, "replay_fractions.1"),
        ({"replay_fractions": [-0.1]}, "replay_fractions.0"),
        ({"replay_fractions": []}, "replay_fractions"),
        ({"replay_fractions": [0.25, 0.25]}, "replay_fractions"),
        ({"reference_subsets": [0, 0.5]}, "reference_subsets.0"),
        ({"reference_subsets": [0.5, 2]}, "reference_subsets.1"),
        ({"reference_subsets": [0.5]}, "reference_subsets"),  # with 1: two points, no fit
        ({"target_stage2_allocations": [0]}, "target_stage2_allocations.0"),
        ({"target_stage2_allocations": [0.5]}, "target_stage2_allocations"),  # no total_steps
        ({"replay_fractions": ["lots"]}, "replay_fractions.0"),
        ({"replay_fraction": [0.1]}, "replay_fraction"),  # a typo is not the default grid
        ({"training_file": replay}, "training_file"),
        ({"replay": {"dataset": "no-such-corpus"}}, "replay.dataset"),
        ({"model": "replayft/no-such-model"}, "model"),
    ]
    for change, param in cases:
        err = assert_error(team.post(SWEEPS, json={**sweep_body(target, replay), **change}), 400)
        assert err["param"] == param, (change, err)
    # a member that the engine rejects (here: replay without replay data) rejects the sweep
    no_replay = sweep_body(target, replay)
    del no_replay["replay"]
    err = assert_error(team.post(SWEEPS, json=no_replay), 400, "replay.dataset")
    assert "r=0.25" in err["message"], err
    assert team.list_all(SWEEPS) == [] and team.list_all(JOBS) == [], "nothing half-created"


@pytest.fixture(scope="module")
def finished_sweep(service, target_jsonl, replay_jsonl, tmp_path_factory):
    """One small sweep, submitted with `replayft sweeps submit --wait` while two training workers
    run, shared by the API and browser tests below:
    (team, sweep id, CLI result, seconds it took, CLI environment, working folder)."""
    team = service.team("sweeps-e2e")
    tmp_path = tmp_path_factory.mktemp("sweep")
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        yaml.safe_dump(
            {
                "model": TINY,
                "training_file": str(target_jsonl),
                "replay": {"dataset": str(replay_jsonl)},
                "seed": 7,
                # long enough (a few seconds each) that a member is still training when the
                # next one is queued, on any machine
                "n_epochs": 3,
                "batch_size": 4,
                "seq_len": 64,
                "learning_rate": 2e-3,
                "eval_sequences": 4,
                "sweep": {"replay_fractions": [0, 0.25], "reference_subsets": [0.25, 0.5, 1]},
            }
        )
    )
    env = service_env(REPLAYFT_URL=service.url, REPLAYFT_API_KEY=team.key)
    # two training workers, both ready before the sweep: members must not wait in line
    extra = service.start_worker(wait=True)
    for worker in service.training_workers():
        worker.wait_for_log(" ready.", 120, service.diagnostics)
    try:
        started = time.monotonic()
        result = cli(
            env,
            tmp_path,
            "sweeps",
            "submit",
            str(sweep_file),
            "--wait",
            "--timeout",
            str(SWEEP_TIMEOUT_S - 60),
            timeout=SWEEP_TIMEOUT_S,
        )
        elapsed = time.monotonic() - started
    finally:
        extra.stop()
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{service.diagnostics()}"
    sweep_id = result.stdout.split()[0]
    yield team, sweep_id, result, elapsed, env, tmp_path
    team.close()


def test_small_sweep_runs_in_parallel_to_a_complete_report(
    finished_sweep, other_team: Team, service
):
    team, sweep_id, result, elapsed, env, tmp_path = finished_sweep
    assert sweep_id.startswith("sweep-"), result.stdout
    assert "recommended:" in result.stdout and "MULTIPLIER" in result.stdout, result.stdout

    sweep = team.ok(team.get(f"{SWEEPS}/{sweep_id}"))
    assert sweep["status"] == "succeeded" and sweep["counts"]["succeeded"] == 4, sweep
    members = {(m["replay_fraction"], m["target_subset_fraction"]): m for m in sweep["members"]}
    # r=0 on all the data is configuration, reference and baseline at once: created once
    assert set(members) == {(0.0, 1.0), (0.25, 1.0), (0.0, 0.5), (0.0, 0.25)}, members
    assert members[(0.0, 1.0)]["roles"] == ["configuration", "reference"]

    # members are ordinary jobs, listed with their sweep
    listed = team.ok(team.get(JOBS, params={"metadata[sweep_id]": sweep_id, "limit": 50}))["data"]
    assert {j["id"] for j in listed} == {m["job_id"] for m in sweep["members"]}
    jobs = {j["id"]: j for j in listed}
    assert all(j["seed"] == 7 and j["status"] == "succeeded" for j in listed), listed
    # fine-tuning compute rule: replay adds steps, a reference on less data takes fewer
    steps = {key: jobs[m["job_id"]]["progress"]["total_steps"] for key, m in members.items()}
    assert steps[(0.0, 0.25)] < steps[(0.0, 0.5)] < steps[(0.0, 1.0)] < steps[(0.25, 1.0)], steps

    # two training workers: the members were spread over both (each worker logs the jobs it
    # claims), rather than waiting in line for one
    trainers = {
        worker.name: {i for i in jobs if f"job {i}: claimed by" in worker.log_text()}
        for worker in service.workers
        if "training" in worker.queues
    }
    assert sum(bool(claimed) for claimed in trainers.values()) >= 2, trainers

    report = team.ok(team.get(f"{SWEEPS}/{sweep_id}/report"))
    assert report["status"] == "complete" and report["object"] == "sweep.report", report
    # the report's losses are the members' own final evaluations
    for point in report["reference"]["points"]:
        evals = [
            r
            for r in team.metrics(point["job_id"])
            if r.get("type") == "eval" and r.get("val_loss_target") is not None
        ]
        assert point["final_val_loss_target"] == evals[-1]["val_loss_target"], point
    xs = [p["x"] for p in report["reference"]["points"]]
    assert xs == sorted(xs) and xs[-1] == 1.0 and 0.15 < xs[0] < 0.35, xs
    fit = report["reference"]["fit"]
    assert fit is not None and fit["method"] in ("power", "log-linear"), report["reference"]
    assert report["reference"]["fit_error"] is None
    configurations = {c["replay_fraction"]: c for c in report["configurations"]}
    assert set(configurations) == {0.0, 0.25}
    assert configurations[0.0]["is_baseline"] and configurations[0.0]["multiplier"] == 1.0
    replay_row = configurations[0.25]
    assert replay_row["multiplier"] > 0 and replay_row["final_val_loss_generic"] is not None
    assert replay_row["loss_spike"] is not None and replay_row["loss_spike_height"] >= 0
    best = min(report["configurations"], key=lambda c: c["final_val_loss_target"])
    rec = report["recommendation"]
    assert rec["replay_fraction"] == best["replay_fraction"] and not rec["provisional"], rec
    assert rec["reason"], rec

    # `sweeps show` reads the same report; another team sees nothing of it
    shown = cli(env, tmp_path, "sweeps", "show", sweep_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["report"]["recommendation"] == rec
    for path in (f"{SWEEPS}/{sweep_id}", f"{SWEEPS}/{sweep_id}/report"):
        assert_error(other_team.get(path), 404, "sweep_id")
    assert_error(other_team.post(f"{SWEEPS}/{sweep_id}/cancel"), 404, "sweep_id")
    assert other_team.list_all(SWEEPS) == []

    # the measurement, for `pytest --log-cli-level=INFO`
    summary = {k: report[k] for k in ("reference", "configurations", "recommendation")}
    log.info("sweep e2e: %.0fs for %d jobs; report: %s", elapsed, len(jobs), json.dumps(summary))


def test_cancel_stops_every_unfinished_member(team: Team, team_files):
    target, replay = team_files
    body = sweep_body(target, replay, replay_fractions=[0, 0.5], reference_subsets=[0.5, 0.75])
    body["method"]["supervised"]["hyperparameters"]["n_epochs"] = 20  # long: ~500 steps each
    key = {"Idempotency-Key": f"sweep-{team.name}"}
    sweep = team.ok(team.post(SWEEPS, json=body, headers=key))
    assert sweep["status"] == "queued" and len(sweep["members"]) == 4, sweep
    team.job_ids += [m["job_id"] for m in sweep["members"]]  # cancelled at teardown if left
    # a retried request (same key) gets the same sweep back and launches nothing more
    again = team.post(SWEEPS, json=body, headers=key)
    assert again.headers.get("Idempotent-Replayed") == "true", again.headers
    assert team.ok(again)["id"] == sweep["id"]
    assert [m["job_id"] for m in team.ok(again)["members"]] == [
        m["job_id"] for m in sweep["members"]
    ]
    reused = assert_error(team.post(JOBS, json=team.tiny_job(target), headers=key), 409)
    assert reused["code"] == "idempotency_key_reused" and "sweep" in reused["message"], reused
    # partial report while nothing has finished
    report = team.ok(team.get(f"{SWEEPS}/{sweep['id']}/report"))
    assert report["status"] == "partial" and report["recommendation"] is None, report
    assert any("recommendation waits" in n for n in report["notes"]), report["notes"]
    assert "reference runs have a final loss" in report["reference"]["fit_error"]

    cancelled = team.ok(team.post(f"{SWEEPS}/{sweep['id']}/cancel"))
    assert cancelled["status"] == "cancelled", cancelled
    assert all(m["status"] == "cancelled" for m in cancelled["members"]), cancelled
    for m in cancelled["members"]:
        assert team.wait_job(m["job_id"], *TERMINAL, timeout=120)["status"] == "cancelled"
    assert_error(team.post(f"{SWEEPS}/{sweep['id']}/cancel"), 409)
    report = team.ok(team.get(f"{SWEEPS}/{sweep['id']}/report"))
    assert report["status"] == "incomplete" and report["counts"]["cancelled"] == 4, report
    assert len(report["notes"]) >= 4, report["notes"]
    listed = team.list_all(SWEEPS)
    assert [s["id"] for s in listed] == [sweep["id"]], listed


# ---------------------------------------------------------------------------- the dashboard page


def test_sweep_report_page_shows_the_plots(service, finished_sweep):
    """Headless Chromium (Playwright) on the dashboard: the sweeps list links to the report page,
    which plots loss against replay fraction and the fitted reference curve with every
    configuration on it, and names the recommended fraction. With REPLAYFT_SCREENSHOTS=<dir> it
    saves sweep-report.png there (docs/screenshots/ holds the committed one)."""
    team, sweep_id, *_ = finished_sweep
    report = team.ok(team.get(f"{SWEEPS}/{sweep_id}/report"))
    errors: list[str] = []
    with dashboard_browser() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.add_init_script(f"sessionStorage.setItem('replayft.apiKey', {team.key!r})")
        page.goto(f"{service.url}/sweeps")
        page.get_by_role("heading", name="Replay sweeps").wait_for()
        page.get_by_role("link", name=sweep_id).click()
        page.get_by_role("heading", name="Sweep report").wait_for()
        assert page.get_by_test_id("report-status").inner_text() == "complete"

        by_fraction = page.get_by_test_id("sweep-loss-vs-fraction")
        curve = page.get_by_test_id("sweep-reference-curve")
        by_fraction.locator("canvas").wait_for()
        curve.locator("canvas").wait_for()
        assert by_fraction.get_attribute("data-points") == "2"  # r = 0 and r = 0.25
        # the sampled curve plus the reference runs and the configurations placed on it
        assert int(curve.get_attribute("data-points") or 0) > 60

        rec = report["recommendation"]
        card = page.get_by_test_id("recommendation")
        assert f"r={rec['replay_fraction']:g}" in card.inner_text()
        assert rec["reason"] in card.inner_text()
        table = page.get_by_role("table", name="Multipliers")
        rows = table.locator("tbody tr")
        assert rows.count() == len(report["configurations"])
        replay = next(c for c in report["configurations"] if c["replay_fraction"] == 0.25)
        shown = table.locator("tr[data-fraction='0.25']").inner_text()
        assert f"{replay['multiplier']:.2f}×" in shown
        spread = replay["multiplier_interval"]
        if spread is not None:  # the spread of the reference fit, beside the number
            assert f"{spread['low']:.2f}–{spread['high']:.2f}× (90% of refits)" in shown, shown
        assert ("degenerate fit" in shown) is bool(replay["multiplier_degenerate"]), shown
        # what x_eq means is explained in place
        assert table.locator("th[title^='Equivalent target data']").count() == 1
        folder = os.environ.get("REPLAYFT_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(folder) / "sweep-report.png"), full_page=True)
    assert not errors, f"uncaught errors in the page: {errors}"


def test_a_sweep_from_the_dashboard_form(service, team: Team, team_files):
    """The new-sweep form: the new-job form plus the fraction and subset lists; before
    submitting it shows how many jobs the sweep launches and their steps; creating it opens the
    sweep's page. (The sweep is cancelled at once: its training is tested above.)"""
    target, replay = team_files
    errors: list[str] = []
    with dashboard_browser() as browser:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(60_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.add_init_script(f"sessionStorage.setItem('replayft.apiKey', {team.key!r})")
        page.goto(f"{service.url}/sweeps")
        page.get_by_role("link", name="New sweep").click()
        page.get_by_role("heading", name="New replay sweep").wait_for()
        page.locator("#f-training_file").select_option(target)
        page.locator("#f-replay_dataset").select_option(replay)
        page.locator("#f-replay_fractions").fill("0, 0.25")
        page.locator("#f-reference_subsets").fill("0.25 0.5 1")
        plan = page.get_by_test_id("sweep-plan")
        plan.get_by_text("4 jobs").wait_for()  # r=0 (also the full reference), r=0.25, 2 subsets
        expected = team.ok(
            team.post(
                f"{SWEEPS}/plan",
                json={
                    "model": TINY,
                    "training_file": target,
                    "replay": {"dataset": replay},
                    "replay_fractions": [0, 0.25],
                    "reference_subsets": [0.25, 0.5, 1],
                },
            )
        )
        assert f"about {expected['total_estimated_steps']} steps" in plan.inner_text(), (
            plan.inner_text(),
            expected,
        )
        page.get_by_role("button", name="Create sweep").click()
        page.get_by_role("heading", name="Sweep report").wait_for()
        sweep_id = page.url.rstrip("/").split("/")[-1]
    sweep = team.ok(team.get(f"{SWEEPS}/{sweep_id}"))
    assert sweep["replay_fractions"] == [0, 0.25] and sweep["counts"]["total"] == 4, sweep
    team.ok(team.post(f"{SWEEPS}/{sweep_id}/cancel"))
    assert not errors, f"uncaught errors in the page: {errors}"
