"""Task evals: score a model on a small labelled set while it trains.

    records = load_eval_set(path, "generation", limit=50)
    result = run_eval(spec_eval, records, model, tokenizer, device)   # -> EvalResult

Two kinds of eval file, JSON Lines, one kind per file (decided by the first record):

- generation: `{"prompt": str, "reference": str}` or `{"messages": [chat], "reference": str}`.
  The model answers greedily (generation.generate_batch, the serving process's batched decoder);
  chat prompts are rendered exactly as training and serving render them
  (data.render_generation_prompt). A scorer compares the answer with the reference:
    exact_match  equal after stripping and collapsing whitespace;
    contains     the (normalised) reference occurs in the answer;
    numeric      the last number of the answer equals the last number of the reference
                 (GSM8K's `#### 42`; thousands commas, signs and decimals read as numbers);
    regex        the pattern's first capture group (or whole match, without groups) at its
                 first match in the answer, normalised, equals the normalised reference.
- multiple_choice: `{"context": str, "choices": [str, ...], "label": int}`. Each choice is
  scored by the log-likelihood of its tokens after the context (context tokens, with the
  tokenizer's own bos, then the choice's tokens, each encoded on its own: write the choice with
  the leading space it has in running text). `accuracy` takes the choice with the highest sum
  of log-probabilities; `accuracy_norm` the highest sum divided by the choice's length in
  characters (lm-eval's acc_norm). Ties go to the first choice.

Everything here is plain functions over a model and tokenizer already in memory; the trainer
(trainer._run_task_evals) decides when they run and turns an `EvalResult` into metrics.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import generation
from .data import DataFormatError, Problems, _check_messages, _iter_lines, _json_type
from .models import max_sequence_length

GENERATION, MULTIPLE_CHOICE, LM_EVAL = "generation", "multiple_choice", "lm_eval"
KINDS = (GENERATION, MULTIPLE_CHOICE)  # the kinds an eval file holds (lm_eval brings its own data)
GENERATION_BATCH = 16  # prompts decoded together
CHOICE_BATCH = 32  # context+choice rows per forward pass


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class GenerationRecord:
    reference: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class ChoiceRecord:
    context: str
    choices: list[str]
    label: int


def record_kind(obj: dict[str, Any]) -> str:
    """Which kind of eval record `obj` is, judged by its keys; ValueError if neither."""
    if "choices" in obj or "label" in obj or "context" in obj:
        return MULTIPLE_CHOICE
    if "reference" in obj or "prompt" in obj or "messages" in obj:
        return GENERATION
    keys = ", ".join(repr(k) for k in obj) or "none"
    raise ValueError(
        "unrecognized eval record: expected 'prompt' or 'messages' with 'reference' "
        f"(generation), or 'context', 'choices' and 'label' (multiple_choice) (keys: {keys})"
    )


def parse_record(obj: Any, kind: str) -> GenerationRecord | ChoiceRecord:
    """One parsed JSON line -> its record of `kind`; ValueError naming the broken rule."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {_json_type(obj)}")
    if kind == GENERATION:
        return _generation_record(obj)
    return _choice_record(obj)


def _string(obj: dict[str, Any], key: str) -> str:
    if key not in obj:
        raise ValueError(f"missing '{key}'")
    if not isinstance(obj[key], str):
        raise ValueError(f"'{key}' must be a string, got {_json_type(obj[key])}")
    return obj[key]


def _generation_record(obj: dict[str, Any]) -> GenerationRecord:
    reference = _string(obj, "reference")
    if "prompt" in obj and "messages" in obj:
        raise ValueError("give 'prompt' or 'messages', not both")
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        last = messages[-1]
        if isinstance(last, dict) and last.get("role") == "assistant":
            raise ValueError("the last message is the model's to write: end with a user message")
        # the training checks, less the rule that some assistant turn is trainable
        _check_messages([*messages, {"role": "assistant", "content": ""}])
        return GenerationRecord(reference=reference, messages=messages)
    if "prompt" not in obj:
        raise ValueError("missing 'prompt' (or 'messages')")
    return GenerationRecord(reference=reference, prompt=_string(obj, "prompt"))


