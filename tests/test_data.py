"""Tests for replay_engine.data: real files in tmp_path, the real GPT-2 tokenizer, no mocks."""

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import PreTrainedTokenizerFast

from replay_engine.data import (
    DataFormatError,
    Problems,
    Segment,
    detect_format,
    iter_documents,
    prepare_dataset,
    read_documents,
    render_chat,
    tokenizer_fingerprint,
)

# CI checks out shared/ beside the repository.
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOKENIZER_FILE = DATA / "gpt2_tokenizer" / "tokenizer.json"
EOS = 50256

pytestmark = pytest.mark.skipif(
    not TOKENIZER_FILE.is_file(), reason=f"GPT-2 tokenizer not found at {TOKENIZER_FILE}"
)

# A ChatML-like template. Its markers are plain text to GPT-2, which keeps decoding simple.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load_tokenizer(chat_template=None):
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_FILE), eos_token="<|endoftext|>")
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def chat_tok():
    return load_tokenizer(CHAT_TEMPLATE)


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def decode(tok, token_ids) -> str:
    return tok.decode([int(t) for t in token_ids], clean_up_tokenization_spaces=False)


def flat(split):
    """The split's real tokens and mask as 1-D arrays (padding only ever sits at the end)."""
    return (
        np.asarray(split.tokens).reshape(-1)[: split.n_tokens],
        np.asarray(split.loss_mask).reshape(-1)[: split.n_tokens],
    )


def trainable_text(tok, split) -> str:
    tokens, mask = flat(split)
    return decode(tok, tokens[mask == 1])


def split_documents(tok, split) -> list[str]:
    """Decode a split back into its documents (EOS separates them; none contains EOS)."""
    tokens, _ = flat(split)
    ends = np.flatnonzero(tokens == EOS)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [decode(tok, tokens[s:e]) for s, e in zip(starts, ends, strict=True)]


def prepare(tmp_path, paths, tok, seq_len=16, **kw):
    return prepare_dataset(
        [str(p) for p in paths], tokenizer=tok, seq_len=seq_len, cache_dir=tmp_path / "cache", **kw
    )


CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "5", "weight": 0},
        {"role": "user", "content": "Really?"},
        {"role": "assistant", "content": "4, sorry."},
    ]
}


# -----------------------------------------------------------------------------
# Format detection and reading


def test_detect_format_each_format(tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", [CHAT])
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "a", "completion": "b"}])
    text = tmp_path / "text.json"
    text.write_text('\n\n{"id": 1, "text": "x"}\n')  # leading blank lines, extra keys, .json
    txt = tmp_path / "a.txt"
    txt.write_text("hello\n")
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["x"]}), parquet)
    assert detect_format(chat) == "chat"
    assert detect_format(pc) == "prompt_completion"
    assert detect_format(text) == "text"
    assert detect_format(txt) == "txt"
    assert detect_format(parquet) == "parquet"
    # Files without a telling suffix (such as stored uploads) are sniffed from their content.
    for src, expected in [(pc, "prompt_completion"), (parquet, "parquet"), (txt, "txt")]:
        blob = tmp_path / f"upload-{expected}"
        blob.write_bytes(src.read_bytes())
        assert detect_format(blob) == expected


BAD_FILES = [
    # (file content, line, reason fragment)
    ('{"text": "a"}\n{"text": "b"}\n{"text": "c"\n', 3, "invalid JSON"),
    ('{"text": "a"}\n[1, 2]\n', 2, "expected a JSON object, got an array"),
    ('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c"}\n', 3, "missing 'completion'"),
    ('{"text": "a"}\n{"text": 5}\n', 2, "'text' must be a string, got a number"),
    ('{"prompt": null, "completion": "b"}\n', 1, "'prompt' must be a string, got null"),
    ('{"messages": []}\n', 1, "'messages' must be a non-empty list"),
    ('{"messages": "hi"}\n', 1, "'messages' must be a non-empty list"),
    (
        json.dumps(CHAT) + "\n" + '{"messages": [{"role": "tool", "content": "x"}]}\n',
        2,
        "messages[0]: unknown role 'tool'",
    ),
    (
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": null}]}\n',
        1,
        "messages[1]: 'content' must be a string, got null",
    ),
    (
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}\n',
        1,
        "no trainable assistant turn",
    ),
    (
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]}\n',
        1,
        "'weight' must be 0 or 1",
    ),
    (
        '{"messages": [{"role": "user", "content": "q"}]}\n',
        1,
        "no trainable assistant turn",
    ),
    (
        json.dumps(CHAT) + "\n" + json.dumps(CHAT) + '\n{"text": "a"}\n',
        3,
        "text record but the file is chat",
    ),
    (
        '{"text": "a"}\n{"prompt": "p", "completion": "c"}\n',
        2,
        "prompt_completion record but the file is text",
    ),
    ('{"text": "a"}\n{"body": "b"}\n', 2, "unrecognized record"),
    ('{"messages": [{"content": "q"}]}\n', 1, "messages[0]: missing 'role'"),
    (
        '{"messages": [{"role": "user", "content": "q"}, "hi"]}\n',
        1,
        "messages[1] must be an object",
    ),
    (
        '{"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]}\n',
        1,
        "'weight' is only allowed on assistant messages",
    ),
    (
        '{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}\n',
        1,
        "must start with a system or user message",
    ),
]


