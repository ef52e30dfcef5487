"""Task evals end to end on the real deployment: an `evals` file validated by the files worker, a
short replay job that scores it at step 0, each checkpoint and the end, and the scores in the
metrics endpoint, the events, the checkpoints and the job's summary."""

import json

from servicekit import JOBS, Team


def test_a_job_with_evals_reports_them_everywhere(team: Team, team_files, tmp_path):
    target, replay = team_files
    gen = tmp_path / "gen.jsonl"
    gen.write_text(
        "".join(
            json.dumps({"prompt": f"Question: {a} + {a}?\nAnswer:", "reference": f"#### {2 * a}"})
            + "\n"
            for a in range(3)
        )
    )
    mc = tmp_path / "mc.jsonl"
    mc.write_text(
        json.dumps({"context": "The sky is", "choices": [" blue", " loud"], "label": 0}) + "\n"
    )
    gen_file = team.processed_file(gen, "evals")
    mc_file = team.processed_file(mc, "evals")
    assert gen_file["stats"] == {"format": "eval", "kind": "generation", "examples": 3}

    body = team.tiny_job(target, replay, n_epochs=0.1)
    body["method"]["supervised"]["hyperparameters"]["checkpoint_interval"] = 2
    body["evals"] = [
        {"name": "add", "file": gen_file["id"], "kind": "generation", "scorer": "numeric",
         "max_tokens": 4},
        {"name": "sky", "file": mc_file["id"], "kind": "multiple_choice", "generic": True},
    ]  # fmt: skip
    job = team.wait_job(team.create_job(body)["id"], "succeeded")
    steps = job["progress"]["total_steps"]
    expected = sorted({0, *range(2, steps + 1, 2), steps})

    evals = team.ok(team.get(f"{JOBS}/{job['id']}/metrics", params={"type": "eval"}))["data"]
    scored = [r for r in evals if "eval/add/accuracy" in r]
    assert [r["step"] for r in scored] == expected, evals
    for r in scored:
        assert r["eval/add/total"] == 3 and r["eval/sky/total"] == 1, r
        assert r["eval/add/accuracy"] == r["eval/add/correct"] / 3, r
        assert "eval/sky/accuracy_norm" in r, r

    messages = [e["message"] for e in team.list_all(f"{JOBS}/{job['id']}/events")]
    for step in (0, steps):
        assert any(m.startswith(f"Eval add at step {step}: accuracy ") for m in messages), messages
        assert any(m.startswith(f"Eval sky at step {step}: accuracy ") for m in messages)

    checkpoints = team.list_all(f"{JOBS}/{job['id']}/checkpoints")
    assert checkpoints and all("eval/add/accuracy" in c["metrics"] for c in checkpoints)

    summary = job["summary"]
    first, last = scored[0], scored[-1]
    assert summary["initial_val_loss_target"] == evals[0]["val_loss_target"], summary
    assert summary["target_gain"] is not None and summary["generic_change"] is not None
    sky = summary["evals"]["sky"]
    assert sky["generic"] is True and sky["initial_accuracy"] == first["eval/sky/accuracy"]
    assert summary["evals"]["add"]["final_accuracy"] == last["eval/add/accuracy"], summary