def _choice_record(obj: dict[str, Any]) -> ChoiceRecord:
    context = _string(obj, "context")
    choices = obj.get("choices")
    if "choices" not in obj:
        raise ValueError("missing 'choices'")
    if not isinstance(choices, list) or len(choices) < 2:
        raise ValueError("'choices' must be a list of at least 2 strings")
    for i, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice:
            raise ValueError(f"choices[{i}] must be a non-empty string")
    if "label" not in obj:
        raise ValueError("missing 'label'")
    label = obj["label"]
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise ValueError(f"'label' must be an index into 'choices' (0..{len(choices) - 1})")
    return ChoiceRecord(context=context, choices=list(choices), label=label)


def iter_eval_records(
    path: str | Path,
    problems: Problems | None = None,
    max_line_bytes: int | None = None,
) -> Iterator[tuple[str, GenerationRecord | ChoiceRecord]]:
    """(kind, record) for every good line of an eval file. The first record that parses decides
    the file's kind; every other line must be of it. A bad line raises DataFormatError naming
    it, or, given `problems`, is added there and skipped (upload validation reports them all)."""
    path = Path(path)
    kind: str | None = None
    decided_by = 0
    seen = False
    for lineno, line in _iter_lines(path, problems, max_line_bytes):
        if not line.strip():
            continue
        seen = True
        try:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {_json_type(obj)}")
            this = record_kind(obj)
            if kind is not None and this != kind:
                raise ValueError(
                    f"this line is a {this} record but the file is {kind} (decided by line "
                    f"{decided_by})"
                )
            record = parse_record(obj, this)
        except ValueError as e:
            error = DataFormatError(path, lineno, str(e))
            if problems is None:
                raise error from None
            problems.add(error)
            continue
        if kind is None:
            kind, decided_by = this, lineno
        yield kind, record
    if not seen:
        raise DataFormatError(path, None, "file is empty")


def eval_file_stats(
    path: str | Path, problems: Problems | None = None, max_line_bytes: int | None = None
) -> dict[str, Any]:
    """An eval file's stats for the files API: {"format": "eval", "kind", "examples"}."""
    kinds = [kind for kind, _ in iter_eval_records(path, problems, max_line_bytes)]
    kind, examples = (kinds[0] if kinds else None), len(kinds)
    if kind is None and (problems is None or not problems.count):
        raise DataFormatError(path, None, "no eval records")
    return {"format": "eval", "kind": kind, "examples": examples}


class WrongKind(ValueError):
    """An eval file holds records of another kind than its eval says."""


def load_eval_set(
    path: str | Path, kind: str, limit: int | None = None
) -> list[GenerationRecord | ChoiceRecord]:
    """The first `limit` (default all) records of an eval file, which must be of `kind`
    (WrongKind if not; DataFormatError naming the line for a bad record)."""
    records = []
    for found, record in iter_eval_records(path):
        if found != kind:
            raise WrongKind(f"the file holds {found} records, not {kind}")
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    return records


# ---------------------------------------------------------------------------- scorers
def normalise(text: str) -> str:
    """Stripped, with every run of whitespace one space."""
    return " ".join(text.split())


# a number as written in answers: optional sign, digits with optional thousands commas,
# optional decimals (`-1,234.5`, `42`, `.5`)
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")


def last_number(text: str) -> float | None:
    """The value of the last number written in `text` (commas between thousands allowed;
    a trailing full stop is punctuation, not a decimal point); None when there is none."""
    found = [m.group() for m in _NUMBER.finditer(text) if any(c.isdigit() for c in m.group())]
    if not found:
        return None
    return float(found[-1].replace(",", ""))


def exact_match(answer: str, reference: str) -> bool:
    return normalise(answer) == normalise(reference)


