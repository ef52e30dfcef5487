"""Task evals (replay_engine/evals.py): scorers against hand-worked answers, eval files read and
checked line by line, multiple-choice log-likelihoods against a plain forward pass, greedy
answers against the serving decoder, and a short run that scores at step 0, each checkpoint and
the end."""

import json

import pytest
import torch

from replay_engine import evals, generation
from replay_engine.data import DataFormatError, Problems
from replay_engine.models import load_model, load_tokenizer
from replay_engine.spec import EvalSpec, SpecError, parse_spec
from replay_engine.trainer import train

TINY = "replayft/llama-tiny"


# ---------------------------------------------------------------------------- scorers
@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("  Paris\n", "Paris", True),
        ("The  capital\tis Paris", "The capital is Paris", True),
        ("paris", "Paris", False),  # case counts
        ("Paris.", "Paris", False),
    ],
)
def test_exact_match(answer, reference, expected):
    assert evals.exact_match(answer, reference) is expected


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("I think it is Paris, France.", "Paris", True),
        ("New\n  York city", "New York", True),
        ("Lyon", "Paris", False),
    ],
)
def test_contains(answer, reference, expected):
    assert evals.contains(answer, reference) is expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", 72.0),
        ("The total is 1,234,567 dollars.", 1234567.0),
        ("It drops to -3.5 degrees.", -3.5),
        ("Answer: 42.", 42.0),  # the full stop ends the sentence, not a decimal
        ("between 10 and 20, so 15", 15.0),
        ("no digits here", None),
        ("$0.50 each", 0.5),
    ],
)
def test_last_number(text, value):
    assert evals.last_number(text) == value


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("She has 5 + 7 = 12 apples. #### 12", "He ... <<5+7=12>>12\n#### 12", True),
        ("So the answer is 1,200.", "#### 1200", True),
        ("So the answer is 12.0", "#### 12", True),
        ("It is 12 then 13", "#### 12", False),  # the LAST number counts
        ("I do not know", "#### 12", False),
    ],
)
def test_numeric(answer, reference, expected):
    assert evals.numeric(answer, reference) is expected


@pytest.mark.parametrize(
    ("answer", "pattern", "reference", "expected"),
    [
        ("The answer is (B) because", r"\(([A-D])\)", "B", True),
        ("The answer is (C)", r"\(([A-D])\)", "B", False),
        ("choice: B", r"[A-D]$", "B", True),  # no group: the whole match
        ("nothing matches", r"\(([A-D])\)", "B", False),
        ("first (A) then (B)", r"\(([A-D])\)", "A", True),  # the first match
    ],
)
def test_regex(answer, pattern, reference, expected):
    assert evals.regex(answer, reference, pattern) is expected
    assert evals.score("regex", answer, reference, pattern) is expected


def test_metrics_names_and_values():
    result = evals.EvalResult(correct=3, total=4, correct_norm=1)
    assert result.metrics("mc") == {
        "eval/mc/accuracy": 0.75,
        "eval/mc/accuracy_norm": 0.25,
        "eval/mc/correct": 3,
        "eval/mc/total": 4,
    }
    assert "eval/gen/accuracy_norm" not in evals.EvalResult(1, 2).metrics("gen")


# ---------------------------------------------------------------------------- files
def write_lines(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_every_bad_line_is_reported(tmp_path):
    path = write_lines(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "2+2=", "reference": "4"},
            {"prompt": "3+3="},  # 2: no reference
            "not json",  # 3
            {"context": "x", "choices": ["a", "b"], "label": 0},  # 4: the other kind
            {"messages": [{"role": "user", "content": "hi"}], "reference": "hello"},
            {"prompt": 5, "reference": "5"},  # 6
            {"messages": [{"role": "assistant", "content": "hi"}], "reference": "x"},  # 7
        ],
    )
    problems = Problems()
    stats = evals.eval_file_stats(path, problems)
    assert stats == {"format": "eval", "kind": "generation", "examples": 2}
    assert [e.line for e in problems.first] == [2, 3, 4, 6, 7]
    summary = problems.summary()
    assert summary.startswith("5 bad lines: line 2: missing 'reference'; line 3: invalid JSON")
    assert "line 4: this line is a multiple_choice record but the file is generation" in summary
    assert "line 6: 'prompt' must be a string, got a number" in summary


