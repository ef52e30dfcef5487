"""The dashboard end to end: headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against the session's real API server and Celery worker on PostgreSQL + Redis.

One user story per test: sign in, upload, plan and submit a tiny job, watch it succeed, read its
charts, download its checkpoint, compare it with a second job; train LoRA adapters chosen in the
form; and cancel a running job from its page. With REPLAYFT_SCREENSHOTS=<dir> the tests save a PNG of each main page there
(docs/screenshots/ holds the committed ones).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from servicekit import JOB_TIMEOUT_S, JOBS, Team, dashboard_browser

UI_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    with dashboard_browser() as browser:
        yield browser


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, accept_downloads=True, base_url=None
    )
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{exc}\n{exc.stack}"))
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() before cancel / delete
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def shot(page, name: str) -> None:
    folder = os.environ.get("REPLAYFT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def points(page, test_id: str) -> int:
    return int(page.get_by_test_id(test_id).get_attribute("data-points") or 0)


def sign_in(page, url: str, key: str) -> None:
    page.goto(f"{url}/jobs")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Fine-tuning jobs").wait_for()


def upload(page, path: Path, purpose: str) -> None:
    page.get_by_label("Purpose").select_option(purpose)
    page.get_by_test_id("file-input").set_input_files(str(path))


def file_row(page, filename: str):
    return page.locator("tr", has_text=filename)


@pytest.fixture
def signed_in(page, team: Team):
    """A page with `team`'s key already in the tab's session storage."""
    page.add_init_script(f"sessionStorage.setItem('replayft.apiKey', {team.key!r})")
    return page


def test_sign_in_upload_train_watch_download_compare(
    service, page, team: Team, target_jsonl, replay_jsonl, tmp_path
):
    url = service.url
    # --- sign in (a wrong key is refused, with the API's message)
    page.goto(f"{url}/files")
    page.get_by_role("heading", name="ReplayFT").wait_for()
    page.get_by_label("API key").fill("rft-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").wait_for()
    page.get_by_label("API key").fill(team.key)
    shot(page, "01-sign-in")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Files").wait_for()  # back where the deep link pointed
    page.get_by_text("No files yet").wait_for()

    # --- files: two good uploads and one with errors on lines 2 and 4
    bad = tmp_path / "broken.jsonl"
    good = '{"prompt": "a", "completion": "b"}\n'
    bad.write_text(good + "this is not json\n" + good + '{"prompt": "a"}\n')
    upload(page, target_jsonl, "fine-tune")
    upload(page, bad, "fine-tune")
    upload(page, replay_jsonl, "replay")
    for name in (target_jsonl.name, replay_jsonl.name):
        file_row(page, name).get_by_text("processed").wait_for()
    file_row(page, bad.name).get_by_text("Line 2:").wait_for()
    listed = file_row(page, bad.name).locator(".bad-lines li").all_inner_texts()
    assert [t.split(":")[0] for t in listed] == ["Line 2", "Line 4"], listed
    assert "missing 'completion'" in listed[1], listed
    file_row(page, bad.name).get_by_text("2 bad lines").wait_for()
    target = next(f for f in team.list_all("/v1/files") if f["filename"] == target_jsonl.name)
    row = file_row(page, target_jsonl.name)
    assert row.locator("td").nth(3).inner_text() == target["stats"]["format"]
    assert row.locator("td").nth(4).inner_text() == str(target["stats"]["examples"])
    shot(page, "02-files")
    page.get_by_role("button", name=f"Delete {bad.name}").click()
    file_row(page, bad.name).wait_for(state="detached")
    assert bad.name not in [f["filename"] for f in team.list_all("/v1/files")]

    # --- new job: the plan picture follows the form; a bad knob shows next to its field
    page.get_by_role("link", name="New job", exact=True).first.click()
    page.get_by_label("Target data (training file)").select_option(
        label=f"{target_jsonl.name} ({target['id']})"
    )
    page.get_by_label("Replay dataset").select_option(index=1)
    page.get_by_label("Epochs").fill("0.6")
    page.get_by_label("Batch size").fill("4")
    page.get_by_label("Sequence length").fill("64")
    page.get_by_label("Replay fraction r").fill("1.5")
    error = page.locator('[data-field-error="fraction"]')
    error.wait_for()
    assert "replay.fraction" in error.inner_text()
    page.get_by_label("Replay fraction r").fill("0.25")
    page.get_by_label("Stage-2 target share a").fill("0.8")  # two stages
    page.get_by_label("Stage-2 duration d").fill("0.7")
    error.wait_for(state="detached")
    total_steps = page.get_by_test_id("plan-total-steps")
    total_steps.wait_for()
    page.wait_for_function(
        "document.querySelector('[data-testid=plan-lr-chart]')?.dataset.points > 0"
    )
    page.get_by_test_id("plan").get_by_text("Stage 2").wait_for()
    shot(page, "03-new-job-plan")
    planned = int(total_steps.inner_text())
    page.get_by_role("button", name="Create job").click()
    page.wait_for_url(f"{url}/jobs/ftjob-*")
    job_id = page.url.rsplit("/", 1)[1]
    team.job_ids.append(job_id)
    job = team.job(job_id)
    assert job["replay"]["fraction"] == 0.25 and job["hyperparameters"]["batch_size"] == 4, job
    assert job["replay"]["target_stage2_allocation"] == 0.8, job["replay"]

    # a second job through the API, for the comparison
    other = team.create_job(
        team.tiny_job(target["id"], job["replay"]["dataset"], fraction=0.5, n_epochs=0.4)
    )

    # --- watch it: live progress, then succeeded, with charts that have data
    page.locator(".badge", has_text="succeeded").first.wait_for(timeout=JOB_TIMEOUT_S * 1000)
    assert page.get_by_test_id("job-step").inner_text() == f"{planned} / {planned}"
    page.wait_for_function(
        f"document.querySelector('[data-testid=chart-train-loss]').dataset.points == {planned}"
    )
    assert points(page, "chart-val-loss") > 0 and points(page, "chart-lr") == planned

    # --- charts over steps share the cursor: hovering the loss chart moves the LR chart's too
    def legend_step(test_id: str) -> str:
        legend = page.get_by_test_id(test_id).locator(".u-legend .u-series").first
        return legend.locator(".u-value").inner_text()

    box = page.get_by_test_id("chart-train-loss").locator(".u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
    hovered = legend_step("chart-train-loss")
    assert hovered.strip().isdigit(), hovered  # a whole step
    assert legend_step("chart-lr") == hovered
    # smoothing and a log y axis, per chart
    loss_chart = page.get_by_test_id("chart-train-loss")
    loss_chart.get_by_label("smooth").check()
    loss_chart.get_by_label("log y").check()
    assert loss_chart.get_attribute("data-smoothed") == "true"
    assert loss_chart.get_attribute("data-log-y") == "true"
    assert points(page, "chart-train-loss") == planned  # same steps, smoothed values
    loss_chart.get_by_label("smooth").uncheck()

    final = team.job(job_id)["summary"]["final_val_loss_target"]
    assert page.get_by_test_id("final-val-loss").inner_text() == f"{final:.4f}"
    page.get_by_test_id("spike").wait_for()
    page.get_by_text("The job has successfully completed.").wait_for()
    for name in ("Pause", "Resume", "Cancel"):
        assert page.get_by_role("button", name=name, exact=True).is_disabled(), name
    shot(page, "05-job-detail")

    # --- download the final checkpoint: a real tar.gz of the Hugging Face folder
    with page.expect_download() as info:
        page.locator("tr[data-checkpoint-id]").first.get_by_role("button", name="Download").click()
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    assert saved.name.endswith(".tar.gz"), saved.name
    with tarfile.open(saved, "r:gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"config.json", "model.safetensors", "meta.json"} <= names, names

    # --- the deep link survives a reload
    page.reload()
    page.locator(".badge", has_text="succeeded").first.wait_for()
    assert points(page, "chart-val-loss") > 0

    # --- jobs list, filtered
    team.wait_job(other["id"], "succeeded")
    page.get_by_role("navigation").get_by_role("link", name="Jobs", exact=True).click()
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    row.wait_for()
    assert f"{final:.4f}" in row.inner_text() and "0.25" in row.inner_text()
    page.get_by_role("button", name="succeeded", exact=True).click()
    page.wait_for_url("**/jobs?status=succeeded")
    page.locator('button[aria-pressed="true"]', has_text="succeeded").wait_for()
    page.mouse.move(0, 0)
    shot(page, "04-jobs")
    page.get_by_role("button", name="cancelled", exact=True).click()
    page.get_by_role("button", name="succeeded", exact=True).click()
    page.get_by_text("No jobs with this status.").wait_for()

    # --- compare the two: overlaid validation curves, final loss against r
    page.goto(f"{url}/compare?jobs={job_id},{other['id']}")
    page.wait_for_function(
        "document.querySelector('[data-testid=compare-scatter]')?.dataset.points == 2"
    )
    assert points(page, "compare-val-target") > 0
    shot(page, "06-compare")

    # --- sign out clears the key
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for()
    assert page.evaluate("sessionStorage.getItem('replayft.apiKey')") is None


def test_lora_job_from_the_form(service, signed_in, team: Team, team_files):
    page = signed_in
    target, _ = team_files
    page.goto(f"{service.url}/jobs/new")
    page.get_by_label("Target data (training file)").select_option(target)
    page.get_by_label("Epochs").fill("0.2")  # ~5 steps
    page.get_by_label("Batch size").fill("4")
    page.get_by_label("Sequence length").fill("64")
    page.get_by_label("Method").select_option("lora")
    # a rank the engine refuses: the plan preview's 400 shows under the rank input, and the
    # same request submitted creates no job
    page.get_by_label("Rank r").fill("0")
    rank = page.locator(".field", has=page.locator("#f-adapter_r"))
    error = rank.locator('[data-field-error="adapter_r"]')
    error.wait_for()
    assert "hyperparameters.adapter.r" in error.inner_text()
    assert page.get_by_label("Rank r").get_attribute("aria-describedby") == "f-adapter_r-error"
    with page.expect_response(
        lambda r: r.url.endswith(JOBS) and r.request.method == "POST"
    ) as sent:
        page.get_by_role("button", name="Create job").click()
    assert sent.value.status == 400 and "/jobs/new" in page.url
    error.wait_for()
    assert team.list_all(JOBS) == []
    page.get_by_label("Rank r").fill("4")
    error.wait_for(state="detached")
    # a layer the model does not have: named under the target-modules input, from the plan's 400
    page.get_by_label("Target modules").fill("q_proj, qkv")
    targets = page.locator('[data-field-error="adapter_target_modules"]')
    targets.wait_for()
    assert "'qkv' names no layer" in targets.inner_text(), targets.inner_text()
    page.get_by_label("Target modules").fill("q_proj, v_proj")
    page.get_by_label("Dropout").fill("0.1")
    targets.wait_for(state="detached")
    page.get_by_test_id("plan-total-steps").wait_for()
    shot(page, "07-new-job-lora")
    page.get_by_role("button", name="Create job").click()
    page.wait_for_url(f"{service.url}/jobs/ftjob-*")
    job_id = page.url.rsplit("/", 1)[1]
    team.job_ids.append(job_id)
    page.locator(".badge", has_text="succeeded").first.wait_for(timeout=JOB_TIMEOUT_S * 1000)
    adapter = team.job(job_id)["hyperparameters"]["adapter"]
    assert adapter["type"] == "lora" and adapter["r"] == 4, adapter
    assert adapter["target_modules"] == ["q_proj", "v_proj"] and adapter["dropout"] == 0.1, adapter
    assert adapter["export"] == "merged", adapter  # the form's default export
    assert page.get_by_test_id("job-method").inner_text() == "LoRA r 4 · merged"


def test_cancel_a_running_job_from_its_page(service, signed_in, team: Team, team_files):
    page = signed_in
    target, replay = team_files
    job = team.create_job(team.tiny_job(target, replay, n_epochs=20))
    page.goto(f"{service.url}/jobs/{job['id']}")
    page.locator(".badge", has_text="running").first.wait_for(timeout=JOB_TIMEOUT_S * 1000)
    assert page.get_by_role("button", name="Resume", exact=True).is_disabled()
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.locator(".badge", has_text="cancelled").first.wait_for()
    assert team.job(job["id"])["status"] == "cancelled"
    for name in ("Pause", "Resume", "Cancel"):
        assert page.get_by_role("button", name=name, exact=True).is_disabled(), name
    page.get_by_text("Job cancelled by request.").wait_for()
