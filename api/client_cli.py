"""`replayft files ...` and `replayft jobs ...`: client commands for internal teams.

They speak HTTP to any ReplayFT server, so they work against a laptop's `replayft serve` and a
shared deployment alike:

  replayft files upload PATH --purpose fine-tune|replay [--wait [--timeout SECONDS]]
  replayft jobs submit SPEC.yaml [--wait] [--suffix S] [--timeout SECONDS]
  replayft jobs list [--status S] [--limit N]
  replayft jobs show ID
  replayft jobs cancel ID
  replayft jobs logs ID [--follow [--poll]]

Every command takes `--url` (default `$REPLAYFT_URL`, else http://127.0.0.1:8000; a trailing
`/v1`, as OpenAI clients write base URLs, is accepted) and `--api-key` (default
`$REPLAYFT_API_KEY`). The key goes only into the Authorization header: it is never printed, and
error messages are built from the server's answer, never from the request.

`jobs submit` reads the engine's YAML spec, the file `replayft train` takes. Local data files are
uploaded (`training_file` and `validation_file` with purpose fine-tune, `replay.dataset` with
purpose replay); a value that is not a local file is passed through as a file id (`file-...`)
or, for `replay.dataset`, as a registered corpus name. The API takes one file id per
`training_file` / `validation_file`, so several local JSON Lines files of one format are joined
into one upload (the engine reads several files as their documents in order, so the run is the
same); any other combination is refused with the reason. Once the server has validated every
upload, the spec's fields become the job request: `model`, `seed`, `suffix`, `replay` (dataset,
fraction, target_stage2_allocation, stage2_duration) and `method.supervised.hyperparameters`
(n_epochs, batch_size, learning_rate, lr_scheduler, seq_len, total_steps, optimizer_state, ...,
and the spec's LoRA `method` as `adapter`).
Only the fields the spec sets are sent, so the server's defaults (the engine's) fill the rest. A
field the API cannot carry (weight_decay, gguf_file, ...) is an error when it differs from the
server's default rather than being dropped in silence; `device` and `cache_dir` belong to the
server and are ignored with a note. If the server rejects the job, the files uploaded for it are
deleted again.

Output: results go to stdout (JSON for single objects, a table for lists, `ID STATUS` lines for
submit and cancel), progress and errors to stderr. Exit status: 0 done; 1 the server or the job
failed (unreachable server, 5xx, rejected key, job failed or cancelled); 2 the input was rejected
(a spec error, a data file that failed validation, or a 4xx naming the field, printed as
`error: <param>: <message>`); 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV, KEY_ENV = "REPLAYFT_URL", "REPLAYFT_API_KEY"
PURPOSES = ("fine-tune", "replay")
JOB_STATUSES = (
    "validating_files",
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "paused",
)
TERMINAL = ("succeeded", "failed", "cancelled")
POLL_S = 1.0
PROGRESS_EVERY_S = 5.0
RETRIES = 4  # attempts for requests that are safe to repeat
RETRY_STATUSES = (429, 502, 503, 504)
STREAM_RECONNECTS = 5
JOBS = "/fine_tuning/jobs"

# Spec fields the server decides for itself: ignored with a note.
SERVER_SIDE_FIELDS = ("device", "cache_dir")
# Spec fields handled one by one in `_job_request`, not through the generic field mapping.
MAPPED_FIELDS = ("model", "seed", "training_file", "validation_file", "replay", "method")
UNSUPPORTED_HINTS = {
    "gguf_file": "register the model on the server (`replayft models add NAME PATH --gguf-file "
    "FILE`) and use NAME as `model`",
}


class CLIError(Exception):
    """A failure to report as `error: ...` lines (one per line of the message)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _out(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _ts(seconds: int | float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Any, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


# ---------------------------------------------------------------------------- HTTP
def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url.removesuffix("/v1")


def api_error(status: int, body: Any, text: str = "") -> CLIError:
    """The server's error answer as a CLIError: `param: message`, exit 2 for a rejected request."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("message"):
        message, param = str(err["message"]), err.get("param")
        if param and not message.startswith(f"{param}:"):
            message = f"{param}: {message}"
    else:
        message, param = f"HTTP {status}: {text.strip()[:300] or 'no details'}", None
    if status in (401, 403):
        return CLIError(f"{message} (HTTP {status}: check --api-key or ${KEY_ENV})", 1)
    if 400 <= status < 500:
        return CLIError(message, 2)
    return CLIError(f"server error (HTTP {status}): {message}", 1)


def _retry_after(headers: Any, attempt: int) -> float:
    try:
        return min(float(headers.get("retry-after", "")), 30.0)
    except ValueError:
        return min(0.25 * 2**attempt, 8.0)


class Client:
    """The `/v1` API with one key. `request` returns parsed JSON or raises CLIError."""

    def __init__(self, url: str, api_key: str):
        try:
            import httpx
        except ImportError:
            raise CLIError("the client commands need httpx: pip install httpx") from None
        self.httpx = httpx
        self.url = normalize_url(url)
        self._http = httpx.Client(
            base_url=self.url + "/v1",
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "replayft-cli"},
            timeout=httpx.Timeout(60.0, connect=10.0),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def _unreachable(self, exc: Exception) -> CLIError:
        reason = str(exc) or type(exc).__name__
        return CLIError(
            f"cannot reach the server at {self.url}: {reason} (is it running? set --url or "
            f"${URL_ENV})",
            1,
        )

    def request(self, method: str, path: str, *, retry: bool | None = None, **kwargs: Any) -> Any:
        """`retry` (default: GET only) repeats transport errors and 429/502/503/504."""
        attempts = RETRIES if (method == "GET" if retry is None else retry) else 1
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            try:
                resp = self._http.request(method, path, **kwargs)
            except self.httpx.TransportError as exc:
                if last:
                    raise self._unreachable(exc) from None
                time.sleep(_retry_after({}, attempt))
                continue
            if resp.status_code in RETRY_STATUSES and not last:
                time.sleep(_retry_after(resp.headers, attempt))
                continue
            break
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = None
            raise api_error(resp.status_code, body, resp.text)
        try:
            return resp.json()
        except ValueError:
            raise CLIError(
                f"{method} {path}: the server at {self.url} answered {resp.status_code} with "
                f"something that is not JSON (is it a ReplayFT server?)"
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def upload(self, path: Path, purpose: str, filename: str | None = None) -> dict[str, Any]:
        """Multipart upload; httpx streams the file from disk in chunks."""
        with open(path, "rb") as f:
            return self.request(
                "POST",
                "/files",
                retry=False,  # the body is a consumed stream; a repeat could also store it twice
                files={"file": (filename or path.name, f, "application/octet-stream")},
                data={"purpose": purpose},
                timeout=self.httpx.Timeout(600.0, connect=10.0),
            )

    def delete_quietly(self, path: str) -> bool:
        try:
            self.request("DELETE", path, retry=True)
            return True
        except CLIError:
            return False

    def sse(self, path: str) -> Iterator[tuple[str, Any]]:
        """(event name, parsed data) frames of a Server-Sent Events stream."""
        # the server sends nothing while a job waits in the queue: a read timeout only means
        # "reconnect", which the caller does
        timeout = self.httpx.Timeout(10.0, read=120.0)
        headers = {"Accept": "text/event-stream"}
        with self._http.stream("GET", path, timeout=timeout, headers=headers) as resp:
            if resp.status_code >= 400:
                resp.read()
                try:
                    body = resp.json()
                except ValueError:
                    body = None
                raise api_error(resp.status_code, body, resp.text)
            name, data = "message", []
            for line in resp.iter_lines():
                if not line:
                    if data:
                        try:
                            yield name, json.loads("\n".join(data))
                        except ValueError:
                            pass  # not ours to interpret
                    name, data = "message", []
                elif line.startswith(":"):
                    continue
                else:
                    key, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if key == "event":
                        name = value
                    elif key == "data":
                        data.append(value)


def _client(args: argparse.Namespace) -> Client:
    url = getattr(args, "url", None) or os.environ.get(URL_ENV) or DEFAULT_URL
    key = getattr(args, "api_key", None) or os.environ.get(KEY_ENV)
    if not key:
        raise CLIError(
            f"no API key: set ${KEY_ENV} or pass --api-key (an admin mints one with "
            f"`replayft keys create --team NAME`)",
            2,
        )
    return Client(url, key)


def _list_all(client: Client, path: str, page_size: int = 100) -> Iterator[dict[str, Any]]:
    """Items of a cursor-paginated list, in the server's order (newest first)."""
    after = None
    while True:
        page = client.get(path, limit=page_size, after=after)
        data = page.get("data") or []
        yield from data
        if not page.get("has_more") or not data:
            return
        after = data[-1]["id"]


# ---------------------------------------------------------------------------- files
def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def wait_files(
    client: Client, files: list[dict[str, Any]], deadline: float | None = None
) -> list[dict[str, Any]]:
    """Poll until every file is `processed` or `error`; returns them in the given order."""
    done: dict[str, dict[str, Any]] = {}
    announced = False
    while True:
        for file in files:
            if file["id"] not in done:
                current = client.get(f"/files/{file['id']}")
                if current.get("status") in ("processed", "error"):
                    done[file["id"]] = current
        if len(done) == len(files):
            return [done[f["id"]] for f in files]
        pending = ", ".join(f["id"] for f in files if f["id"] not in done)
        if _expired(deadline):
            raise CLIError(f"timed out waiting for the server to validate {pending}", 1)
        if not announced:
            _err(f"waiting for the server to validate {pending} ...")
            announced = True
        time.sleep(POLL_S)


def _file_failure(file: dict[str, Any]) -> str:
    details = file.get("status_details") or "no details given"
    return f"{file['id']} ({file.get('filename')}) failed validation: {details}"


def cmd_files_upload(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise CLIError(f"{path}: no such file", 2)
    with _client(args) as client:
        file = client.upload(path, args.purpose)
        if args.wait:
            file = wait_files(client, [file], _deadline(args.timeout))[0]
    _out(json.dumps(file, indent=2))
    if file.get("status") == "error":
        raise CLIError(_file_failure(file), 2)
    return 0


# ---------------------------------------------------------------------------- spec -> request
@dataclass
class DataField:
    """One data field of a job: local files to upload and ids/names to pass through."""

    param: str
    purpose: str
    local: list[Path] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # filled in after uploading


@dataclass
class Submission:
    body: dict[str, Any]
    data: list[DataField]
    notes: list[str]


def _data_field(param: str, purpose: str, values: list[str], errors: list[str]) -> DataField:
    data = DataField(param, purpose)
    for value in values:
        path = Path(value)
        if path.is_file():
            data.local.append(path)
        elif path.exists():
            errors.append(f"{param}: {value} is not a file")
        elif value.startswith("file-") or param == "replay.dataset":
            data.remote.append(value)  # an uploaded file id, or a server-side corpus name
        else:
            errors.append(f"{param}: no such file: {value}")
    return data


def _differs_from_default(spec: Any, name: str) -> bool:
    info = type(spec).model_fields[name]
    default = info.get_default(call_default_factory=True)
    value = getattr(spec, name)
    if hasattr(value, "model_dump") and hasattr(default, "model_dump"):
        return value.model_dump() != default.model_dump()
    return value != default


def _adapter_request(method: Any) -> dict[str, Any] | None:
    """The spec's `method` as the API's `hyperparameters.adapter` (flat, only the keys the spec
    sets); None for full fine-tuning, whose lora settings the engine ignores as well."""
    if method.type == "full":
        return None
    adapter: dict[str, Any] = {"type": method.type, **method.lora.model_dump(exclude_unset=True)}
    if "export" in method.model_fields_set:
        adapter["export"] = method.export
    return adapter


def build_submission(spec: Any, suffix: str | None = None) -> Submission:
    """Map a checked engine JobSpec to a job request (files not uploaded yet).

    Raises CLIError(2) listing every field the API cannot carry."""
    from api.schemas.jobs import Hyperparameters, Replay

    errors: list[str] = []
    notes: list[str] = []
    hyper_fields = set(Hyperparameters.model_fields) - {"learning_rate_multiplier"}
    replay_fields = set(Replay.model_fields) - {"dataset"}

    body: dict[str, Any] = {"model": spec.model}
    hyperparameters: dict[str, Any] = {}
    for name in sorted(spec.model_fields_set):
        if name in MAPPED_FIELDS:
            continue
        if name in hyper_fields:
            value = getattr(spec, name)
            if hasattr(value, "model_dump"):  # lr_scheduler: only the keys the spec sets
                value = value.model_dump(exclude_unset=True)
                if not value:
                    continue
            hyperparameters[name] = value
        elif name in SERVER_SIDE_FIELDS:
            notes.append(f"{name}: chosen by the server; ignored")
        elif _differs_from_default(spec, name):
            default = type(spec).model_fields[name].get_default(call_default_factory=True)
            hint = UNSUPPORTED_HINTS.get(name) or (
                f"the server always uses {default!r}; remove it, or run the spec locally with "
                f"`replayft train`"
            )
            errors.append(f"{name}: not accepted by the API: {hint}")
    adapter = _adapter_request(spec.method)
    if adapter is not None:
        hyperparameters["adapter"] = adapter
    if "seed" in spec.model_fields_set:
        body["seed"] = spec.seed
    if suffix:
        body["suffix"] = suffix
    if hyperparameters:
        body["method"] = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}

    data: list[DataField] = []
    if not spec.training_file:
        errors.append(
            "training_file: the service runs fine-tuning jobs and needs target data; a spec "
            "without training_file (pre-training) runs with `replayft train`"
        )
    else:
        data.append(_data_field("training_file", "fine-tune", spec.training_file, errors))
    if spec.validation_file:
        data.append(_data_field("validation_file", "fine-tune", spec.validation_file, errors))
    for one in data:
        if len(one.local) + len(one.remote) > 1 and one.remote:
            errors.append(
                f"{one.param}: the API takes one file id per field; {len(one.remote)} of the "
                f"{len(one.local) + len(one.remote)} values are already uploaded files, which "
                f"cannot be joined with the others"
            )

    replay = spec.replay
    replay_body = {k: getattr(replay, k) for k in sorted(replay_fields) if hasattr(replay, k)}
    replay_body = {k: v for k, v in replay_body.items() if v is not None}
    if replay.validation_dataset:
        errors.append(
            "replay.validation_dataset: not accepted by the API: the server holds out documents "
            "of replay.dataset for val_loss_generic"
        )
    if replay.dataset:
        data.append(_data_field("replay.dataset", "replay", replay.dataset, errors))
    if replay_body or replay.dataset:
        body["replay"] = replay_body
    if errors:
        raise CLIError("\n".join(errors), 2)
    return Submission(body=body, data=data, notes=notes)


def _strip_bom_copy(src: Path, dst: Any) -> None:
    with open(src, "rb") as f:
        head = f.read(3)
        if head != b"\xef\xbb\xbf":
            dst.write(head)
        shutil.copyfileobj(f, dst)


def join_jsonl(paths: list[Path], param: str, out_dir: Path) -> Path:
    """Several JSON Lines files of one format -> one file (documents in order). CLIError(2) if
    they cannot be joined without changing what the engine reads."""
    from replay_engine.data import DataFormatError, detect_format

    formats: dict[Path, str] = {}
    for path in paths:
        if path.suffix.lower() not in (".jsonl", ".json"):
            raise CLIError(
                f"{param}: the API takes one file per field, and only JSON Lines files can be "
                f"joined into one upload; {path} is not .jsonl: combine the files yourself",
                2,
            )
        try:
            formats[path] = detect_format(path)
        except DataFormatError as exc:
            raise CLIError(f"{param}: {exc}", 2) from None
    if len(set(formats.values())) > 1:
        listed = ", ".join(f"{p.name} ({fmt})" for p, fmt in formats.items())
        raise CLIError(
            f"{param}: the API takes one file per field, and these files cannot be joined into "
            f"one because their formats differ: {listed}",
            2,
        )
    out = out_dir / f"{paths[0].stem}+{len(paths) - 1}more.jsonl"
    with open(out, "w+b") as dst:
        for path in paths:
            start = dst.tell()
            _strip_bom_copy(path, dst)
            if dst.tell() > start:
                dst.seek(-1, os.SEEK_END)
                if dst.read(1) != b"\n":
                    dst.write(b"\n")  # a last line without newline would merge with the next
    return out


def upload_data(
    client: Client, submission: Submission, tmp: Path, deadline: float | None = None
) -> list[str]:
    """Upload every local data file, wait until the server validated them and fill in the ids.

    Returns the ids uploaded here (the caller deletes them if the job is not created). On a
    failure the uploads made so far are deleted before the CLIError propagates."""
    uploaded: list[str] = []
    try:
        pending: list[tuple[DataField, dict[str, Any]]] = []
        for data in submission.data:
            locals_ = data.local
            if len(locals_) > 1 and data.param != "replay.dataset":
                joined = join_jsonl(locals_, data.param, tmp)
                _err(
                    f"note: {data.param}: the API takes one file per field; joined "
                    f"{len(locals_)} JSON Lines files into one upload ({joined.name})"
                )
                locals_ = [joined]
            for path in locals_:
                file = client.upload(path, data.purpose)
                uploaded.append(file["id"])
                _err(f"uploaded {path} -> {file['id']} ({data.param})")
                pending.append((data, file))
        processed = wait_files(client, [file for _, file in pending], deadline)
        failures = [
            f"{data.param}: {_file_failure(file)}"
            for (data, _), file in zip(pending, processed, strict=True)
            if file.get("status") == "error"
        ]
        if failures:
            raise CLIError("\n".join(failures), 2)
        for data, file in pending:
            data.ids.append(file["id"])
    except BaseException:
        _delete_uploads(client, uploaded)
        raise
    for data in submission.data:
        data.ids.extend(data.remote)
    return uploaded


def _delete_uploads(client: Client, ids: list[str]) -> None:
    removed = [i for i in ids if client.delete_quietly(f"/files/{i}")]
    if removed:
        _err(f"removed the files uploaded for this job: {', '.join(removed)}")


def _attach_ids(submission: Submission) -> dict[str, Any]:
    body = json.loads(json.dumps(submission.body))  # a deep copy of plain JSON
    for data in submission.data:
        if data.param == "replay.dataset":
            body["replay"]["dataset"] = data.ids[0] if len(data.ids) == 1 else data.ids
        else:
            body[data.param] = data.ids[0]
    return body


def _progress_text(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    parts = [f"step {progress.get('step', 0)}/{progress.get('total_steps') or '?'}"]
    if progress.get("stage") is not None:
        parts.append(f"stage {progress['stage']}")
    if progress.get("tokens_seen"):
        parts.append(f"{progress['tokens_seen']:,} tokens")
    if progress.get("eta_seconds") is not None:
        parts.append(f"eta {progress['eta_seconds']:.0f}s")
    return ", ".join(parts)


def wait_job(client: Client, job_id: str, deadline: float | None = None) -> dict[str, Any]:
    """Poll until the job is finished or paused, reporting status changes and progress."""
    last_status, last_step, last_report = None, None, 0.0
    while True:
        job = client.get(f"{JOBS}/{job_id}")
        status = job["status"]
        if status != last_status:
            _err(f"{job_id}: {status}")
            last_status = status
        step = (job.get("progress") or {}).get("step")
        now = time.monotonic()
        if (
            status == "running"
            and step
            and step != last_step
            and now - last_report >= PROGRESS_EVERY_S
        ):
            _err(f"  {_progress_text(job)}")
            last_step, last_report = step, now
        if status in TERMINAL or status == "paused":
            return job
        if _expired(deadline):
            raise CLIError(
                f"timed out waiting for job {job_id} ({status}, {_progress_text(job)}); it carries "
                f"on: `replayft jobs logs {job_id} --follow`, `replayft jobs cancel {job_id}`",
                1,
            )
        time.sleep(POLL_S)


def _job_outcome(job: dict[str, Any]) -> int:
    """Final line and exit status for a job that has stopped."""
    status = job["status"]
    line = f"{job['id']} {status}"
    if job.get("fine_tuned_model"):
        line += f" {job['fine_tuned_model']}"
    _out(line)
    if status == "succeeded":
        return 0
    if status == "failed":
        message = (job.get("error") or {}).get("message") or "no error message"
        raise CLIError(f"job {job['id']} failed: {message}", 1)
    if status == "paused":
        raise CLIError(f"job {job['id']} is paused; it continues once resumed", 1)
    raise CLIError(f"job {job['id']} was {status}", 1)


def cmd_jobs_submit(args: argparse.Namespace) -> int:
    from replay_engine.spec import SpecError, load_spec

    spec_path = Path(args.spec)
    if not spec_path.is_file():
        raise CLIError(f"{spec_path}: no such file", 2)
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise CLIError("\n".join(f"{path}: {message}" for path, message in exc.errors), 2) from None
    submission = build_submission(spec, suffix=args.suffix)
    for note in submission.notes:
        _err(f"note: {note}")
    deadline = _deadline(args.timeout)
    with _client(args) as client, tempfile.TemporaryDirectory(prefix="replayft-") as tmp:
        # the server validates uploads whether or not --wait is given; a job needs them done
        uploaded = upload_data(client, submission, Path(tmp), deadline)
        body = _attach_ids(submission)
        try:
            # the key makes a repeat after a lost answer return the same job, not a second one
            job = client.request(
                "POST",
                JOBS,
                json=body,
                headers={"Idempotency-Key": f"replayft-cli-{uuid.uuid4()}"},
                retry=True,
            )
        except CLIError as exc:
            if exc.exit_code == 2:  # rejected: the job does not exist, its files are no use
                _delete_uploads(client, uploaded)
            raise
        _out(f"{job['id']} {job['status']}")
        if not args.wait:
            return 0
        try:
            job = wait_job(client, job["id"], deadline)
        except KeyboardInterrupt:
            _err(
                f"stopped waiting; job {job['id']} carries on (`replayft jobs logs {job['id']} "
                f"--follow`, `replayft jobs cancel {job['id']}`)"
            )
            return 130
        return _job_outcome(job)


# ---------------------------------------------------------------------------- jobs: reads
def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def _job_row(job: dict[str, Any]) -> list[str]:
    progress = job.get("progress") or {}
    total = progress.get("total_steps") or (job.get("hyperparameters") or {}).get("total_steps")
    fraction = (job.get("replay") or {}).get("fraction")
    return [
        job["id"],
        job["status"],
        job.get("model") or "-",
        f"{progress.get('step', 0)}/{total or '?'}",
        "-" if fraction is None else f"{fraction:g}",
        _ts(job.get("created_at")),
    ]


def cmd_jobs_list(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    page = 100 if args.status else min(args.limit, 100)
    with _client(args) as client:
        for job in _list_all(client, JOBS, page_size=page):
            if args.status is None or job["status"] == args.status:
                rows.append(job)
                if len(rows) >= args.limit:
                    break
    if not rows:
        _err("no fine-tuning jobs" + (f" with status {args.status}" if args.status else ""))
        return 0
    header = ["ID", "STATUS", "MODEL", "STEP", "REPLAY", "CREATED (UTC)"]
    _out(_table([_job_row(j) for j in rows], header))
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.get(f"{JOBS}/{args.job_id}")
    _out(json.dumps(job, indent=2))
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.request("POST", f"{JOBS}/{args.job_id}/cancel")
    _out(f"{job['id']} {job['status']}")
    return 0


def event_line(event: dict[str, Any]) -> str:
    return f"{_ts(event.get('created_at'))}  {event.get('level', 'info'):<5}  {event['message']}"


def metrics_line(record: dict[str, Any], total_steps: int | None = None) -> str:
    """One compact line for an engine `train` record (evals already arrive as events)."""
    parts = [f"step {record.get('step')}/{total_steps or '?'}"]
    if record.get("stage") is not None:
        parts.append(f"stage {record['stage']}")
    parts.append(f"loss {_num(record.get('train_loss'))}")
    split = [
        f"{label} {record[name]:.4f}"
        for label, name in (("target", "train_loss_target"), ("generic", "train_loss_generic"))
        if record.get(name) is not None
    ]
    if split:
        parts.append(f"({', '.join(split)})")
    if record.get("lr") is not None:
        parts.append(f"lr {record['lr']:.2e}")
    if record.get("grad_norm") is not None:
        parts.append(f"gnorm {record['grad_norm']:.2f}")
    if record.get("tokens_per_second") is not None:
        parts.append(f"{record['tokens_per_second']:,.0f} tok/s")
    return "  ".join(parts)


def new_events(client: Client, job_id: str, seen: set[str]) -> list[dict[str, Any]]:
    """Events not in `seen`, oldest first (the API lists newest first: page until a seen one)."""
    fresh: list[dict[str, Any]] = []
    for event in _list_all(client, f"{JOBS}/{job_id}/events", page_size=100):
        if event["id"] in seen:
            break
        fresh.append(event)
    fresh.reverse()
    seen.update(e["id"] for e in fresh)
    return fresh


@dataclass
class _Follower:
    """What has been printed while following a job, so reconnects print nothing twice."""

    total_steps: int | None = None
    status: str | None = None
    events: set[str] = field(default_factory=set)
    steps: set[Any] = field(default_factory=set)

    def event(self, event: dict[str, Any]) -> None:
        if event["id"] not in self.events:
            self.events.add(event["id"])
            _out(event_line(event))

    def record(self, record: dict[str, Any]) -> None:
        if record.get("type") != "train" or record.get("step") in self.steps:
            return  # eval results are also events; a resumed run may resend a step
        self.steps.add(record.get("step"))
        _out(metrics_line(record, self.total_steps))

    def job(self, job: dict[str, Any]) -> None:
        self.status = job.get("status", self.status)
        self.total_steps = (job.get("progress") or {}).get("total_steps") or self.total_steps


def follow_stream(client: Client, job_id: str, follower: _Follower) -> str:
    """Print the job's SSE stream until the server says `done`; reconnects on a dropped
    connection. -> the final status."""
    failures = 0
    while True:
        try:
            for name, data in client.sse(f"{JOBS}/{job_id}/stream"):
                failures = 0
                if name == "event":
                    follower.event(data)
                elif name == "metrics":
                    follower.record(data)
                elif name == "job":
                    follower.job(data)
                elif name == "done":
                    return data.get("status") or follower.status or "unknown"
        except client.httpx.TransportError as exc:
            failures += 1
            if failures > STREAM_RECONNECTS:
                raise client._unreachable(exc) from None
            _err(f"(stream interrupted: {exc or type(exc).__name__}; reconnecting)")
        else:
            failures += 1  # ended without `done`: a proxy or a restarting server
            if failures > STREAM_RECONNECTS:
                raise CLIError(f"the event stream of {job_id} keeps ending early", 1)
        time.sleep(min(2.0**failures, 10.0))


def follow_poll(client: Client, job_id: str, follower: _Follower) -> str:
    """The same output as `follow_stream` by polling events, metrics and the job."""
    last_step = 0
    while True:
        job = client.get(f"{JOBS}/{job_id}")  # first: what follows includes all before it
        follower.job(job)
        for event in new_events(client, job_id, follower.events.copy()):
            follower.event(event)
        records = (
            client.get(f"{JOBS}/{job_id}/metrics", start_step=last_step, type="train").get("data")
            or []
        )
        for record in records:
            follower.record(record)
            last_step = max(last_step, record.get("step") or 0)
        if job["status"] in TERMINAL or job["status"] == "paused":
            return job["status"]
        time.sleep(POLL_S)


def cmd_jobs_logs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.get(f"{JOBS}/{args.job_id}")
        if not args.follow:
            for event in new_events(client, job["id"], set()):
                _out(event_line(event))
            return 0
        follower = _Follower()
        follower.job(job)
        follow = follow_poll if args.poll else follow_stream
        status = follow(client, job["id"], follower)
        if status in ("succeeded", "paused"):
            _err(f"{job['id']}: {status}")
            return 0
        final = client.get(f"{JOBS}/{job['id']}")
        if status == "failed":
            message = (final.get("error") or {}).get("message") or "no error message"
            raise CLIError(f"job {job['id']} failed: {message}", 1)
        raise CLIError(f"job {job['id']} was {status}", 1)


# ---------------------------------------------------------------------------- wiring
def _command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CLIError as exc:
            for line in str(exc).splitlines() or [""]:
                _err(f"error: {line}")
            return exc.exit_code
        except BrokenPipeError:
            # stdout closed early (`replayft jobs logs ID --follow | head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 141

    return run


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up waiting after this long (exit 1); default: wait as long as it takes",
    )


def _server_options() -> argparse.ArgumentParser:
    """--url and --api-key, accepted both before and after the subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("server")
    # SUPPRESS: an option given to `jobs` is not overwritten by the default of `jobs list`
    group.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"server URL (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    group.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        help=f"API key (default: ${KEY_ENV}; prefer the variable, arguments show in `ps`)",
    )
    return parent


def add_client_commands(sub: argparse._SubParsersAction) -> None:
    """Register `files` and `jobs` on the `replayft` parser."""
    server = _server_options()

    files = sub.add_parser("files", parents=[server], help="data files on a ReplayFT server")
    files_sub = files.add_subparsers(dest="files_command", required=True)
    p = files_sub.add_parser(
        "upload", parents=[server], help="upload a JSONL/.txt/Parquet file; prints the file object"
    )
    p.add_argument("path")
    p.add_argument("--purpose", required=True, choices=PURPOSES)
    p.add_argument(
        "--wait", action="store_true", help="wait until validated; exit 2 if the file has errors"
    )
    _timeout_option(p)
    p.set_defaults(func=_command(cmd_files_upload))

    jobs = sub.add_parser("jobs", parents=[server], help="fine-tuning jobs on a ReplayFT server")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    p = jobs_sub.add_parser(
        "submit",
        parents=[server],
        help="submit an engine YAML spec as a job (uploads its local data files)",
    )
    p.add_argument("spec", help="the YAML spec `replayft train` takes")
    p.add_argument("--suffix", default=None, help="added to the fine-tuned model's name")
    p.add_argument(
        "--wait", action="store_true", help="wait for the job; exit 1 unless it succeeds"
    )
    _timeout_option(p)
    p.set_defaults(func=_command(cmd_jobs_submit))

    p = jobs_sub.add_parser("list", parents=[server], help="newest jobs first, as a table")
    p.add_argument("--status", choices=JOB_STATUSES, default=None)
    p.add_argument("--limit", type=_positive_int, default=20)
    p.set_defaults(func=_command(cmd_jobs_list))

    p = jobs_sub.add_parser("show", parents=[server], help="one job as JSON")
    p.add_argument("job_id")
    p.set_defaults(func=_command(cmd_jobs_show))

    p = jobs_sub.add_parser("cancel", parents=[server], help="cancel a job")
    p.add_argument("job_id")
    p.set_defaults(func=_command(cmd_jobs_cancel))

    p = jobs_sub.add_parser("logs", parents=[server], help="a job's events, oldest first")
    p.add_argument("job_id")
    p.add_argument(
        "--follow",
        action="store_true",
        help="stream events and per-step metrics until the job ends (exit 1 if it fails or is "
        "cancelled)",
    )
    p.add_argument(
        "--poll",
        action="store_true",
        help="with --follow: poll instead of using the Server-Sent Events stream",
    )
    p.set_defaults(func=_command(cmd_jobs_logs))
