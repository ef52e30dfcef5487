"""Training data: read files, render them into loss-masked segments, tokenize, pack, cache.

Pipeline, one function per step:

    read_documents(path)   file -> (format, documents); a document is a list[Segment]
    iter_documents(path)   the same, one document at a time (validating a file of any size,
                           optionally collecting every bad line into `Problems`)
    render_chat(messages)  one chat example -> segments, trainable only on assistant text
    _holdout(docs)         documents -> (train, val), split by document, never by sequence
    nested_subset(docs)    train documents -> a seeded share of them (reference runs of a sweep)
    _pack(docs)            documents -> (n_sequences, seq_len) token and loss-mask arrays
    prepare_dataset(...)   all of the above, behind a content-addressed on-disk cache

Formats. JSONL holds one object per line: chat (`{"messages": [...]}`), prompt/completion
(`{"prompt", "completion"}`) or text (`{"text"}`, extra keys allowed). The first non-blank line
decides the file's format and every other line must match it. Errors are `DataFormatError`s that
name the file, the 1-based line and the rule broken, so an API can show them to whoever uploaded
the file. `.txt` files split into documents at blank lines (or, with no blank lines, one document
per line); Parquet files need a string `text` column and are read in record batches. Files
with another suffix (an upload stored under an id) are sniffed. Records without any text are
skipped, since they would only add a lone EOS.

Loss masks come from segments, not from token positions: a document is a list of
`Segment(text, trainable)`, each segment is tokenized on its own and its tokens inherit its flag.
A token therefore never straddles a trainable/non-trainable boundary, at the price that the
tokens at a boundary can differ slightly from tokenizing the whole string at once (the same choice
torchtune makes by tokenizing message by message). Chat examples are rendered with the tokenizer's
own chat template and cut into segments by prefix difference: what `messages[:i]` adds with a
generation prompt is the (masked) prompt, what assistant turn i adds on top is the target. That
only works when rendering is prefix-stable; templates that rewrite history (for example, those
that drop earlier reasoning) are refused with an error instead of being masked wrongly. A
tokenizer without a template gets a plain "User: ...\n\nAssistant: ..." rendering, masked alike.
Special-token strings inside the text (`<|endoftext|>`) are parsed as special tokens, as the chat
template's own markers must be.

Packing. Each document is followed by one EOS, trained when the document's last segment is (so
a model learns to stop after a completion but not after a prompt). Documents are concatenated
into one stream and cut into consecutive, non-overlapping rows of exactly `seq_len` tokens;
the last row is padded with EOS under mask 0 instead of being dropped, because target data is
scarce. The mask marks the tokens that are training *targets*: a trainer predicting token t+1
from tokens <= t uses `tokens[:, :-1]` as inputs and `tokens[:, 1:]` under `loss_mask[:, 1:]`.
Rows do not overlap, so the first token of each row is never a target; that is one token in
`seq_len`, cheaper than the bookkeeping of overlapping windows. No BOS is added. Next to the
tokens, the packer records each token's position within its document (0 at a document's first
token and at a row's first token; a document's EOS belongs to it), so that a trainer can keep
attention inside documents; an EOS token cannot mark the boundaries by itself, since chat
templates that end each turn with the EOS put several inside one document.

Speed. All segments of all documents are flattened and tokenized in large batches by the fast
tokenizer (Rust, multi-threaded); the per-token work after that (concatenation, masks, EOS
insertion, padding) is numpy, with Python loops only per document or per batch. All text and
tokens of a call are held in memory at once: fine for the tens of MB that fine-tuning and replay
sets are here, but corpora of many GB would need a streaming writer instead.

Cache. `cache_dir/<key>/` holds `{train,val}_{tokens,mask,positions}.npy` and `meta.json`,
where the key is a sha256 of everything the arrays depend on: a format version, the content hash
and suffix of every file, the tokenizer fingerprint, seq_len, val_fraction and seed. Paths are not part of the
key, so moving a file keeps its cache (a hit still reads each file once to hash it). An entry
is built in a temporary sibling directory and `os.replace`d into place, so a crash never leaves
something that looks like a complete entry, and two processes racing on one key both end up
reading the winner's files. Arrays are returned memory-mapped, so a cache hit costs no
tokenization and almost no memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import numbers
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Bump whenever the bytes written for the same inputs would change (rendering, packing, layout).
FORMAT_VERSION = 2  # 2: {split}_positions.npy, the document boundaries
# Texts and characters per tokenizer call (`text_batches`): enough to keep the Rust thread pool
# busy, few enough that what one call returns stays bounded. A call's encodings and id lists cost
# ~100 bytes per token, so 4096 long documents in one call took ~1 GB; 256K characters (at most
# ~256K tokens) keep a call to tens of MB.
TOKENIZE_BATCH = 4096
TOKENIZE_BATCH_CHARS = 1 << 18
PARQUET_BATCH_ROWS = 8192  # rows per record batch when streaming a Parquet file

ROLES = ("system", "user", "assistant")
# Role names for the plain-text chat rendering used when a tokenizer has no chat template.
_PLAIN_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


# -----------------------------------------------------------------------------
# Types


class DataFormatError(ValueError):
    """A data file breaks a format rule. `line` is 1-based, or None for whole-file problems."""

    def __init__(self, path, line: int | None, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        # Keep the three-argument constructor working through pickling (process pools, queues).
        return (type(self), (self.path, self.line, self.reason))


@dataclass
class Problems:
    """Bad records collected by a read that goes on past them (validating an upload, so its
    owner can fix every line at once): all are counted, the first `keep` are kept in order.
    Whole-file problems (an empty file, an undecidable format) still raise."""

    keep: int = 10
    count: int = 0
    first: list[DataFormatError] = field(default_factory=list)

    def add(self, error: DataFormatError) -> None:
        self.count += 1
        if len(self.first) < self.keep:
            self.first.append(error)

    def summary(self) -> str:
        """'2 bad lines: line 3: invalid JSON ...; line 9: ...' (and how many more)."""
        listed = "; ".join(f"line {e.line}: {e.reason}" for e in self.first)
        more = self.count - len(self.first)
        noun = "bad line" if self.count == 1 else "bad lines"
        return f"{self.count} {noun}: {listed}" + (f"; and {more} more" if more else "")


@dataclass(frozen=True)
class Segment:
    """A run of text whose tokens are all trained on (`trainable`) or all masked out."""

    text: str
    trainable: bool


@dataclass
class PackedSplit:
    """One split, packed into rows of seq_len tokens. Arrays are memory-mapped from the cache."""

    tokens: np.ndarray  # (n_sequences, seq_len), uint16 or uint32
    loss_mask: np.ndarray  # (n_sequences, seq_len), uint8; 1 where the token is a training target
    positions: np.ndarray  # (n_sequences, seq_len), uint16 or uint32; see `_document_positions`
    n_documents: int
    n_tokens: int  # real tokens, EOS separators included, padding excluded
    n_trainable_tokens: int

    def __len__(self) -> int:
        return self.tokens.shape[0]


@dataclass
class PackedDataset:
    train: PackedSplit
    val: PackedSplit
    format: str  # format of the training files, or "mixed" when they differ
    cache_key: str
    from_cache: bool  # True when nothing was tokenized by this call


# -----------------------------------------------------------------------------
# Reading files


_SKIP_CHUNK = 1 << 20  # how much of an over-long line is read at a time while skipping it


def _iter_lines(path: Path, problems: Problems | None = None, max_line_bytes: int | None = None):
    """Yield (1-based line number, line without its newline), checking UTF-8 line by line
    (a line that is not UTF-8 raises, or goes to `problems` and is skipped).

    With `max_line_bytes`, a longer line is never held whole: it is read in bounded pieces,
    reported like a bad line (raised, or added to `problems` and skipped) and its line number
    kept, so an upload that is one 50 MB line costs the time to read it and almost no memory."""
    with open(path, "rb") as f:
        lineno = 0
        while True:
            # Reading bytes splits on b"\n" only; str.splitlines would also split on U+2028
            # etc., which JSON strings may legally contain.
            raw = f.readline() if max_line_bytes is None else f.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            if max_line_bytes is not None and len(raw.rstrip(b"\r\n")) > max_line_bytes:
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line
                    raw = f.readline(_SKIP_CHUNK)
                reason = f"longer than REPLAYFT_MAX_LINE_BYTES ({max_line_bytes} bytes)"
                if problems is None:
                    raise DataFormatError(path, lineno, reason)
                problems.add(DataFormatError(path, lineno, reason))
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                reason = f"invalid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                if problems is None:
                    raise DataFormatError(path, lineno, reason) from None
                problems.add(DataFormatError(path, lineno, reason))
                continue
            if lineno == 1:
                line = line.removeprefix("\ufeff")  # a BOM some editors write
            yield lineno, line.rstrip("\r\n")


def _parse_json_line(path: Path, lineno: int, line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        reason = f"invalid JSON: {e.msg} (column {e.colno})"
        if path.suffix.lower() == ".json":
            reason += "; .json files must hold one JSON object per line (JSON Lines)"
        raise DataFormatError(path, lineno, reason) from None
    if not isinstance(obj, dict):
        raise DataFormatError(path, lineno, f"expected a JSON object, got {_json_type(obj)}")
    return obj


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names = {dict: "an object", list: "an array", str: "a string"}
    return names.get(type(value), type(value).__name__)


def _record_format(path: Path, lineno: int, obj: dict) -> str:
    """Which JSONL format one record is written in, judged by its keys."""
    if "messages" in obj:
        return "chat"
    if "prompt" in obj or "completion" in obj:
        return "prompt_completion"
    if "text" in obj:
        return "text"
    keys = ", ".join(repr(k) for k in obj) or "none"
    reason = f"unrecognized record: expected a 'messages', 'prompt'/'completion' or 'text' key (keys: {keys})"
    raise DataFormatError(path, lineno, reason)


def _sniff_format(path: Path, max_line_bytes: int | None = None) -> str:
    """Format of a file whose name says nothing (for example an upload stored without suffix)."""
    with open(path, "rb") as f:
        if f.read(4) == b"PAR1":
            return "parquet"
    for lineno, line in _iter_lines(path, max_line_bytes=max_line_bytes):
        if line.strip():
            if line.lstrip().startswith("{"):
                return _record_format(path, lineno, _parse_json_line(path, lineno, line))
            return "txt"
    raise DataFormatError(path, None, "file is empty")


def detect_format(path, max_line_bytes: int | None = None) -> str:
    """Return the file's format: "chat", "prompt_completion" or "text" for .jsonl/.json (decided
    by the first non-blank line), "txt" for .txt, "parquet" for .parquet. Files with any other
    suffix are sniffed: Parquet magic bytes, else a JSON object on the first line, else text."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return "txt"
    if suffix == ".parquet":
        return "parquet"
    if suffix not in (".jsonl", ".json"):
        return _sniff_format(path, max_line_bytes)
    for lineno, line in _iter_lines(path, max_line_bytes=max_line_bytes):
        if line.strip():
            return _record_format(path, lineno, _parse_json_line(path, lineno, line))
    raise DataFormatError(path, None, "file is empty")


