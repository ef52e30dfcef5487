"""From an engine spec to a created job or sweep: the one submit flow both `jobs submit` and
`sweeps submit` use.

`build_submission` maps the spec's fields onto the API's request (see the `client` package
docstring); `upload_data` uploads the local data files it names (joining several JSON Lines files
of one field into one upload) and waits until the server has validated them; `submit` posts the
request with a fresh Idempotency-Key (a repeat after a lost answer returns the same object) and
deletes the uploads again if the server rejects it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.http import Client, CLIError
from client.output import err

PURPOSES = ("fine-tune", "replay", "evals")


# How spec fields reach a request is control.fields' declared mapping; these say what to do
# about the ones a spec file can set but a request cannot.
UNSUPPORTED_HINTS = {
    "gguf_file": "register the model on the server (`replayft models add NAME PATH --gguf-file "
    "FILE`) and use NAME as `model`",
}


POLL_S = 1.0


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def expired(deadline: float | None) -> bool:
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
        if expired(deadline):
            raise CLIError(f"timed out waiting for the server to validate {pending}", 1)
        if not announced:
            err(f"waiting for the server to validate {pending} ...")
            announced = True
        time.sleep(POLL_S)


def file_failure(file: dict[str, Any]) -> str:
    details = file.get("status_details") or "no details given"
    return f"{file['id']} ({file.get('filename')}) failed validation: {details}"


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
    from control import fields

    errors: list[str] = []
    notes: list[str] = []
    set_elsewhere = set(fields.REQUEST_FIELDS) - set(UNSUPPORTED_HINTS)
    replay_fields = set(type(spec.replay).model_fields) - {
        "dataset",
        "validation_dataset",
    }  # file fields, uploaded

    body: dict[str, Any] = {"model": spec.model}
    hyperparameters: dict[str, Any] = {}
    for name in sorted(spec.model_fields_set):
        if name in set_elsewhere:
            continue
        if name in fields.HYPERPARAMETERS:
            value = getattr(spec, name)
            if hasattr(value, "model_dump"):  # lr_scheduler: only the keys the spec sets
                value = value.model_dump(exclude_unset=True)
                if not value:
                    continue
            hyperparameters[name] = value
        elif name in fields.SERVER_FIELDS:
            notes.append(f"{name}: chosen by the server ({fields.SERVER_FIELDS[name]}); ignored")
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
    replay = spec.replay
    replay_body = {k: getattr(replay, k) for k in sorted(replay_fields) if hasattr(replay, k)}
    replay_body = {k: v for k, v in replay_body.items() if v is not None}
    if replay.dataset:
        data.append(_data_field("replay.dataset", "replay", replay.dataset, errors))
    if replay.validation_dataset:
        # a validation file, so purpose fine-tune (as OpenAI's validation_file), of generic text
        data.append(
            _data_field("replay.validation_dataset", "fine-tune", replay.validation_dataset, errors)
        )
    if replay_body or replay.dataset or replay.validation_dataset:
        body["replay"] = replay_body
    if spec.evals:  # each eval's file is uploaded with purpose evals
        body["evals"] = [one.model_dump(exclude_unset=True) for one in spec.evals]
        for i, one in enumerate(spec.evals):
            data.append(_data_field(f"evals[{i}].file", "evals", [one.file], errors))
    for one in data:
        if one.param == "replay.dataset":
            continue  # the API takes a list there
        if len(one.local) + len(one.remote) > 1 and one.remote:
            errors.append(
                f"{one.param}: the API takes one file id per field; {len(one.remote)} of the "
                f"{len(one.local) + len(one.remote)} values are already uploaded files, which "
                f"cannot be joined with the others"
            )
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
                err(
                    f"note: {data.param}: the API takes one file per field; joined "
                    f"{len(locals_)} JSON Lines files into one upload ({joined.name})"
                )
                locals_ = [joined]
            for path in locals_:
                file = client.upload(path, data.purpose)
                uploaded.append(file["id"])
                err(f"uploaded {path} -> {file['id']} ({data.param})")
                pending.append((data, file))
        processed = wait_files(client, [file for _, file in pending], deadline)
        failures = [
            f"{data.param}: {file_failure(file)}"
            for (data, _), file in zip(pending, processed, strict=True)
            if file.get("status") == "error"
        ]
        if failures:
            raise CLIError("\n".join(failures), 2)
        for data, file in pending:
            data.ids.append(file["id"])
    except BaseException:
        delete_uploads(client, uploaded)
        raise
    for data in submission.data:
        data.ids.extend(data.remote)
    return uploaded


def delete_uploads(client: Client, ids: list[str]) -> None:
    removed = [i for i in ids if client.delete_quietly(f"/files/{i}")]
    if removed:
        err(f"removed the files uploaded for this job: {', '.join(removed)}")


def attach_ids(submission: Submission) -> dict[str, Any]:
    body = json.loads(json.dumps(submission.body))  # a deep copy of plain JSON
    for data in submission.data:
        if data.param == "replay.dataset":
            body["replay"]["dataset"] = data.ids[0] if len(data.ids) == 1 else data.ids
        elif data.param == "replay.validation_dataset":
            body["replay"]["validation_dataset"] = data.ids[0]
        elif data.param.startswith("evals["):
            index = int(data.param[len("evals[") : data.param.index("]")])
            body["evals"][index]["file"] = data.ids[0]
        else:
            body[data.param] = data.ids[0]
    return body


def submit(
    client: Client,
    submission: Submission,
    path: str,
    tmp_dir: Path,
    deadline: float | None,
    shape: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: body,
) -> dict[str, Any]:
    """Upload the submission's local data and wait for the server to validate it, then POST the
    request (`shape` may adapt the body, as sweeps do) to `path`; -> the created object.

    A fresh Idempotency-Key makes a repeat after a lost answer return the same object, not a
    second one. A rejected request (exit status 2) deletes the uploads: nothing refers to them."""
    uploaded = upload_data(client, submission, tmp_dir, deadline)
    body = shape(attach_ids(submission))
    try:
        return client.request(
            "POST",
            path,
            json=body,
            headers={"Idempotency-Key": f"replayft-cli-{uuid.uuid4()}"},
            retry=True,
        )
    except CLIError as exc:
        if exc.exit_code == 2:
            delete_uploads(client, uploaded)
        raise