@pytest.mark.parametrize("content,line,reason", BAD_FILES)
def test_bad_lines_report_line_and_reason(tmp_path, tok, content, line, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        read_documents(path, tok)
    err = info.value
    assert err.line == line
    assert reason in err.reason
    assert str(err) == f"{path}:{line}: {err.reason}"
    assert err.path == str(path)


def test_file_level_errors(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError) as info:
        read_documents(path)
    assert info.value.line == 2 and "invalid UTF-8" in info.value.reason

    for name, content in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n\n"), ("empty.txt", "\n\n")]:
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(DataFormatError) as info:
            read_documents(path)
        assert info.value.line is None
        assert str(info.value) == f"{path}: file is empty"

    # A pretty-printed JSON array is not JSON Lines; the error says so.
    array = tmp_path / "array.json"
    array.write_text('[\n  {"text": "a"}\n]\n')
    with pytest.raises(DataFormatError, match="one JSON object per line") as info:
        read_documents(array)
    assert info.value.line == 1


def test_data_format_error_survives_pickling():
    err = pickle.loads(pickle.dumps(DataFormatError("a.jsonl", 3, "bad")))
    assert (err.path, err.line, err.reason, str(err)) == ("a.jsonl", 3, "bad", "a.jsonl:3: bad")


def test_txt_document_splitting(tmp_path):
    para = tmp_path / "para.txt"
    para.write_text("\nFirst para\nline two\n\n\nSecond para\r\n   \nThird\n\n")
    assert read_documents(para) == (
        "txt",
        [
            [Segment("First para\nline two", True)],
            [Segment("Second para", True)],
            [Segment("Third", True)],
        ],
    )
    # No blank line between documents: one document per line (trailing blank lines don't count).
    lines = tmp_path / "lines.txt"
    lines.write_text("Article one.\nArticle two.\nArticle three.\n\n")
    fmt, docs = read_documents(lines)
    assert [d[0].text for d in docs] == ["Article one.", "Article two.", "Article three."]


def test_parquet_reading_in_batches(tmp_path):
    texts = [f"row {i}" for i in range(10_000)]  # more rows than one record batch
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": list(range(10_000)), "text": texts}), path, row_group_size=3000)
    fmt, docs = read_documents(path)
    assert fmt == "parquet"
    assert [d[0].text for d in docs] == texts
    assert all(d == [Segment(d[0].text, True)] for d in docs)


def test_iter_documents_streams_and_fails_at_the_bad_record(tmp_path):
    # every format: the same documents as read_documents, one at a time
    txt = tmp_path / "a.txt"
    txt.write_text("one\n\ntwo\nthree\n")
    texts = tmp_path / "t.jsonl"
    texts.write_text('{"text": "a"}\n\n{"text": ""}\n{"text": "b"}\n')
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(9000)]}), parquet)
    for path in (txt, texts, parquet):
        fmt, docs = iter_documents(path)
        assert not isinstance(docs, list) and (fmt, list(docs)) == read_documents(path), path

    # the format is known up front; a bad record raises when reached, after the ones before it
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "completion": "c"}\n' * 3 + '{"text": "t"}\n')
    fmt, docs = iter_documents(bad)
    assert fmt == "prompt_completion"
    assert [next(docs) for _ in range(3)] == [[Segment("p", False), Segment("c", True)]] * 3
    with pytest.raises(DataFormatError, match="decided by line 1") as err:
        next(docs)
    assert err.value.line == 4
    with pytest.raises(DataFormatError, match="no such file"):
        iter_documents(tmp_path / "missing.jsonl")  # eagerly