def _string_field(obj: dict, key: str) -> str:
    if key not in obj:
        raise ValueError(f"missing '{key}'")
    value = obj[key]
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string, got {_json_type(value)}")
    return value


def _iter_jsonl(
    path: Path, tokenizer, fmt: str, problems: Problems | None = None, max_line_bytes=None
) -> Iterator[list[Segment]]:
    first_line = None
    for lineno, line in _iter_lines(path, problems, max_line_bytes):
        if not line.strip():
            continue
        first_line = first_line or lineno  # the line detect_format decided by
        try:
            doc = _jsonl_record(path, lineno, line, tokenizer, fmt, first_line)
        except DataFormatError as e:
            if problems is None:
                raise
            problems.add(e)
            continue
        if any(seg.text for seg in doc):  # a document without text would only add a lone EOS
            yield doc


def _jsonl_record(
    path: Path, lineno: int, line: str, tokenizer, fmt: str, first_line: int
) -> list[Segment]:
    """One JSONL line -> its document, or a DataFormatError naming the line."""
    obj = _parse_json_line(path, lineno, line)
    kind = _record_format(path, lineno, obj)
    if kind != fmt:
        reason = (
            f"this line is a {kind} record but the file is {fmt} (decided by line {first_line})"
        )
        raise DataFormatError(path, lineno, reason)
    try:
        if kind == "chat":
            return render_chat(obj["messages"], tokenizer)
        if kind == "prompt_completion":
            prompt, completion = _string_field(obj, "prompt"), _string_field(obj, "completion")
            return [Segment(prompt, False), Segment(completion, True)]
        return [Segment(_string_field(obj, "text"), True)]
    except Exception as e:
        # Includes errors raised inside a Jinja chat template (`raise_exception(...)`), which
        # are not ValueErrors: every per-record failure gets the file and line attached.
        raise DataFormatError(path, lineno, str(e)) from e


