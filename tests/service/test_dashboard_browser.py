"""The dashboard end to end: headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against the session's real API server and Celery worker on PostgreSQL + Redis.

One user story per test: sign in, upload, plan and submit a tiny job (errors in the form's words,
the last good plan kept, a short WSD plan that decays), watch it succeed, read its charts and what
it ran with, download its checkpoint through a keyless link, clone it, compare it with a second
job; train LoRA adapters chosen in the form; and, on a running job's page, see the header move,
pause (at once "Pausing…"), resume and cancel it; in the Playground, stream two presets' answers
to one prompt side by side from the real serving process, see one model refuse and stop the other;
add a webhook (its secret shown once), see a cancelled job's event delivered and redeliver it. With REPLAYFT_SCREENSHOTS=<dir> the tests save a
PNG of each main page there (docs/screenshots/ holds the committed ones).
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from servicekit import JOB_TIMEOUT_S, JOBS, TINY, Team, dashboard_browser, free_port
from webhook_receiver import Receiver

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
    context.grant_permissions(["clipboard-read", "clipboard-write"])  # the Copy buttons
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


def text_of(page, test_id: str) -> str:
    return page.get_by_test_id(test_id).inner_text()


@pytest.fixture
def signed_in(page, team: Team):
    """A page with `team`'s key already in the tab's session storage."""
    page.add_init_script(f"sessionStorage.setItem('replayft.apiKey', {team.key!r})")
    return page


def test_sign_in_upload_train_watch_download_compare(
    service, page, team: Team, target_jsonl, replay_jsonl, tmp_path
):
    url = service.url
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
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
    # a preview of its first rows, read without downloading the whole file
    page.get_by_role("button", name=f"Preview {target_jsonl.name}").click()
    preview = page.get_by_test_id(f"preview-{target['id']}")
    first = json.loads(target_jsonl.read_text().splitlines()[0])
    first_row = preview.locator("li").first
    first_row.get_by_text(f"prompt: {first['prompt'][:60]}").wait_for()
    assert preview.locator("li").count() == 5
    shot(page, "02-files")
    page.get_by_role("button", name=f"Preview {target_jsonl.name}").click()  # hide it again
    preview.wait_for(state="detached")
    # Download: the browser's own download from a signed link, the file as uploaded
    with page.expect_download() as upload_download:
        page.get_by_role("button", name=f"Download {target_jsonl.name}").click()
    assert "token=" in upload_download.value.url and team.key not in upload_download.value.url
    assert upload_download.value.suggested_filename == target_jsonl.name
    saved_upload = tmp_path / "downloaded-upload.jsonl"
    upload_download.value.save_as(saved_upload)
    assert saved_upload.read_bytes() == target_jsonl.read_bytes()
    page.get_by_role("button", name=f"Delete {bad.name}").click()
    file_row(page, bad.name).wait_for(state="detached")
    assert bad.name not in [f["filename"] for f in team.list_all("/v1/files")]

    # --- new job: the plan picture follows the form; a bad knob shows next to its field
    page.get_by_role("link", name="New job", exact=True).first.click()
    # files of one name are told apart by size and upload time
    choice = page.locator(f'#f-training_file option[value="{target["id"]}"]')
    assert choice.inner_text().startswith(f"{target_jsonl.name} · "), choice.inner_text()
    assert "B · " in choice.inner_text(), choice.inner_text()
    page.get_by_label("Target data (training file)").select_option(target["id"])
    page.get_by_label("Replay dataset").select_option(index=1)
    page.get_by_label("Epochs").fill("0.2")
    page.get_by_label("Batch size").fill("4")
    page.get_by_label("Sequence length").fill("64")
    page.get_by_label("Model suffix").fill("browser-r25")
    # a 15-step WSD plan decays: its last step trains below the peak LR
    page.get_by_label("Total steps").fill("15")
    total_steps = page.get_by_test_id("plan-total-steps")
    page.wait_for_function(
        "document.querySelector('[data-testid=plan-total-steps]')?.textContent === '15'"
    )
    peak, final_lr = text_of(page, "plan-peak-lr"), text_of(page, "plan-final-lr")
    assert float(final_lr) < float(peak), (final_lr, peak)
    assert text_of(page, "plan-run-time") == "—"  # no finished job on this model yet
    page.get_by_label("Total steps").fill("")
    page.get_by_label("Epochs").fill("0.6")
    page.wait_for_function(
        "document.querySelector('[data-testid=plan-total-steps]')?.textContent !== '15'"
    )
    good_plan = total_steps.inner_text()
    # errors in the form's words; the last good plan stays, marked
    page.get_by_label("Replay fraction r").fill("1.5")
    error = page.locator('[data-field-error="fraction"]')
    error.wait_for()
    assert error.inner_text().startswith("Must be in [0, 1)"), error.inner_text()  # no field path
    page.get_by_test_id("plan-stale").wait_for()
    assert total_steps.inner_text() == good_plan
    page.get_by_label("Replay fraction r").fill("0.25")
    page.get_by_label("Stage-2 target share a").fill("0.8")  # two stages: d is needed
    needed = page.locator('[data-field-error="stage2_duration"]')
    needed.wait_for()
    assert needed.inner_text() == (
        "Needed when “Stage-2 target share a” is below 1, unless “Total steps” is set."
    ), needed.inner_text()
    page.get_by_label("Stage-2 duration d").fill("0.7")
    needed.wait_for(state="detached")
    page.get_by_test_id("plan-stale").wait_for(state="detached")
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
    assert job["suffix"] == "browser-r25", job

    # a second job through the API, for the comparison; it carries a generic multiple-choice
    # eval, for its Evals panel and the compare page's trade-off plot
    sky = tmp_path / "sky.jsonl"
    questions = [("The sky is", [" blue", " loud"]), ("Two and two make", [" four", " green"])]
    sky.write_text(
        "".join(json.dumps({"context": c, "choices": o, "label": 0}) + "\n" for c, o in questions)
    )
    other_body = team.tiny_job(target["id"], job["replay"]["dataset"], fraction=0.5, n_epochs=0.4)
    other_body["evals"] = [
        {"name": "sky", "file": team.processed_file(sky, "evals")["id"],
         "kind": "multiple_choice", "generic": True},
    ]  # fmt: skip
    other = team.create_job(other_body)

    # --- watch it: live progress, then succeeded, with charts that have data
    page.locator(".badge", has_text="succeeded").first.wait_for(timeout=JOB_TIMEOUT_S * 1000)
    assert page.get_by_test_id("job-step").inner_text() == f"{planned} / {planned}"
    page.wait_for_function(
        f"document.querySelector('[data-testid=chart-train-loss]').dataset.points == {planned}"
    )
    assert points(page, "chart-val-loss") > 0 and points(page, "chart-lr") == planned

    # --- the job's charts share the cursor: hovering the loss chart moves the LR chart's too
    def legend_step(test_id: str) -> str:
        legend = page.get_by_test_id(test_id).locator(".u-legend .u-series").first
        return legend.locator(".u-value").inner_text()

    box = page.get_by_test_id("chart-train-loss").locator(".u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
    hovered = legend_step("chart-train-loss")
    assert hovered.strip().isdigit(), hovered  # a whole step
    assert legend_step("chart-lr") == hovered
    page.get_by_label("Smoothing").select_option("0.6")
    page.get_by_label("log-scale loss").check()
    assert points(page, "chart-train-loss") == planned  # same steps, smoothed values
    page.get_by_label("Smoothing").select_option("0")
    page.get_by_label("log-scale loss").uncheck()

    final = team.job(job_id)["summary"]["final_val_loss_target"]
    assert page.get_by_test_id("final-val-loss").inner_text() == f"{final:.4f}"
    page.get_by_test_id("spike").wait_for()
    page.get_by_text("The job has successfully completed.").wait_for()
    for name in ("Pause", "Resume", "Cancel"):
        assert page.get_by_role("button", name=name, exact=True).is_disabled(), name
    # what it ran with, by file name; the model, copied; how to use it; the tab named after it
    assert page.title() == f"browser-r25 · {job_id} (succeeded) · ReplayFT", page.title()
    assert text_of(page, "setting-training-file").startswith(target_jsonl.name)
    assert text_of(page, "setting-replay").startswith(replay_jsonl.name)
    assert text_of(page, "setting-validation-file") == "held out from the training file"
    assert text_of(page, "setting-rad") == "0.25 · 0.8 · 0.7"
    assert (text_of(page, "setting-epochs"), text_of(page, "setting-batch-size")) == ("0.6", "4")
    assert (text_of(page, "setting-seq-len"), text_of(page, "setting-seed")) == ("64", "0")
    assert (
        text_of(page, "setting-lr") == "3e-4" and text_of(page, "setting-suffix") == "browser-r25"
    )
    assert text_of(page, "setting-schedule").startswith("WSD ("), text_of(page, "setting-schedule")
    model = team.job(job_id)["fine_tuned_model"]
    assert text_of(page, "fine-tuned-model") == model
    page.get_by_role("button", name="Copy model id").click()
    page.get_by_role("button", name="Copy model id").get_by_text("Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == model
    assert f'from_pretrained("{job_id}-step-{planned}")' in text_of(page, "use-it")
    shot(page, "05-job-detail")

    # --- download the final checkpoint: a real tar.gz of the Hugging Face folder, saved by the
    # browser's own download from a signed link (the key is in no URL the page ever asked for)
    with page.expect_download() as info:
        page.locator("tr[data-checkpoint-id]").first.get_by_role("button", name="Download").click()
    assert "token=" in info.value.url and team.key not in info.value.url, info.value.url
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    assert saved.name == f"{job_id}-step-{planned}.tar.gz", saved.name
    with tarfile.open(saved, "r:gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"config.json", "model.safetensors", "meta.json"} <= names, names
    # the checkpoint's event offers the same download
    with page.expect_download() as again:
        page.get_by_role("button", name=f"Download the step {planned} checkpoint").click()
    assert again.value.suggested_filename == saved.name
    assert not [u for u in requested if team.key in u]

    # --- the deep link survives a reload
    page.reload()
    page.locator(".badge", has_text="succeeded").first.wait_for()
    assert points(page, "chart-val-loss") > 0

    # --- "Try it": the Playground with the base model and the fine-tuned one picked
    page.get_by_role("link", name="Try it").click()
    page.get_by_role("heading", name="Playground").wait_for()
    page.wait_for_function(f"document.querySelector('#model-b')?.value === {json.dumps(model)}")
    assert page.get_by_label("Model A").input_value() == TINY
    page.go_back()
    page.locator(".badge", has_text="succeeded").first.wait_for()

    # --- clone: the form filled in with what it ran with plans the same run
    page.get_by_role("link", name="Clone").click()
    page.wait_for_url(f"{url}/jobs/new?clone={job_id}")
    page.get_by_test_id("clone-of").wait_for()
    page.wait_for_function(
        f"document.querySelector('[data-testid=plan-total-steps]')?.textContent === '{planned}'"
    )
    for label, value in [
        ("Replay fraction r", "0.25"),
        ("Stage-2 target share a", "0.8"),
        ("Stage-2 duration d", "0.7"),
        ("Epochs", "0.6"),
        ("Batch size", "4"),
        ("Model suffix", "browser-r25"),
    ]:
        assert page.get_by_label(label).input_value() == value, label
    # the plan now has a finished run on this model to time it by
    assert text_of(page, "plan-run-time").startswith("≈ "), text_of(page, "plan-run-time")
    # timed by the newest succeeded job on this model: this one, or the comparison job when it
    # has finished too
    basis = text_of(page, "plan-run-time-basis")
    assert job_id in basis or other["id"] in basis, basis

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
    assert points(page, "compare-val-target") > 0 and points(page, "compare-train-target") > 0
    # what differs between the two, and nothing they share
    differs = page.get_by_test_id("compare-differences")
    row = differs.locator('tr[data-setting="replay r"]').locator("td")
    assert row.all_inner_texts() == ["replay r", "0.25", "0.5"], row.all_inner_texts()
    assert differs.locator('tr[data-setting="model"]').count() == 0
    # on tokens seen, the curves end where each run's last evaluation was (4 x 64 tokens a step)
    page.get_by_role("button", name="tokens seen").click()
    page.wait_for_url("**x=tokens**")
    last_eval = max(
        r["step"]
        for jid in (job_id, other["id"])
        for r in team.metrics(jid)
        if r.get("val_loss_target") is not None
    )
    page.wait_for_function(
        "document.querySelector('[data-testid=compare-val-target]').dataset.xLast == "
        f"{last_eval * 4 * 64}"
    )
    shot(page, "06-compare")
    # the trade-off: each run's target metric against its generic one; the generic eval offered
    page.wait_for_function(
        "document.querySelector('[data-testid=compare-tradeoff]')?.dataset.points > 0"
    )
    page.get_by_label("Trade-off y").select_option("eval:sky")
    page.wait_for_url("**ty=eval%3Asky**")
    page.wait_for_function(
        "document.querySelector('[data-testid=compare-tradeoff]')?.dataset.points == 1"
    )

    # --- the job with an eval: its Evals panel, before and after, and its accuracy chart
    summary = team.job(other["id"])["summary"]
    page.goto(f"{url}/jobs/{other['id']}")
    panel = page.get_by_test_id("evals-panel")
    panel.locator('tr[data-eval="sky"]').wait_for()
    sky_row = summary["evals"]["sky"]
    accuracy = text_of(page, "eval-accuracy-sky")
    percent = lambda v: f"{round(v * 100, 1):g}%"  # noqa: E731
    expected = f"{percent(sky_row['initial_accuracy'])} → {percent(sky_row['final_accuracy'])}"
    assert accuracy == expected, (accuracy, sky_row)
    assert "multiple choice" in panel.inner_text() and "generic" in panel.inner_text()
    assert points(page, "chart-evals") >= 2  # step 0 and the end, at least
    shot(page, "07-job-evals")
    gain = text_of(page, "target-gain")
    assert float(gain) == pytest.approx(summary["target_gain"], abs=1e-4), gain
    # the job without evals has no panel, but its target gain all the same
    page.goto(f"{url}/jobs/{job_id}")
    page.get_by_test_id("target-gain").wait_for()
    assert page.get_by_test_id("evals-panel").count() == 0

    # --- a job that is not there: a way back
    page.goto(f"{url}/jobs/ftjob-does-not-exist")
    page.get_by_role("alert").wait_for()
    page.get_by_role("link", name="Back to all jobs").click()
    page.get_by_role("heading", name="Fine-tuning jobs").wait_for()

    # --- at 800 px the jobs table keeps every column within reach
    page.set_viewport_size({"width": 800, "height": 900})
    created = page.get_by_role("columnheader", name="Created")
    created.scroll_into_view_if_needed()
    box = created.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 800, box
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    page.set_viewport_size({"width": 1440, "height": 900})

    # --- Usage: the team's totals over the last 30 days, as GET /v1/usage counts them
    page.get_by_role("navigation").get_by_role("link", name="Usage").click()
    row = page.get_by_role("table", name="Usage by team").locator(f"tr[data-team='{team.name}']")
    row.wait_for()
    days = team.ok(team.get("/v1/usage"))["data"]
    cells = row.locator("td").all_inner_texts()
    assert cells[1:3] == [
        str(sum(d.get("jobs_created", 0) for d in days)),
        str(sum(d.get("jobs_succeeded", 0) for d in days)),
    ], (cells, days)
    assert page.get_by_role("table", name="Team limits").count() == 0  # not an admin key

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
    assert error.inner_text().startswith("Must be") and "hyperparameters" not in error.inner_text()
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


def test_pause_resume_and_cancel_a_running_job_from_its_page(
    service, signed_in, team: Team, team_files
):
    page = signed_in
    target, replay = team_files
    body = team.tiny_job(target, replay, n_epochs=20)
    hp = body["method"]["supervised"]["hyperparameters"]
    hp.update(checkpoint_interval=10, keep_checkpoints=1)  # older checkpoints are pruned
    job = team.create_job(body)
    page.goto(f"{service.url}/jobs/{job['id']}")
    page.locator(".badge", has_text="running").first.wait_for(timeout=JOB_TIMEOUT_S * 1000)
    assert page.title() == f"{job['id']} (running) · ReplayFT", page.title()
    assert page.get_by_role("button", name="Resume", exact=True).is_disabled()
    # the header follows the run while the status stays `running`
    first = text_of(page, "job-step")
    page.wait_for_function(
        f"document.querySelector('[data-testid=job-step]').textContent !== {first!r}"
    )
    # a pruned checkpoint's event no longer offers it; the newest one's does
    page.locator("[data-removed-step]").first.wait_for(timeout=JOB_TIMEOUT_S * 1000)
    removed = int(page.locator("[data-removed-step]").first.get_attribute("data-removed-step"))
    # the job trains on meanwhile, so the newest checkpoint may be replaced (and pruned) between
    # listing it and the page showing it: look again until the page offers the newest one
    deadline = time.monotonic() + 60
    while True:
        kept = [c["step_number"] for c in team.list_all(f"{JOBS}/{job['id']}/checkpoints")]
        assert removed not in kept and kept and max(kept) > removed, (removed, kept)
        button = page.get_by_role("button", name=f"Download the step {max(kept)} checkpoint")
        try:
            button.wait_for(timeout=5000)
            break
        except PlaywrightTimeout:
            assert time.monotonic() < deadline, f"no download button for step {max(kept)}"

    # pause: "Pausing…" at once, the button disabled until the worker has checkpointed
    page.get_by_role("button", name="Pause", exact=True).click()
    # (one look for both: the button may turn back into "Pause" a moment later, once paused)
    page.get_by_role("button", name="Pausing…", exact=True, disabled=True).wait_for()
    page.locator(".badge", has_text="paused").first.wait_for()
    assert team.job(job["id"])["status"] == "paused"
    page.get_by_role("button", name="Resume", exact=True).click()
    page.locator(".badge", has_text="running").first.wait_for(timeout=JOB_TIMEOUT_S * 1000)
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.locator(".badge", has_text="cancelled").first.wait_for()
    assert team.job(job["id"])["status"] == "cancelled"
    for name in ("Pause", "Resume", "Cancel"):
        assert page.get_by_role("button", name=name, exact=True).is_disabled(), name
    page.get_by_text("Job cancelled by request.").wait_for()


def test_playground_streams_two_models_side_by_side(service, serving, signed_in, team: Team):
    """Presets only (no training): the page sends one streamed chat completion per model to the
    real API and serving process and shows each answer as it arrives."""
    page = signed_in
    small = "replayft/llama-small"
    streamed: list[dict] = []
    page.on(
        "request",
        lambda r: r.url.endswith("/v1/chat/completions") and streamed.append(r.post_data_json),
    )
    page.goto(f"{service.url}/playground?a={TINY}&b={small}")
    page.get_by_role("heading", name="Playground").wait_for()
    page.wait_for_function(f"document.querySelector('#model-b')?.value === '{small}'")
    assert page.get_by_label("Model A").input_value() == TINY
    page.get_by_label("Prompt", exact=True).fill("Say hello")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_label("Temperature").fill("0")
    page.get_by_role("button", name="Send").click()
    answers = {side: page.get_by_test_id(f"answer-{side}") for side in "ab"}
    for side, model in (("a", TINY), ("b", small)):
        page.locator(f'[data-testid="answer-{side}"][data-state="done"]').wait_for()
        # what streamed is what the API answers the same greedy request
        body = {"model": model, "messages": [{"role": "user", "content": "Say hello"}]}
        body |= {"max_tokens": 12, "temperature": 0}
        whole = team.ok(team.post("/v1/chat/completions", json=body))
        [choice] = whole["choices"]
        shown = answers[side].locator("pre.answer").text_content()
        assert shown == choice["message"]["content"] and shown, (side, shown)
        reason = {"length": "max tokens reached"}.get(choice["finish_reason"], "stop")
        tokens = whole["usage"]["completion_tokens"]
        status = text_of(page, f"answer-{side}-status")
        assert status.startswith(f"{tokens} tokens · {reason} · first token "), status
    assert [(b["model"], b["stream"], b["max_tokens"]) for b in streamed] == [
        (TINY, True, 12),
        (small, True, 12),
    ], streamed
    shot(page, "07-playground")

    # more tokens than the tiny preset's 1024-token context: its side shows the API's refusal and
    # marks the input; the small preset (2048) streams until Stop hangs up on it
    before = service.inference_stats()["cancelled"]
    page.get_by_label("Max tokens").fill("1500")
    page.get_by_role("button", name="Send").click()
    refusal = answers["a"].get_by_role("alert")
    refusal.wait_for()
    assert refusal.inner_text().startswith("max_tokens is 1500"), refusal.inner_text()
    assert "has-error" in page.locator(".field", has=page.get_by_label("Max tokens")).get_attribute(
        "class"
    )
    page.locator('[data-testid="answer-b"][data-state="streaming"]').wait_for()
    page.get_by_role("button", name="Stop").click()
    page.locator('[data-testid="answer-b"][data-state="stopped"]').wait_for()
    assert text_of(page, "answer-b-status") == "Stopped."
    deadline = time.monotonic() + 30
    while service.inference_stats()["cancelled"] == before:  # the server stopped generating
        assert time.monotonic() < deadline, service.inference_stats()
        time.sleep(0.2)

    # a model the team cannot use (a link from elsewhere): said so on its side
    page.goto(f"{service.url}/playground?a={TINY}&b=ft:{TINY}:someone-else::ftjob-x")
    page.locator("#model-b option", has_text="(not in your models)").wait_for(state="attached")
    page.get_by_label("Prompt", exact=True).fill("Hi")
    page.get_by_role("button", name="Send").click()
    answers["b"].get_by_role("alert").get_by_text(
        "does not exist or you do not have access"
    ).wait_for()
    page.locator('[data-testid="answer-a"][data-state="done"]').wait_for()


def test_webhooks_page_creates_shows_the_secret_once_and_redelivers(
    service, signed_in, team: Team, team_files
):
    page = signed_in
    receiver = Receiver(free_port(), secret="")
    page.goto(f"{service.url}/settings/webhooks")
    page.get_by_role("heading", name="Webhooks").wait_for()
    page.get_by_text("No webhooks yet").wait_for()

    # a URL the API refuses: its message under the URL field
    page.get_by_label("Endpoint URL").fill("ftp://example.com/hook")
    page.get_by_role("button", name="Add webhook").click()
    page.locator(".field.has-error", has_text="must start with http").wait_for()

    page.get_by_label("Endpoint URL").fill(receiver.url)
    page.get_by_label("Description").fill("browser test")
    page.get_by_role("button", name="Add webhook").click()
    secret = page.get_by_test_id("webhook-secret").locator("code").inner_text().strip()
    assert secret.startswith("whsec_"), secret
    receiver.secret = secret
    receiver.start()
    try:
        job = team.create_job(team.tiny_job(team_files[0]))
        team.ok(team.post(f"{JOBS}/{job['id']}/cancel"))
        row = page.locator("tr", has_text=receiver.url)
        row.get_by_role("button", name="Deliveries").click()
        log = page.locator("tr[data-delivery-id]", has_text="fine_tuning.job.cancelled")
        log.locator(".badge", has_text="delivered").wait_for(timeout=60_000)
        [event_id] = receiver.ids()
        log.get_by_role("button", name=f"Redeliver {event_id}").click()
        deadline = time.monotonic() + 60
        while receiver.ids()[event_id] < 2:  # the same event id, posted again
            assert time.monotonic() < deadline, receiver.received
            time.sleep(0.2)
        shot(page, "webhooks")
    finally:
        receiver.stop()
    assert receiver.refused == []

    page.reload()  # the secret was shown once: it is in no answer the page can fetch again
    row = page.locator("tr", has_text=receiver.url)
    row.wait_for()
    assert secret not in page.content()

    # Disable, then Enable: the API's PATCH, shown on the row
    [hook] = team.ok(team.get("/v1/webhooks"))["data"]
    row.get_by_role("button", name=f"Disable webhook {receiver.url}").click()
    row.get_by_text("· disabled").wait_for()
    assert team.ok(team.get(f"/v1/webhooks/{hook['id']}"))["enabled"] is False
    row.get_by_role("button", name=f"Enable webhook {receiver.url}").click()
    row.get_by_role("button", name=f"Disable webhook {receiver.url}").wait_for()
    assert team.ok(team.get(f"/v1/webhooks/{hook['id']}"))["enabled"] is True