def test_multiple_choice_records_are_checked(tmp_path):
    path = write_lines(
        tmp_path / "mc.jsonl",
        [
            {"context": "x", "choices": ["a", "b"], "label": 1},
            {"context": "x", "choices": ["a"], "label": 0},
            {"context": "x", "choices": ["a", "b"], "label": 2},
            {"context": "x", "choices": ["a", "b"], "label": True},
            {"context": "x", "choices": ["a", ""], "label": 0},
        ],
    )
    problems = Problems()
    assert evals.eval_file_stats(path, problems)["kind"] == "multiple_choice"
    reasons = [e.reason for e in problems.first]
    assert reasons == [
        "'choices' must be a list of at least 2 strings",
        "'label' must be an index into 'choices' (0..1)",
        "'label' must be an index into 'choices' (0..1)",
        "choices[1] must be a non-empty string",
    ]
    with pytest.raises(DataFormatError, match=":2: 'choices'"):
        evals.load_eval_set(path, "multiple_choice")


def test_load_eval_set_limit_and_kind(tmp_path):
    path = write_lines(
        tmp_path / "g.jsonl", [{"prompt": f"{i}?", "reference": str(i)} for i in range(5)]
    )
    assert [r.reference for r in evals.load_eval_set(path, "generation", limit=3)] == [
        "0",
        "1",
        "2",
    ]
    with pytest.raises(evals.WrongKind, match="holds generation records, not multiple_choice"):
        evals.load_eval_set(path, "multiple_choice")


def test_preparing_a_run_reads_its_eval_sets_and_names_a_wrong_kind(tmp_path, cache_dir):
    from replay_engine.trainer import prepare

    target = write_lines(tmp_path / "t.jsonl", [{"prompt": "a", "completion": " b"}] * 4)
    mc = write_lines(tmp_path / "mc.jsonl", [{"context": "c", "choices": ["a", "b"], "label": 1}])
    base = {"model": TINY, "training_file": str(target), "seq_len": 16, "batch_size": 1}
    base["cache_dir"] = str(cache_dir)
    good = {"name": "m", "file": str(mc), "kind": "multiple_choice"}
    [(config, records)] = prepare(parse_spec({**base, "evals": [good]})).eval_sets
    assert config.name == "m" and records == [evals.ChoiceRecord("c", ["a", "b"], 1)]
    with pytest.raises(SpecError) as info:
        prepare(parse_spec({**base, "evals": [good, {**good, "name": "g", "kind": "generation"}]}))
    assert info.value.errors == [
        ("evals[1].kind", "the file holds multiple_choice records, not generation")
    ]