def _txt_has_paragraphs(path: Path, problems: Problems | None, max_line_bytes=None) -> bool:
    """Whether a blank line separates two non-blank ones (a first pass, so that reading the
    documents can stream): then documents are paragraphs, else lines."""
    seen_text = blank_after_text = False
    # when collecting, bad lines are skipped here and collected once, by the second pass
    skipped = None if problems is None else Problems(keep=0)
    for _, line in _iter_lines(path, skipped, max_line_bytes):
        if not line.strip():
            blank_after_text = seen_text
        elif blank_after_text:
            return True
        else:
            seen_text = True
    if not seen_text:
        reason = "no line is valid UTF-8" if skipped and skipped.count else "file is empty"
        raise DataFormatError(path, None, reason)
    return False


def _iter_txt(
    path: Path, problems: Problems | None = None, max_line_bytes: int | None = None
) -> Iterator[list[Segment]]:
    lines = _iter_lines(path, problems, max_line_bytes)
    if not _txt_has_paragraphs(path, problems, max_line_bytes):
        yield from ([Segment(line, True)] for _, line in lines if line.strip())
        return
    paragraph: list[str] = []
    for _, line in itertools.chain(lines, [(None, "")]):  # "" flushes the last one
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            yield [Segment("\n".join(paragraph), True)]
            paragraph = []