def test_collecting_problems_reads_past_every_bad_line(tmp_path, tok):
    """Validation collects each bad record (in order, with its line and reason) and reads on,
    yielding exactly the good documents; without a collector the first bad line raises."""
    good = '{"prompt": "p", "completion": "c"}'
    lines = [good, '{"prompt": "p", "completion": 7}', good, "{oops", "", good, '{"text": "t"}']
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"prompt": "caf\xe9"}\n')

    problems = Problems()
    fmt, docs = iter_documents(path, tok, problems)
    assert fmt == "prompt_completion" and len(list(docs)) == 3
    assert [(e.line, e.path) for e in problems.first] == [(n, str(path)) for n in (2, 4, 7, 8)]
    reasons = [e.reason for e in problems.first]
    assert "'completion' must be a string, got a number" in reasons[0]
    assert reasons[1].startswith("invalid JSON") and "invalid UTF-8" in reasons[3]
    assert "text record but the file is prompt_completion (decided by line 1)" in reasons[2]
    assert problems.count == 4
    assert problems.summary().startswith("4 bad lines: line 2: 'completion' must be a string")

    with pytest.raises(DataFormatError) as err:
        read_documents(path, tok)
    assert err.value.line == 2

    # all counted, the first `keep` named; a .txt file's bad UTF-8 is collected once
    many = tmp_path / "many.jsonl"
    many.write_text(good + "\n" + '{"prompt": 1, "completion": "c"}\n' * 25)
    capped = Problems(keep=3)
    list(iter_documents(many, tok, capped)[1])
    assert capped.count == 25 and [e.line for e in capped.first] == [2, 3, 4]
    assert capped.summary().endswith("; and 22 more")
    txt = tmp_path / "bytes.txt"
    txt.write_bytes(b"one\n\ntw\xffo\n\nthree\n")
    collected = Problems()
    assert [d[0].text for d in iter_documents(txt, None, collected)[1]] == ["one", "three"]
    assert [e.line for e in collected.first] == [3] and collected.summary().startswith(
        "1 bad line:"
    )
    only_bad = tmp_path / "only-bad.txt"
    only_bad.write_bytes(b"\xff\n\xfe\n")
    with pytest.raises(DataFormatError, match="no line is valid UTF-8"):
        list(iter_documents(only_bad, None, Problems())[1])


def test_parquet_column_errors(tmp_path):
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"body": ["x"], "id": [1]}), missing)
    with pytest.raises(
        DataFormatError, match=r"missing required column 'text' \(columns: body, id\)"
    ):
        read_documents(missing)
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    with pytest.raises(DataFormatError, match="column 'text' must hold strings, got int64"):
        read_documents(numbers)
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["a", "b", None]}), nulls)
    with pytest.raises(DataFormatError, match="row 3: 'text' is null"):
        read_documents(nulls)


# -----------------------------------------------------------------------------
# Chat rendering and loss masks


def test_render_chat_plain_fallback(tok):
    segments = render_chat(CHAT["messages"], tok)
    assert segments == [
        Segment("System: Be brief.\n\nUser: Hi\n\nAssistant:", False),
        Segment(" Hello!", True),
        Segment("\n\nUser: 2+2?\n\nAssistant: 5\n\nUser: Really?\n\nAssistant:", False),
        Segment(" 4, sorry.", True),
    ]
    assert render_chat(CHAT["messages"], None) == segments  # no tokenizer: same fallback


def test_render_chat_with_template(chat_tok):
    segments = render_chat(CHAT["messages"], chat_tok)
    assert segments == [
        Segment(
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n",
            False,
        ),
        Segment("Hello!<|im_end|>\n", True),
        Segment(
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"
            "<|im_start|>user\nReally?<|im_end|>\n<|im_start|>assistant\n",
            False,
        ),
        Segment("4, sorry.<|im_end|>\n", True),
    ]
    # The segments add up to exactly what the template renders.
    rendered = chat_tok.apply_chat_template(CHAT["messages"], tokenize=False)
    assert "".join(s.text for s in segments) == rendered