def test_spec_refuses_bad_combinations():
    base = {"model": TINY, "training_file": ["t.jsonl"]}

    def errors(*specs):
        with pytest.raises(SpecError) as info:
            parse_spec({**base, "evals": list(specs)})
        return info.value.errors

    gen = {"name": "g", "file": "g.jsonl", "kind": "generation"}
    mc = {"name": "m", "file": "m.jsonl", "kind": "multiple_choice"}
    assert errors({**mc, "scorer": "exact_match"}) == [
        ("evals[0].scorer", "only for generation evals")
    ]
    assert errors(gen, {**gen, "name": "h", "scorer": "regex"}) == [
        ("evals[1].pattern", "the regex scorer needs a pattern")
    ]
    assert errors({**gen, "scorer": "numeric", "pattern": "x"})[0][0] == "evals[0].pattern"
    assert errors(gen, gen)[0] == ("evals[1].name", "'g' names an earlier eval too")
    assert errors({**gen, "name": "a/b"})[0][0] == "evals[0].name"
    assert errors({**gen, "max_tokens": 0})[0][0] == "evals[0].max_tokens"
    assert errors({**gen, "kind": "essay"})[0][0] == "evals[0].kind"
    fsdp = {"distributed": {"strategy": "fsdp", "gpus_per_node": 2}}
    with pytest.raises(SpecError, match="evals: not supported with distributed.strategy fsdp"):
        parse_spec({**base, **fsdp, "evals": [gen]})
    assert parse_spec({**base, "evals": [gen, mc]}).evals[0].max_tokens == 256
    lm = {"name": "h", "kind": "lm_eval", "task": "hellaswag"}
    assert parse_spec({**base, "evals": [lm]}).evals[0].task == "hellaswag"
    assert errors({**lm, "task": None}) == [
        ("evals[0].task", "an lm_eval eval names the harness's task")
    ]
    assert errors({**lm, "file": "x.jsonl"})[0][0] == "evals[0].file"
    assert errors({**lm, "scorer": "numeric"})[0][0] == "evals[0].scorer"
    assert errors({**gen, "file": None}) == [("evals[0].file", "a generation eval needs its file")]
    assert errors({**mc, "task": "hellaswag"})[0][0] == "evals[0].task"


# ---------------------------------------------------------------------------- on the tiny model
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = load_model(TINY, seed=0).eval()
    return model, load_tokenizer(TINY)