def _iter_parquet(path: Path) -> Iterator[list[Segment]]:
    # Imported here: pyarrow is slow to import and only Parquet inputs need it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataFormatError(path, None, f"not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if "text" not in names:
        reason = f"missing required column 'text' (columns: {', '.join(names) or 'none'})"
        raise DataFormatError(path, None, reason)
    text_type = pf.schema_arrow.field("text").type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise DataFormatError(path, None, f"column 'text' must hold strings, got {text_type}")
    n_rows = 0
    for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=["text"]):
        column = batch.column(0)
        if column.null_count:
            first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataFormatError(path, None, f"row {n_rows + first + 1}: 'text' is null")
        yield from ([Segment(text, True)] for text in column.to_pylist() if text)
        n_rows += batch.num_rows
    if n_rows == 0:
        raise DataFormatError(path, None, "file is empty (no rows)")


def iter_documents(
    path, tokenizer=None, problems: Problems | None = None, max_line_bytes: int | None = None
) -> tuple[str, Iterator[list[Segment]]]:
    """(format, documents one at a time): `read_documents` with memory bounded by the largest
    document, for files of any size. The format is known up front; a bad record raises its
    DataFormatError when iteration reaches it, after the documents before it were yielded, or,
    given `problems`, is added there and skipped. `max_line_bytes` bounds a line (JSONL, text):
    a longer one is a bad record, read without ever being held whole (upload validation passes
    the service's REPLAYFT_MAX_LINE_BYTES)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "no such file")
    fmt = detect_format(path, max_line_bytes)
    if fmt == "txt":
        return fmt, _iter_txt(path, problems, max_line_bytes)
    if fmt == "parquet":
        return fmt, _iter_parquet(path)  # its problems are whole-file or whole-column
    return fmt, _iter_jsonl(path, tokenizer, fmt, problems, max_line_bytes)


def read_documents(path, tokenizer=None) -> tuple[str, list[list[Segment]]]:
    """Read one file into (format, documents). Chat files are rendered with the tokenizer's chat
    template; without a tokenizer (or template) they use the plain-text fallback."""
    fmt, docs = iter_documents(path, tokenizer)
    return fmt, list(docs)


# -----------------------------------------------------------------------------
# Chat rendering


def _check_messages(messages) -> None:
    """Raise ValueError naming the first broken rule (and the message index) in a chat example."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    trainable = False
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be an object, got {_json_type(m)}")
        if "role" not in m:
            raise ValueError(f"messages[{i}]: missing 'role'")
        role = m["role"]
        if role not in ROLES:
            raise ValueError(
                f"messages[{i}]: unknown role {role!r} (expected one of {', '.join(ROLES)})"
            )
        if not isinstance(m.get("content"), str):
            got = "nothing" if "content" not in m else _json_type(m["content"])
            raise ValueError(f"messages[{i}]: 'content' must be a string, got {got}")
        if "weight" in m:
            if role != "assistant":
                raise ValueError(f"messages[{i}]: 'weight' is only allowed on assistant messages")
            if isinstance(m["weight"], bool) or m["weight"] not in (0, 1):
                raise ValueError(f"messages[{i}]: 'weight' must be 0 or 1, got {m['weight']!r}")
        if role == "assistant" and m.get("weight", 1) != 0:
            trainable = True
    if messages[0]["role"] == "assistant":
        # There is no prompt to render before it (chat templates refuse empty conversations).
        raise ValueError("messages[0]: a conversation must start with a system or user message")
    if not trainable:
        raise ValueError("no trainable assistant turn (every assistant message has weight 0)")