def contains(answer: str, reference: str) -> bool:
    return normalise(reference) in normalise(answer)


def numeric(answer: str, reference: str) -> bool:
    """The answer's last number equals the reference's (GSM8K: `... #### 42`)."""
    want = last_number(reference)
    got = last_number(answer)
    return want is not None and got is not None and math.isclose(got, want, abs_tol=1e-9)


def regex(answer: str, reference: str, pattern: str) -> bool:
    match = re.search(pattern, answer)
    if match is None:
        return False
    found = match.group(1) if match.re.groups else match.group(0)
    return found is not None and normalise(found) == normalise(reference)


SCORERS = ("exact_match", "contains", "numeric", "regex")


def score(scorer: str, answer: str, reference: str, pattern: str | None = None) -> bool:
    if scorer == "exact_match":
        return exact_match(answer, reference)
    if scorer == "contains":
        return contains(answer, reference)
    if scorer == "numeric":
        return numeric(answer, reference)
    if scorer == "regex":
        if pattern is None:
            raise ValueError("the regex scorer needs a pattern")
        return regex(answer, reference, pattern)
    raise ValueError(f"unknown scorer {scorer!r}")


# ---------------------------------------------------------------------------- running
@dataclass
class EvalResult:
    correct: int
    total: int
    correct_norm: int | None = None  # multiple choice: by length-normalised log-likelihood

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def accuracy_norm(self) -> float | None:
        if self.correct_norm is None:
            return None
        return self.correct_norm / self.total if self.total else 0.0

    def metrics(self, name: str) -> dict[str, float | int]:
        """`eval/<name>/accuracy`, `.../accuracy_norm` (multiple choice), `correct`, `total`."""
        out: dict[str, float | int] = {f"eval/{name}/accuracy": self.accuracy}
        if self.correct_norm is not None:
            out[f"eval/{name}/accuracy_norm"] = self.accuracy_norm
        out[f"eval/{name}/correct"] = self.correct
        out[f"eval/{name}/total"] = self.total
        return out


def generate_answers(
    loaded: generation.LoadedModel,
    records: list[GenerationRecord],
    max_tokens: int,
    batch_size: int = GENERATION_BATCH,
) -> list[str]:
    """Greedy answers, in order, decoded `batch_size` prompts at a time (similar lengths
    together). Prompt and answer fit the model's context: max_tokens is cut to leave a token
    of prompt, and a prompt too long for the rest keeps its last tokens."""
    context = loaded.context_length
    if context is not None:
        max_tokens = max(1, min(max_tokens, context - 1))
    prompts: list[tuple[list[int], tuple[str, ...]]] = []
    for record in records:
        if record.messages is not None:
            ids, stop = generation.encode_chat(loaded, record.messages), loaded.chat_stop
        else:
            ids, stop = generation.encode_text(loaded, record.prompt or ""), ()
        if context is not None:
            ids = ids[-(context - max_tokens) :]
        prompts.append((ids, stop))
    answers = [""] * len(records)
    order = sorted(range(len(records)), key=lambda i: len(prompts[i][0]))
    for start in range(0, len(order), batch_size):
        requests = []
        for i in order[start : start + batch_size]:
            ids, stop = prompts[i]
            params = generation.SamplingParams(
                max_tokens=max_tokens, temperature=0.0, stop=stop, seed=0
            )

            def collect(chunk: generation.Chunk, i: int = i) -> None:
                answers[i] += chunk.text

            requests.append(generation.Request(ids, params, emit=collect))
        generation.generate_batch(loaded, requests)
    return answers


def choice_rows(tokenizer: Any, record: ChoiceRecord) -> list[tuple[list[int], int]]:
    """Per choice: (context ids + choice ids, number of choice tokens at the end)."""
    context = tokenizer(record.context, add_special_tokens=True)["input_ids"]
    rows = []
    for choice in record.choices:
        ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
        rows.append((context + ids, len(ids)))
    return rows


