"""Issue 11, item 6: one 50 MB single-line upload took 12.8 minutes and 9.3 GB in the files
worker. A line is now bounded (`REPLAYFT_MAX_LINE_BYTES`): a longer one makes the file `error`
naming the line, and is skipped in bounded pieces, never held whole."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from replay_engine.data import DataFormatError, Problems, iter_documents

REPO = Path(__file__).resolve().parents[2]


def test_a_line_over_the_bound_is_a_bad_line_named_by_its_number(tmp_path):
    path = tmp_path / "mixed.jsonl"
    long_line = json.dumps({"text": "x" * 5000})
    path.write_text(
        json.dumps({"text": "first"})
        + "\n"
        + long_line
        + "\n"
        + json.dumps({"text": "third"})
        + "\n"
    )
    problems = Problems()
    fmt, docs = iter_documents(path, None, problems, max_line_bytes=1024)
    texts = [segment.text for doc in docs for segment in doc]
    assert fmt == "text" and texts == ["first", "third"]  # the lines around it still count
    assert problems.count == 1
    assert (
        problems.summary() == "1 bad line: line 2: longer than REPLAYFT_MAX_LINE_BYTES (1024 bytes)"
    )
    # the bound is on the line's bytes, its newline aside: a line of exactly the bound passes
    exact = tmp_path / "exact.txt"
    exact.write_bytes(b"y" * 1024 + b"\r\n" + b"z\n")
    fmt, docs = iter_documents(exact, None, Problems(), max_line_bytes=1024)
    assert [len(doc[0].text) for doc in docs] == [1024, 1]


def test_a_first_line_over_the_bound_fails_the_whole_file_at_line_1(tmp_path):
    path = tmp_path / "one-line.jsonl"
    path.write_text(json.dumps({"text": "x" * 5000}) + "\n")
    with pytest.raises(DataFormatError) as err:
        iter_documents(path, None, Problems(), max_line_bytes=1024)
    assert err.value.line == 1
    assert err.value.reason == "longer than REPLAYFT_MAX_LINE_BYTES (1024 bytes)"


# The files worker's own code path (worker.runner.validate_file on a real SQLite database), in a
# fresh interpreter whose memory tests/memory_probe.py samples; a small file first warms the
# tokenizer and the allocator.
VALIDATE = textwrap.dedent(
    """
    import json, sys
    from sqlalchemy import select
    from memory_probe import peak_growth_kib
    from control.db.migrate import upgrade
    from control.db.models import File
    from control.db.session import session_scope
    from api.services.teams import create_key, team_for_key
    from worker.runner import validate_file

    upgrade()
    with session_scope() as session:
        team = team_for_key(session=session, key=create_key(session=session, team_name="t"))[0]
        for i, path in enumerate(sys.argv[1:]):
            session.add(File(id=f"file-{i}", team_id=team.id, filename="f.jsonl",
                             purpose="replay", bytes=0, path=path, status="uploaded"))
        session.commit()
    validate_file("file-0")
    with peak_growth_kib() as memory:
        validate_file("file-1")
    with session_scope() as session:
        rows = {f.id: f for f in session.scalars(select(File))}
        print(json.dumps({**memory, "small": rows["file-0"].status,
                          "status": rows["file-1"].status,
                          "details": rows["file-1"].status_details}))
    """
)


@pytest.mark.slow
def test_a_huge_single_line_upload_errors_quickly_with_flat_memory(tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"text": "hello there"}) + "\n")
    huge = tmp_path / "huge.jsonl"
    with open(huge, "wb") as f:  # one 40 MB JSON line, as the hostile tester's 50 MB one
        f.write(b'{"text": "')
        for _ in range(40):
            f.write(b"lorem ipsum " * (2**20 // 12))
        f.write(b'"}\n')
    bound = 1 << 20
    out = subprocess.run(
        [sys.executable, "-c", VALIDATE, str(small), str(huge)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            **os.environ,
            "REPLAYFT_DATA_DIR": str(tmp_path / "data"),
            "REPLAYFT_DATABASE_URL": "",
            "REPLAYFT_MAX_LINE_BYTES": str(bound),
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)]),
        },
        timeout=120,  # reading past 40 MB takes well under a second; tokenizing it took minutes
    )
    assert out.returncode == 0, f"validation failed:\n{out.stderr[-3000:]}"
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["small"] == "processed", result
    assert result["status"] == "error", result
    assert result["details"] == f"line 1: longer than REPLAYFT_MAX_LINE_BYTES ({bound} bytes)"
    # the 40 MB line is never held whole (let alone parsed and tokenized)
    assert result["growth_kib"] < 16 * 1024, result


@pytest.mark.slow
def test_a_big_file_is_checked_whole_but_tokenized_only_up_to_the_budget(
    shared_data, tmp_path, monkeypatch
):
    """Tokenizing ran at about 1 MB/s, so a big upload of ordinary lines held the files queue
    (every other team's validation) for minutes. Past `REPLAYFT_TOKEN_COUNT_CHARS` the count is
    extrapolated; every record is still read and checked."""
    from control.settings import get_settings
    from worker.runner import file_stats

    c4 = (shared_data / "c4_sample" / "c4_demo.jsonl").read_text()
    path = tmp_path / "replay.jsonl"
    path.write_text(c4)
    exact = file_stats(str(path))
    assert "tokens_estimated" not in exact  # under the default budget: counted exactly

    monkeypatch.setenv("REPLAYFT_TOKEN_COUNT_CHARS", "100000")
    get_settings.cache_clear()
    try:
        estimated = file_stats(str(path))
        with open(path, "a") as f:  # a bad record far past the tokenized part is still found
            f.write('{"text": 42}\n')
        problems = Problems()
        file_stats(str(path), problems)
    finally:
        monkeypatch.delenv("REPLAYFT_TOKEN_COUNT_CHARS")
        get_settings.cache_clear()
    assert estimated["tokens_estimated"] is True
    assert estimated["examples"] == exact["examples"]
    assert abs(estimated["tokens"] - exact["tokens"]) < 0.05 * exact["tokens"], (estimated, exact)
    n_lines = len(c4.splitlines())
    assert problems.count == 1 and problems.first[0].line == n_lines + 1, problems.summary()