def test_choice_logprobs_match_a_plain_forward_pass(tiny):
    model, tokenizer = tiny
    records = [
        evals.ChoiceRecord("The cat sat on the", [" mat", " moon rocks", " a"], 0),
        evals.ChoiceRecord("Two plus two is", [" four", " five"], 1),
        evals.ChoiceRecord(
            "A much longer context, so that rows of a batch differ", [" x", " y"], 0
        ),
    ]
    got = evals.choice_logprobs(model, tokenizer, records, torch.device("cpu"), batch_size=3)

    # by hand: one row at a time, no padding, the choice tokens' log-probabilities summed
    for record, scores in zip(records, got, strict=True):
        context = tokenizer(record.context, add_special_tokens=True)["input_ids"]
        for choice, score in zip(record.choices, scores, strict=True):
            tail = tokenizer(choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([context + tail])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            expected = sum(float(logp[len(context) + k - 1, tail[k]]) for k in range(len(tail)))
            assert score == pytest.approx(expected, abs=1e-4)

    result = evals.score_choices(records, got)
    best = [max(range(len(s)), key=lambda i: s[i]) for s in got]
    norm = [
        max(range(len(s)), key=lambda i, s=s, r=r: s[i] / len(r.choices[i]))
        for s, r in zip(got, records, strict=True)
    ]
    assert result.total == 3
    assert result.correct == sum(b == r.label for b, r in zip(best, records, strict=True))
    assert result.correct_norm == sum(b == r.label for b, r in zip(norm, records, strict=True))


def test_greedy_answers_are_the_serving_decoders(tiny):
    """Batched eval answers equal one-at-a-time greedy generation (generation.generate)."""
    model, tokenizer = tiny
    records = [
        evals.GenerationRecord(reference="4", prompt="Two plus two is"),
        evals.GenerationRecord(
            reference="x", messages=[{"role": "user", "content": "Say something long please"}]
        ),
        evals.GenerationRecord(reference="y", prompt="Once"),
    ]
    loaded = generation.for_model("tiny", model, tokenizer, torch.device("cpu"))
    answers = evals.generate_answers(loaded, records, max_tokens=6, batch_size=3)
    for record, answer in zip(records, answers, strict=True):
        if record.messages:
            ids, stop = generation.encode_chat(loaded, record.messages), loaded.chat_stop
        else:
            ids, stop = generation.encode_text(loaded, record.prompt), ()
        params = generation.SamplingParams(max_tokens=6, temperature=0.0, stop=stop)
        [choice] = generation.generate(loaded, ids, params)
        assert answer == choice.text
    # the scorer sees those answers: a reference equal to an answer scores 1
    config = EvalSpec(name="g", file="-", kind="generation", max_tokens=6)
    same = [evals.GenerationRecord(reference=answers[0], prompt="Two plus two is")]
    assert evals.run_eval(config, same, model, tokenizer, torch.device("cpu")).correct == 1


# ---------------------------------------------------------------------------- in a run
def test_run_scores_evals_at_step_0_checkpoints_and_end(
    tmp_path, cache_dir, gsm8k_file, shared_data
):
    target = gsm8k_file(tmp_path / "target.jsonl", n=24)
    c4 = (shared_data / "c4_sample" / "c4_demo.jsonl").read_text().splitlines()[:30]
    generic = write_lines(tmp_path / "generic.jsonl", c4)
    gen = write_lines(
        tmp_path / "gen.jsonl",
        [{"prompt": "Question: 1+1?\nAnswer:", "reference": "#### 2"}] * 3,
    )
    mc = write_lines(
        tmp_path / "mc.jsonl",
        [{"context": "The sky is", "choices": [" blue", " green"], "label": 0}] * 2,
    )
    spec = parse_spec(
        {
            "model": TINY,
            "training_file": str(target),
            "replay": {"dataset": str(generic)},
            "total_steps": 5,
            "n_epochs": 0.25,
            "batch_size": 4,
            "seq_len": 64,
            "eval_sequences": 4,
            "eval_interval": 2,
            "checkpoint_interval": 3,
            "cache_dir": str(cache_dir),
            "evals": [
                {
                    "name": "gsm",
                    "file": str(gen),
                    "kind": "generation",
                    "scorer": "numeric",
                    "max_tokens": 4,
                },
                {
                    "name": "sky",
                    "file": str(mc),
                    "kind": "multiple_choice",
                    "generic": True,
                    "limit": 1,
                },
            ],
        }
    )
    train(spec, tmp_path / "out")
    records = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "eval/gsm/accuracy" in r]
    assert [r["step"] for r in scored] == [0, 3, 5]  # start, the checkpoint at 3, the end
    for r in scored:
        assert r["type"] == "eval"
        assert r["eval/gsm/total"] == 3 and r["eval/sky/total"] == 1  # limit: 1
        assert r["eval/gsm/accuracy"] == r["eval/gsm/correct"] / 3
        assert {"eval/sky/accuracy", "eval/sky/accuracy_norm", "eval/sky/correct"} <= set(r)
    # validation losses keep their own interval (0, 2, 4, 5); one record per step
    val_steps = [r["step"] for r in records if "val_loss_target" in r]
    assert val_steps == [0, 2, 4, 5]
    steps = [r["step"] for r in records if r["type"] == "eval"]
    assert steps == sorted(set(steps))

    [summary] = [r for r in records if r["type"] == "summary"]
    first, last = scored[0], scored[-1]
    assert summary["initial_val_loss_target"] == records[0]["val_loss_target"]
    assert summary["target_gain"] == pytest.approx(
        summary["initial_val_loss_target"] - summary["final_val_loss_target"]
    )
    assert summary["generic_change"] == pytest.approx(
        summary["final_val_loss_generic"] - records[0]["val_loss_generic"]
    )
    sky = summary["evals"]["sky"]
    assert sky["generic"] is True and sky["kind"] == "multiple_choice"
    assert sky["initial_accuracy"] == first["eval/sky/accuracy"]
    assert sky["final_accuracy_norm"] == last["eval/sky/accuracy_norm"]
    assert summary["evals"]["gsm"]["accuracy_change"] == pytest.approx(
        last["eval/gsm/accuracy"] - first["eval/gsm/accuracy"]
    )
    meta = json.loads((tmp_path / "out" / "checkpoints" / "step-5" / "meta.json").read_text())
    assert meta["first_eval"]["step"] == 0 and meta["last_task_eval"]["step"] == 5