def test_chat_masks_after_packing(tmp_path, chat_tok):
    trailing_user = {"messages": CHAT["messages"][:3] + [{"role": "user", "content": "Bye"}]}
    train = write_jsonl(tmp_path / "chat.jsonl", [CHAT, trailing_user])
    val = write_jsonl(tmp_path / "val.jsonl", [CHAT])
    ds = prepare(tmp_path, [train], chat_tok, seq_len=32, val_paths=[val])
    assert ds.format == "chat"
    # Only assistant text with weight 1 is trained; the EOS is trained when the conversation
    # ends on a trained turn, and not after a trailing user message.
    assert trainable_text(chat_tok, ds.train) == (
        "Hello!<|im_end|>\n4, sorry.<|im_end|>\n<|endoftext|>" + "Hello!<|im_end|>\n"
    )
    tokens, mask = flat(ds.train)
    eos_positions = np.flatnonzero(tokens == EOS)
    assert mask[eos_positions].tolist() == [1, 0]
    assert "5<|im_end|>" in decode(chat_tok, tokens[mask == 0])  # the weight-0 turn: context only


def test_chat_template_that_is_not_prefix_stable(tmp_path):
    # Marks the end of the conversation only when nothing is to be generated: rendering a longer
    # conversation no longer starts with the rendering of a shorter one.
    tok = load_tokenizer(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% else %}<END>{% endif %}"
    )
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT["messages"][:3]}, CHAT])
    with pytest.raises(DataFormatError) as info:
        read_documents(path, tok)
    assert info.value.line == 2
    assert "not prefix-stable" in info.value.reason


def test_chat_template_exception_gets_line_number(tmp_path):
    tok = load_tokenizer(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    ok = {"messages": CHAT["messages"][1:3]}
    path = write_jsonl(tmp_path / "chat.jsonl", [ok, ok, CHAT])
    with pytest.raises(DataFormatError) as info:
        read_documents(path, tok)
    assert info.value.line == 3 and "no system role" in info.value.reason


def test_prompt_completion_masks(tmp_path, tok):
    records = [
        {"prompt": "Q: capital of France?\nA:", "completion": " Paris."},
        {"prompt": "Q: 2+3?\nA:", "completion": " 5."},
    ]
    path = write_jsonl(tmp_path / "pc.jsonl", records)
    ds = prepare(tmp_path, [path], tok, val_paths=[path])
    assert ds.format == "prompt_completion"
    assert trainable_text(tok, ds.train) == " Paris.<|endoftext|> 5.<|endoftext|>"
    tokens, mask = flat(ds.train)
    assert decode(tok, tokens[mask == 0]) == records[0]["prompt"] + records[1]["prompt"]
    assert ds.train.n_trainable_tokens == len(ids(tok, " Paris.")) + len(ids(tok, " 5.")) + 2


def test_text_masks_and_padding(tmp_path, tok):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "One doc."}, {"text": ""}, {"text": "Two."}])
    ds = prepare(tmp_path, [path], tok, seq_len=64, val_paths=[path])
    assert ds.train.n_documents == 2  # the empty text is skipped
    tokens, mask = ds.train.tokens, ds.train.loss_mask
    n = ds.train.n_tokens
    assert mask.reshape(-1)[:n].all() and not mask.reshape(-1)[n:].any()
    assert ds.train.n_trainable_tokens == n
    assert trainable_text(tok, ds.train) == "One doc.<|endoftext|>Two.<|endoftext|>"
    assert (tokens.reshape(-1)[n:] == EOS).all()


# -----------------------------------------------------------------------------
# Packing


@pytest.mark.parametrize("seq_len", [2, 7, 16, 1000])
def test_packing_arithmetic(tmp_path, tok, seq_len):
    texts = ["The quick brown fox.", "Jumps over", "the lazy dog, twice: again and again.", "x"]
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in texts])
    ds = prepare(tmp_path, [path], tok, seq_len=seq_len, val_paths=[path])

    stream = [t for text in texts for t in ids(tok, text) + [EOS]]
    n_rows = math.ceil(len(stream) / seq_len)
    pad = n_rows * seq_len - len(stream)
    assert ds.train.tokens.shape == ds.train.loss_mask.shape == (n_rows, seq_len)
    assert len(ds.train) == n_rows
    assert ds.train.tokens.reshape(-1).tolist() == stream + [EOS] * pad
    assert ds.train.loss_mask.reshape(-1).tolist() == [1] * len(stream) + [0] * pad
    assert (ds.train.n_documents, ds.train.n_tokens) == (len(texts), len(stream))
    assert ds.train.tokens.dtype == np.uint16 and ds.train.loss_mask.dtype == np.uint8
    assert split_documents(tok, ds.train) == texts