@torch.inference_mode()
def choice_logprobs(
    model: Any,
    tokenizer: Any,
    records: list[ChoiceRecord],
    device: torch.device,
    batch_size: int = CHOICE_BATCH,
) -> list[list[float]]:
    """Per record, per choice: the sum of the log-probabilities of the choice's tokens given the
    context and the choice's earlier tokens. Rows are right-padded and batched; a row longer
    than the model's context keeps its last tokens (the choice is kept whole)."""
    limit = max_sequence_length(model)
    rows: list[tuple[int, int, list[int], int]] = []  # record, choice, ids, choice tokens
    for r, record in enumerate(records):
        for c, (ids, n) in enumerate(choice_rows(tokenizer, record)):
            if limit is not None and len(ids) > limit:
                ids = ids[-limit:]
            rows.append((r, c, ids, min(n, len(ids) - 1)))
    out = [[0.0] * len(record.choices) for record in records]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(rows)), key=lambda k: len(rows[k][2]))
    for start in range(0, len(order), batch_size):
        batch = [rows[k] for k in order[start : start + batch_size]]
        width = max(len(ids) for _, _, ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for b, (_, _, ids, _) in enumerate(batch):
            input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[b, : len(ids)] = 1
        logits = model(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False
        ).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        for b, (r, c, ids, n) in enumerate(batch):
            # tokens L-n .. L-1 are the choice; token t is predicted at position t-1
            length = len(ids)
            targets = input_ids[b, length - n : length].to(device)
            picked = logprobs[b, length - n - 1 : length - 1].gather(1, targets[:, None])
            out[r][c] = float(picked.sum())
    return out


def _first_max(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def score_choices(records: list[ChoiceRecord], logprobs: list[list[float]]) -> EvalResult:
    correct = correct_norm = 0
    for record, scores in zip(records, logprobs, strict=True):
        correct += _first_max(scores) == record.label
        normed = [s / len(choice) for s, choice in zip(scores, record.choices, strict=True)]
        correct_norm += _first_max(normed) == record.label
    return EvalResult(correct=correct, total=len(records), correct_norm=correct_norm)


def run_eval(
    config: Any,
    records: list[GenerationRecord | ChoiceRecord],
    model: Any,
    tokenizer: Any,
    device: torch.device,
) -> EvalResult:
    """Score `model` on one eval set; `config` is a spec.EvalSpec. The caller sets eval mode
    (and autocast, on GPU)."""
    if config.kind == MULTIPLE_CHOICE:
        return score_choices(records, choice_logprobs(model, tokenizer, records, device))
    if config.kind == LM_EVAL:
        return harness_eval(config, model, tokenizer, device)
    loaded = generation.for_model(config.name, model, tokenizer, device)
    answers = generate_answers(loaded, records, config.max_tokens)
    scorer = config.scorer or "exact_match"
    correct = sum(
        score(scorer, answer, record.reference, config.pattern)
        for answer, record in zip(answers, records, strict=True)
    )
    return EvalResult(correct=correct, total=len(records))


def harness_eval(config: Any, model: Any, tokenizer: Any, device: torch.device) -> EvalResult:
    """An `lm_eval` eval: the harness's task on this model, its `acc` (and `acc_norm`) turned
    into counts over the examples it scored."""
    from . import harness

    result = harness.evaluate_model(
        model,
        tokenizer,
        device,
        [config.task],
        name=config.name,
        include_path=harness.tasks_folder(),
        max_length=max_sequence_length(model),
        limit=config.limit,
    )
    values = result.tasks.get(config.task, {})
    total = result.samples.get(config.task, 0)
    if "acc,none" not in values:
        found = ", ".join(sorted(k.split(",")[0] for k in values)) or "none"
        raise ValueError(f"lm-eval task {config.task} reports no acc metric (it has: {found})")
    norm = values.get("acc_norm,none")
    return EvalResult(
        correct=round(values["acc,none"] * total),
        total=total,
        correct_norm=None if norm is None else round(norm * total),
    )