def test_the_cli_submission_uploads_eval_files_and_names_them_by_id(tmp_path):
    from client.submit import attach_ids, build_submission

    target = write_lines(tmp_path / "t.jsonl", [{"prompt": "a", "completion": "b"}])
    gen = write_lines(tmp_path / "g.jsonl", [{"prompt": "a", "reference": "b"}])
    spec = parse_spec(
        {
            "model": TINY,
            "training_file": str(target),
            "evals": [
                {"name": "g", "file": str(gen), "kind": "generation", "scorer": "contains"},
                {"name": "m", "file": "file-abc", "kind": "multiple_choice", "generic": True},
            ],
        }
    )
    submission = build_submission(spec)
    fields = {d.param: d for d in submission.data}
    assert fields["evals[0].file"].purpose == "evals" and fields["evals[0].file"].local == [gen]
    assert fields["evals[1].file"].remote == ["file-abc"]
    fields["training_file"].ids = ["file-t"]
    fields["evals[0].file"].ids = ["file-g"]
    fields["evals[1].file"].ids = ["file-abc"]
    body = attach_ids(submission)
    assert body["evals"] == [
        {"name": "g", "file": "file-g", "kind": "generation", "scorer": "contains"},
        {"name": "m", "file": "file-abc", "kind": "multiple_choice", "generic": True},
    ]


@pytest.mark.slow
def test_two_ddp_ranks_score_on_rank_0_and_do_not_hang(tmp_path, cache_dir, gsm8k_file):
    """Rank 0 scores the evals alone while rank 1 waits at a barrier: the run ends, with the
    scores at step 0, each checkpoint and the end, and the same training as one process."""
    from replay_engine.launcher import launch

    target = gsm8k_file(tmp_path / "target.jsonl", n=24)
    gen = write_lines(tmp_path / "gen.jsonl", [{"prompt": "1+1=", "reference": "2"}] * 2)
    common = {
        "model": TINY,
        "training_file": str(target),
        "n_epochs": 0.1,
        "batch_size": 4,
        "seq_len": 64,
        "eval_sequences": 4,
        "checkpoint_interval": 1,
        "device": "cpu",
        "cache_dir": str(cache_dir),
        "evals": [{"name": "g", "file": str(gen), "kind": "generation", "max_tokens": 3}],
    }
    train(parse_spec(common), tmp_path / "one")
    two = parse_spec({**common, "distributed": {"strategy": "ddp", "gpus_per_node": 2}})
    result = launch(two, tmp_path / "two")
    assert not result.stopped

    def scored(out):
        lines = (out / "metrics.jsonl").read_text().splitlines()
        return [
            (r["step"], r["eval/g/correct"]) for r in map(json.loads, lines) if "eval/g/total" in r
        ]

    steps = result.total_steps
    assert [s for s, _ in scored(tmp_path / "two")] == list(range(steps + 1))
    assert scored(tmp_path / "two") == scored(tmp_path / "one")


def test_prompt_and_answer_are_cut_to_the_models_context(tiny, monkeypatch):
    model, tokenizer = tiny
    loaded = generation.for_model("tiny", model, tokenizer, torch.device("cpu"))
    loaded.context_length = 24  # as if the model's positions ended there
    long = evals.GenerationRecord(reference="x", prompt="one two three four " * 40)
    sent = []
    real = generation.generate_batch

    def spy(loaded, requests):
        sent.extend((len(r.prompt_ids), r.params.max_tokens) for r in requests)
        return real(loaded, requests)

    monkeypatch.setattr(generation, "generate_batch", spy)
    evals.generate_answers(loaded, [long], max_tokens=8)
    evals.generate_answers(loaded, [long], max_tokens=100)
    assert sent == [(16, 8), (1, 23)]  # 16 + 8 and 1 + 23 fill the 24 positions