def test_packing_exact_multiple_has_no_padding_row(tmp_path, tok):
    text = "Hello world"  # 2 tokens + EOS
    assert len(ids(tok, text)) == 2
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": text}] * 4)
    ds = prepare(tmp_path, [path], tok, seq_len=6, val_paths=[path])
    assert ds.train.tokens.tolist() == [[15496, 995, EOS] * 2] * 2
    assert ds.train.loss_mask.all()


# -----------------------------------------------------------------------------
# Holdout and validation files


def numbered_docs(tmp_path, n, name="docs.jsonl"):
    texts = [f"document number {i}" for i in range(n)]
    return write_jsonl(tmp_path / name, [{"text": t} for t in texts]), texts


def test_holdout_is_disjoint_and_deterministic(tmp_path, tok):
    path, texts = numbered_docs(tmp_path, 40)
    ds = prepare(tmp_path, [path], tok, val_fraction=0.1, seed=3)
    train, val = split_documents(tok, ds.train), split_documents(tok, ds.val)
    assert (len(train), len(val)) == (36, 4) == (ds.train.n_documents, ds.val.n_documents)
    assert sorted(train + val) == sorted(texts) and not set(train) & set(val)
    assert train == [t for t in texts if t not in val]  # training documents keep file order

    again = prepare(tmp_path / "other", [path], tok, val_fraction=0.1, seed=3)
    assert split_documents(tok, again.val) == val
    other_seed = prepare(tmp_path, [path], tok, val_fraction=0.1, seed=4)
    assert split_documents(tok, other_seed.val) != val


def test_holdout_sizes(tmp_path, tok):
    path, _ = numbered_docs(tmp_path, 3)
    assert prepare(tmp_path, [path], tok, val_fraction=0.0).val.n_documents == 1  # at least one
    assert prepare(tmp_path, [path], tok, val_fraction=0.9).train.n_documents == 1  # keep one
    one, _ = numbered_docs(tmp_path, 1, "one.jsonl")
    with pytest.raises(DataFormatError, match="give a validation file"):
        prepare(tmp_path, [one], tok)
    # ...and with a validation file, one training document is fine.
    assert prepare(tmp_path, [one], tok, val_paths=[path]).train.n_documents == 1


def test_val_paths_and_several_training_files(tmp_path, tok):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "alpha one"}, {"text": "alpha two"}])
    b = tmp_path / "b.txt"
    b.write_text("beta one\nbeta two\n")
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "held out"}])
    ds = prepare(tmp_path, [a, b], tok, val_paths=[val])
    assert split_documents(tok, ds.train) == ["alpha one", "alpha two", "beta one", "beta two"]
    assert split_documents(tok, ds.val) == ["held out"]
    assert ds.format == "mixed"


def test_argument_errors(tmp_path, tok):
    path, _ = numbered_docs(tmp_path, 5)
    with pytest.raises(ValueError, match="seq_len"):
        prepare(tmp_path, [path], tok, seq_len=1)
    with pytest.raises(ValueError, match="val_fraction"):
        prepare(tmp_path, [path], tok, val_fraction=1.0)
    with pytest.raises(DataFormatError, match="no such file"):
        prepare(tmp_path, [tmp_path / "nope.jsonl"], tok)
    empty = write_jsonl(tmp_path / "empty_texts.jsonl", [{"text": ""}, {"text": ""}])
    with pytest.raises(DataFormatError, match="no documents"):
        prepare(tmp_path, [empty], tok)


# -----------------------------------------------------------------------------
# Cache