def _render_plain(messages: list[dict], add_generation_prompt: bool) -> str:
    """Fallback rendering: "User: ...\\n\\nAssistant: ...". It is prefix-stable by construction,
    and the assistant's target starts with the space after "Assistant:", as it would in prose."""
    turns = [f"{_PLAIN_ROLE_NAMES[m['role']]}: {m['content']}" for m in messages]
    if add_generation_prompt:
        turns.append("Assistant:")
    return "\n\n".join(turns)


def _add_segment(segments: list[Segment], text: str, trainable: bool) -> None:
    # Merge neighbours with the same flag: fewer tokenization boundaries, same mask.
    if not text:
        return
    if segments and segments[-1].trainable == trainable:
        segments[-1] = Segment(segments[-1].text + text, trainable)
    else:
        segments.append(Segment(text, trainable))


def render_chat(messages: list[dict], tokenizer) -> list[Segment]:
    """Render a chat example into segments; only assistant text (weight != 0) is trainable.

    For assistant turn i, `render(messages[:i], add_generation_prompt=True)` minus what was
    already emitted is the masked prompt, and `render(messages[:i + 1])` minus that is the target.
    """
    _check_messages(messages)
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if template:

        def render(msgs, add_generation_prompt):
            return tokenizer.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=add_generation_prompt
            )
    else:
        render = _render_plain

    def not_prefix(what: str) -> ValueError:
        return ValueError(
            f"the chat template is not prefix-stable: {what}, so the assistant tokens cannot be "
            "located; use a template that does not rewrite earlier turns"
        )

    segments: list[Segment] = []
    done = ""  # everything emitted so far: the concatenation of `segments`
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(messages[:i], True)
        full = render(messages[: i + 1], False)
        if not prompt.startswith(done):
            raise not_prefix(f"rendering messages[:{i}] does not extend the earlier turns")
        if not full.startswith(prompt):
            raise not_prefix(
                f"messages[:{i + 1}] does not start with messages[:{i}] plus the generation prompt"
            )
        _add_segment(segments, prompt[len(done) :], False)
        _add_segment(segments, full[len(prompt) :], m.get("weight", 1) != 0)
        done = full
    if messages[-1]["role"] != "assistant":
        # Messages after the last assistant turn: context only (and nothing follows to learn).
        full = render(messages, False)
        if not full.startswith(done):
            raise not_prefix("rendering all messages does not extend the last assistant turn")
        _add_segment(segments, full[len(done) :], False)
    return segments


def render_generation_prompt(messages: list[dict], tokenizer) -> str:
    """The text a model continues to answer `messages` (roles system/user/assistant, string
    contents): the tokenizer's chat template with its generation prompt, or, without one, the
    same "User: ...\n\nAssistant:" rendering that render_chat trains such a model on."""
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return _render_plain(messages, True)


# plain rendering's next turn: where a model trained on it ends its answer
PLAIN_CHAT_STOP = "\n\n" + _PLAIN_ROLE_NAMES["user"] + ":"


# -----------------------------------------------------------------------------
# Tokenizing and packing


def _token_dtype(tokenizer) -> np.dtype:
    n_ids = max(len(tokenizer), tokenizer.eos_token_id + 1)
    return np.dtype(np.uint16 if n_ids <= 2**16 else np.uint32)