def test_cache_hit_loads_same_arrays(tmp_path, tok):
    path, _ = numbered_docs(tmp_path, 20)
    first = prepare(tmp_path, [path], tok)
    second = prepare(tmp_path, [path], tok)
    assert (first.from_cache, second.from_cache) == (False, True)
    assert first.cache_key == second.cache_key
    for a, b in [(first.train, second.train), (first.val, second.val)]:
        assert isinstance(b.tokens, np.memmap) and isinstance(b.loss_mask, np.memmap)
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.loss_mask, b.loss_mask)
        np.testing.assert_array_equal(a.positions, b.positions)
        assert (a.n_documents, a.n_tokens, a.n_trainable_tokens) == (
            b.n_documents,
            b.n_tokens,
            b.n_trainable_tokens,
        )
    assert second.format == "text"
    entry = tmp_path / "cache" / first.cache_key
    assert sorted(os.listdir(entry)) == [
        "meta.json",
        "train_mask.npy",
        "train_positions.npy",
        "train_tokens.npy",
        "val_mask.npy",
        "val_positions.npy",
        "val_tokens.npy",
    ]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.cache_key]  # no temp left

    # Anything the arrays depend on changes the key.
    assert prepare(tmp_path, [path], tok, seq_len=8).cache_key != first.cache_key
    assert prepare(tmp_path, [path], tok, seed=1).cache_key != first.cache_key
    moved = tmp_path / "moved.jsonl"
    moved.write_bytes(path.read_bytes())
    assert prepare(tmp_path, [moved], tok).cache_key == first.cache_key  # content, not name
    with open(moved, "a") as f:
        f.write('{"text": "one more"}\n')
    assert prepare(tmp_path, [moved], tok).from_cache is False


def test_incomplete_entries_are_not_cache_hits(tmp_path, tok):
    path, _ = numbered_docs(tmp_path, 10)
    key = prepare(tmp_path / "probe", [path], tok).cache_key
    cache = tmp_path / "cache"
    # What a crash mid-write leaves: a temporary directory holding some of the arrays.
    stale = cache / f".tmp-{key}-99999-deadbeef"
    stale.mkdir(parents=True)
    np.save(stale / "train_tokens.npy", np.zeros((1, 16), np.uint16))
    (stale / "meta.json").write_text("{}")
    # And a directory under the final name but without meta.json (not written by us).
    (cache / key).mkdir()
    np.save(cache / key / "train_tokens.npy", np.zeros((1, 16), np.uint16))

    ds = prepare(tmp_path, [path], tok)
    assert ds.from_cache is False and ds.cache_key == key
    assert ds.train.n_documents + ds.val.n_documents == 10
    assert prepare(tmp_path, [path], tok).from_cache is True


def test_tokenizer_fingerprint(tok, chat_tok):
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(load_tokenizer())
    assert tokenizer_fingerprint(tok) != tokenizer_fingerprint(chat_tok)


# -----------------------------------------------------------------------------
# Real data


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "gsm8k" / "train.jsonl").exists(), reason="shared data missing")
def test_gsm8k_prompt_completion(tmp_path, tok):
    lines = (DATA / "gsm8k" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    records = [{"prompt": r["question"], "completion": r["answer"]} for r in rows]
    path = write_jsonl(tmp_path / "gsm8k.jsonl", records)
    ds = prepare(tmp_path, [path], tok, seq_len=512, seed=0)

    n = len(records)
    assert ds.format == "prompt_completion"
    assert ds.val.n_documents == round(0.05 * n) and ds.train.n_documents + ds.val.n_documents == n
    # Token counts agree with tokenizing every field on its own.
    q = tok([r["prompt"] for r in records], add_special_tokens=False)["input_ids"]
    a = tok([r["completion"] for r in records], add_special_tokens=False)["input_ids"]
    total = sum(map(len, q)) + sum(map(len, a)) + n
    assert ds.train.n_tokens + ds.val.n_tokens == total
    assert ds.train.n_trainable_tokens + ds.val.n_trainable_tokens == sum(map(len, a)) + n
    for split in (ds.train, ds.val):
        assert len(split) == math.ceil(split.n_tokens / 512)
        assert int(np.asarray(split.loss_mask).sum()) == split.n_trainable_tokens
    # The first training document is the first record (held-out documents are skipped).
    val_docs = set(split_documents(tok, ds.val))
    first = next(r for r in records if r["prompt"] + r["completion"] not in val_docs)
    assert split_documents(tok, ds.train)[0] == first["prompt"] + first["completion"]
    tokens, mask = flat(ds.train)
    first_eos = int(np.flatnonzero(tokens == EOS)[0])
    assert decode(tok, tokens[: first_eos + 1][mask[: first_eos + 1] == 1]) == (
        first["completion"] + "<|endoftext|>"
    )