def text_batches(texts: Iterable[str]) -> Iterator[list[str]]:
    """Texts grouped for one tokenizer call each: at most TOKENIZE_BATCH texts, and no more
    once TOKENIZE_BATCH_CHARS characters are reached (so a single huge text is a batch alone)."""
    batch: list[str] = []
    chars = 0
    for text in texts:
        batch.append(text)
        chars += len(text)
        if len(batch) >= TOKENIZE_BATCH or chars >= TOKENIZE_BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _pack(
    docs: list[list[Segment]],
    tokenizer,
    seq_len: int,
    dtype: np.dtype,
    on_batch: Callable[[int], None] | None = None,
) -> PackedSplit:
    """Tokenize and pack documents into a PackedSplit holding in-memory arrays. `on_batch`
    gets the number of characters each tokenizer call took (for progress)."""
    eos = tokenizer.eos_token_id
    texts = [seg.text for doc in docs for seg in doc]
    flags = np.fromiter((seg.trainable for doc in docs for seg in doc), bool, count=len(texts))
    segs_per_doc = np.fromiter(map(len, docs), np.int64, count=len(docs))
    assert (segs_per_doc > 0).all(), "every document needs at least one segment"

    # Each batch call's ids go straight into a numpy array, so the (much larger) Python lists
    # never exist for more than one bounded batch at a time.
    id_chunks, len_chunks = [], []
    for batch in text_batches(texts):
        # verbose=False: documents longer than model_max_length are expected; packing cuts them.
        ids = tokenizer(
            batch, add_special_tokens=False, return_attention_mask=False, verbose=False
        )["input_ids"]
        lens = np.fromiter(map(len, ids), np.int64, count=len(ids))
        if on_batch is not None:
            on_batch(sum(map(len, batch)))
        id_chunks.append(
            np.fromiter(itertools.chain.from_iterable(ids), dtype, count=int(lens.sum()))
        )
        len_chunks.append(lens)
    ids = np.concatenate(id_chunks)
    seg_lens = np.concatenate(len_chunks)
    mask = np.repeat(flags, seg_lens)

    # One EOS after each document, trained iff the document's last segment is.
    last_seg = np.cumsum(segs_per_doc) - 1
    doc_ends = np.cumsum(seg_lens)[last_seg]  # token offset just past each document
    ids = np.insert(ids, doc_ends, eos)
    mask = np.insert(mask, doc_ends, flags[last_seg])

    # Cut into rows of seq_len; pad the last row with masked EOS rather than dropping it.
    n_tokens = len(ids)
    n_rows = -(-n_tokens // seq_len)
    pad = n_rows * seq_len - n_tokens
    tokens = np.concatenate([ids, np.full(pad, eos, dtype)]).reshape(n_rows, seq_len)
    mask = np.concatenate([mask, np.zeros(pad, bool)]).astype(np.uint8).reshape(n_rows, seq_len)
    # after the insert, document i's EOS sits at doc_ends[i] + i and the next one starts after it
    starts = np.concatenate([[0], doc_ends + np.arange(1, len(doc_ends) + 1)])
    positions = _document_positions(starts, n_rows, seq_len)
    return PackedSplit(tokens, mask, positions, len(docs), n_tokens, int(mask.sum()))


def _document_positions(starts: np.ndarray, n_rows: int, seq_len: int) -> np.ndarray:
    """Each token's position within its document, restarting at 0 at every document start
    (`starts`: offsets into the packed stream, sorted; the padding counts as one more document)
    and at every row start, since a row that begins mid-document sees none of its beginning.
    A document's EOS belongs to it. The trainer passes these as position ids, which makes
    attention per document; they come from the packer because an EOS token alone does not mark
    a boundary: chat templates whose end-of-turn token is the EOS put several in one document."""
    n = n_rows * seq_len
    index = np.arange(n)
    lengths = np.diff(np.append(starts, n))
    in_document = index - np.repeat(starts, lengths)
    dtype = np.uint16 if seq_len <= 2**16 else np.uint32
    return np.minimum(in_document, index % seq_len).astype(dtype).reshape(n_rows, seq_len)


def _holdout(docs: list, val_fraction: float, seed: int, where: str) -> tuple[list, list]:
    """Split whole documents into (train, val); train keeps the original order."""
    n = len(docs)
    if n < 2:
        raise DataFormatError(
            where,
            None,
            f"only {n} document, too few to hold out validation data; give a validation file",
        )
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    is_val = np.zeros(n, bool)
    is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    train = [d for d, v in zip(docs, is_val, strict=True) if not v]
    val = [d for d, v in zip(docs, is_val, strict=True) if v]
    return train, val


def nested_subset(docs: list, fraction: float, seed: int) -> list:
    """The first round(fraction * n) documents (at least one) of one seeded order, kept in file
    order. The order depends only on `seed` and n, so with the same seed a smaller fraction
    always selects a subset of a larger one (1/16 of the data inside 1/8, inside 1/4, ...): the
    nested target amounts of a data-efficiency reference curve. Applied after the holdout, so
    every fraction is validated on the same held-out documents."""
    if fraction >= 1:
        return docs
    n = len(docs)
    k = min(n, max(1, round(fraction * n)))
    # Its own random stream: the holdout already drew from default_rng(seed).
    order = np.random.default_rng([seed, 1]).permutation(n)
    return [docs[i] for i in np.sort(order[:k])]


# -----------------------------------------------------------------------------
# Cache


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything about the tokenizer that can change the packed arrays."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The full serialized tokenizer: vocab, merges, normalizer, added tokens, truncation.
        vocab = backend.to_str()
    else:  # a Python-only tokenizer: its class and vocabulary are the best we have
        vocab = type(tokenizer).__name__ + json.dumps(sorted(tokenizer.get_vocab().items()))
    parts = {
        "vocab": hashlib.sha256(vocab.encode()).hexdigest(),
        "chat_template": getattr(tokenizer, "chat_template", None),  # str, dict or None
        "eos_token_id": tokenizer.eos_token_id,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # streams in chunks


def _cache_key(paths, val_paths, fingerprint, seq_len, val_fraction, seed, subset_fraction) -> str:
    # The suffix is part of a file's identity: the same bytes mean different documents as
    # .txt and as .jsonl.
    def ident(p: Path):
        return [p.suffix.lower(), _file_sha256(p)]

    parts = {
        "version": FORMAT_VERSION,
        "paths": [ident(p) for p in paths],
        "val_paths": [ident(p) for p in val_paths],
        "tokenizer": fingerprint,
        "seq_len": seq_len,
        "val_fraction": val_fraction,
        "seed": seed,
    }
    if subset_fraction < 1:  # only then: entries made before subsets existed stay valid
        parts["subset_fraction"] = subset_fraction
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _load_entry(entry: Path, key: str, from_cache: bool) -> PackedDataset:
    meta = json.loads((entry / "meta.json").read_text())
    splits = {}
    for name in ("train", "val"):
        counts = meta[name]
        splits[name] = PackedSplit(
            tokens=np.load(entry / f"{name}_tokens.npy", mmap_mode="r"),
            loss_mask=np.load(entry / f"{name}_mask.npy", mmap_mode="r"),
            positions=np.load(entry / f"{name}_positions.npy", mmap_mode="r"),
            n_documents=counts["n_documents"],
            n_tokens=counts["n_tokens"],
            n_trainable_tokens=counts["n_trainable_tokens"],
        )
    return PackedDataset(
        train=splits["train"],
        val=splits["val"],
        format=meta["format"],
        cache_key=key,
        from_cache=from_cache,
    )


@contextmanager
def _durable_open(path: Path):
    # fsync before the rename, so that after a power cut the entry cannot hold empty files.
    with open(path, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def _is_entry(entry: Path) -> bool:
    # meta.json is written last inside the temporary directory, and the directory only gets
    # its final name once complete; a final-named directory without it was not made by us.
    return (entry / "meta.json").is_file()


# -----------------------------------------------------------------------------
# Entry point


def _read_all(paths: list[Path], tokenizer) -> tuple[list[str], list[list[Segment]]]:
    formats, docs = [], []
    for p in paths:
        fmt, file_docs = read_documents(p, tokenizer)
        formats.append(fmt)
        docs.extend(file_docs)
    return formats, docs


def prepare_dataset(
    paths: list[str],
    *,
    tokenizer,
    seq_len: int,
    cache_dir: str | Path,
    val_paths: list[str] = (),
    val_fraction: float = 0.05,
    seed: int = 0,
    subset_fraction: float = 1.0,
    progress: Callable[[float], None] | None = None,
) -> PackedDataset:
    """Read, split, tokenize and pack `paths` (and `val_paths`), or load the same from the cache.
    `progress` is called with the share of the work done, rising to 1.0 (a cache hit: 1.0 once);
    tokenizing is the long part, so the share is of the characters tokenized so far.

    With `val_paths`, all of `paths` is training data and `val_paths` is the validation split.
    Without, round(val_fraction * n_documents) documents (at least one) are held out, chosen by
    `seed`; the others keep their file order. `subset_fraction` < 1 then keeps only that share
    of the training documents (`nested_subset`); the validation split does not change.
    """
    if isinstance(paths, str | os.PathLike):  # a lone path would iterate as characters
        paths = [paths]
    if isinstance(val_paths, str | os.PathLike):
        val_paths = [val_paths]
    paths, val_paths = [Path(p) for p in paths], [Path(p) for p in val_paths]
    if not paths:
        raise ValueError("no training files given")
    if isinstance(seq_len, bool) or not isinstance(seq_len, numbers.Integral) or seq_len < 2:
        raise ValueError(
            f"seq_len must be an integer >= 2 (an input and a target), got {seq_len!r}"
        )
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not 0 < subset_fraction <= 1:
        raise ValueError(f"subset_fraction must be in (0, 1], got {subset_fraction!r}")
    seq_len, val_fraction, seed = int(seq_len), float(val_fraction), int(seed)  # JSON-able
    subset_fraction = float(subset_fraction)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; it is needed to separate documents")
    for p in paths + val_paths:
        if not p.is_file():
            raise DataFormatError(p, None, "no such file")

    cache_dir = Path(cache_dir)
    key = _cache_key(
        paths,
        val_paths,
        tokenizer_fingerprint(tokenizer),
        seq_len,
        val_fraction,
        seed,
        subset_fraction,
    )
    entry = cache_dir / key
    if _is_entry(entry):
        log.info("data cache hit: %s", entry)
        if progress is not None:
            progress(1.0)
        return _load_entry(entry, key, from_cache=True)

    t0 = time.perf_counter()
    formats, docs = _read_all(paths, tokenizer)
    where = ", ".join(str(p) for p in paths)
    if not docs:
        raise DataFormatError(where, None, "no documents (every record is empty)")
    if val_paths:
        train_docs = docs
        _, val_docs = _read_all(val_paths, tokenizer)
        if not val_docs:
            raise DataFormatError(", ".join(map(str, val_paths)), None, "no documents")
    else:
        train_docs, val_docs = _holdout(docs, val_fraction, seed, where)
    train_docs = nested_subset(train_docs, subset_fraction, seed)  # after the holdout
    fmt = formats[0] if len(set(formats)) == 1 else "mixed"

    t1 = time.perf_counter()
    dtype = _token_dtype(tokenizer)
    on_batch = None
    if progress is not None:
        total = sum(len(seg.text) for doc in (*train_docs, *val_docs) for seg in doc)
        done = 0

        def on_batch(chars: int) -> None:
            nonlocal done
            done += chars
            progress(min(done / max(total, 1), 1.0))

    splits = {
        "train": _pack(train_docs, tokenizer, seq_len, dtype, on_batch),
        "val": _pack(val_docs, tokenizer, seq_len, dtype, on_batch),
    }
    t2 = time.perf_counter()
    n_tokens = sum(split.n_tokens for split in splits.values())
    log.info(
        "read %d documents in %.2fs; tokenized and packed %d tokens in %.2fs (%.0f tokens/s)",
        len(train_docs) + len(val_docs),
        t1 - t0,
        n_tokens,
        t2 - t1,
        n_tokens / max(t2 - t1, 1e-9),
    )

    # Build the entry under a private temporary name, then rename it into place in one step.
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        meta = {
            "version": FORMAT_VERSION,
            "format": fmt,
            "seq_len": seq_len,
            "subset_fraction": subset_fraction,
            "token_dtype": dtype.name,
            "paths": [str(p) for p in paths],  # for people reading the cache; not in the key
            "val_paths": [str(p) for p in val_paths],
            "seconds": {"read": round(t1 - t0, 3), "tokenize_pack": round(t2 - t1, 3)},
        }
        for name, split in splits.items():
            with _durable_open(tmp / f"{name}_tokens.npy") as f:
                np.save(f, split.tokens)
            with _durable_open(tmp / f"{name}_mask.npy") as f:
                np.save(f, split.loss_mask)
            with _durable_open(tmp / f"{name}_positions.npy") as f:
                np.save(f, split.positions)
            meta[name] = {
                "n_documents": split.n_documents,
                "n_sequences": len(split),
                "n_tokens": split.n_tokens,
                "n_trainable_tokens": split.n_trainable_tokens,
            }
        with _durable_open(tmp / "meta.json") as f:  # last: its presence marks a full entry
            f.write(json.dumps(meta, indent=2).encode())
        if entry.exists() and not _is_entry(entry):
            shutil.rmtree(entry)  # an incomplete directory under the final name: not ours
        try:
            os.replace(tmp, entry)
        except OSError:
            if not _is_entry(entry):
                raise
            # Another process finished the same entry first; its files are identical to ours.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _load_entry(entry, key, from_cache=False)
